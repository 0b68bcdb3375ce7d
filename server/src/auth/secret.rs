//! `Secret`: a string that never prints. App secrets, previous secrets and passwords from the
//! environment are held in one, so a `{:?}` in a log line cannot leak them.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// A secret that never prints: its `Debug` is redacted (and it has no `Display`). It serializes in full,
/// because the CLI's `--json` output is how an operator learns it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for signing and for deliberate display.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_and_json_is_whole() {
        let secret = Secret::new("s3cr3t".into());
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"s3cr3t\"");
        assert_eq!(secret.expose(), "s3cr3t");
    }
}
