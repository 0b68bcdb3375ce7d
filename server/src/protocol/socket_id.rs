//! `SocketId`: two unsigned integers joined by a dot, the only form every SDK accepts.

use std::fmt;
use std::str::FromStr;

/// A connection's id, `\d+\.\d+` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    high: u64,
    low: u64,
}

impl SocketId {
    /// Builds a socket id from its two halves.
    pub fn new(high: u64, low: u64) -> Self {
        SocketId { high, low }
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.high, self.low)
    }
}

/// The text was not of the form `\d+\.\d+`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid socket id")]
pub struct InvalidSocketId;

impl FromStr for SocketId {
    type Err = InvalidSocketId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (high, low) = s.split_once('.').ok_or(InvalidSocketId)?;
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(high) || !digits(low) {
            return Err(InvalidSocketId);
        }
        Ok(SocketId {
            high: high.parse().map_err(|_| InvalidSocketId)?,
            low: low.parse().map_err(|_| InvalidSocketId)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_ids_round_trip_and_reject_other_shapes() {
        let id: SocketId = "264774.13368624".parse().unwrap();
        assert_eq!(id.to_string(), "264774.13368624");
        for bad in ["", "1", "1.", ".1", "1.2.3", "a.1", "-1.2", "1 .2", "+1.2"] {
            assert!(bad.parse::<SocketId>().is_err(), "{bad:?} must be refused");
        }
    }
}
