//! `ChannelName`: a validated channel name and the kind its prefix gives it.

use std::fmt;

/// The prefix of the internal channel that carries server-to-user messages.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// What a channel's prefix makes of it, in pusher-js's order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// No special prefix (including `cache-`).
    Public,
    /// `private-` (including `private-cache-`).
    Private,
    /// `private-encrypted-` (including `private-encrypted-cache-`).
    Encrypted,
    /// `presence-` (including `presence-cache-`).
    Presence,
    /// `#server-to-user-{id}`.
    ServerToUser,
}

/// A channel name that passed validation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelName {
    name: Box<str>,
    kind: ChannelKind,
    cache: bool,
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    /// Empty name.
    #[error("Channel name must not be empty")]
    Empty,
    /// Longer than the allowed length.
    #[error("Channel name is too long (at most {max} characters)")]
    TooLong {
        /// The limit that applied.
        max: usize,
    },
    /// A character outside `A-Za-z0-9_-=@,.;`.
    #[error("Invalid channel name: only A-Z, a-z, 0-9 and _-=@,.; are allowed")]
    BadCharacter,
}

fn allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

impl ChannelName {
    /// Validates `name` against the character set and `max_len` (in characters; all allowed
    /// characters are ASCII, so bytes and characters agree).
    pub fn parse(name: &str, max_len: usize) -> Result<ChannelName, ChannelNameError> {
        if name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        if name.len() > max_len {
            return Err(ChannelNameError::TooLong { max: max_len });
        }
        let (body, kind) = match name.strip_prefix(SERVER_TO_USER_PREFIX) {
            Some(user) => (user, ChannelKind::ServerToUser),
            None => (name, Self::kind_of(name)),
        };
        if body.is_empty() || !body.bytes().all(allowed) {
            return Err(ChannelNameError::BadCharacter);
        }
        let cache = match kind {
            ChannelKind::Public => name.starts_with("cache-"),
            ChannelKind::Private => name.starts_with("private-cache-"),
            ChannelKind::Encrypted => name.starts_with("private-encrypted-cache-"),
            ChannelKind::Presence => name.starts_with("presence-cache-"),
            ChannelKind::ServerToUser => false,
        };
        Ok(ChannelName {
            name: name.into(),
            kind,
            cache,
        })
    }

    fn kind_of(name: &str) -> ChannelKind {
        if name.starts_with("private-encrypted-") {
            ChannelKind::Encrypted
        } else if name.starts_with("private-") {
            ChannelKind::Private
        } else if name.starts_with("presence-") {
            ChannelKind::Presence
        } else {
            ChannelKind::Public
        }
    }

    /// The name as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The channel's kind.
    pub fn kind(&self) -> ChannelKind {
        self.kind
    }

    /// Whether this is one of the four cache-channel variants.
    pub fn is_cache(&self) -> bool {
        self.cache
    }

    /// Whether subscribing needs a signature (private, encrypted and presence channels).
    pub fn needs_auth(&self) -> bool {
        matches!(
            self.kind,
            ChannelKind::Private | ChannelKind::Encrypted | ChannelKind::Presence
        )
    }

    /// The user id of a `#server-to-user-{id}` channel.
    pub fn server_to_user_id(&self) -> Option<&str> {
        match self.kind {
            ChannelKind::ServerToUser => self.name.strip_prefix(SERVER_TO_USER_PREFIX),
            _ => None,
        }
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> (ChannelKind, bool) {
        let c = ChannelName::parse(name, 200).unwrap();
        (c.kind(), c.is_cache())
    }

    #[test]
    fn prefixes_classify_in_pusher_js_order() {
        assert_eq!(kind("my-channel"), (ChannelKind::Public, false));
        assert_eq!(kind("cache-x"), (ChannelKind::Public, true));
        assert_eq!(kind("private-x"), (ChannelKind::Private, false));
        assert_eq!(kind("private-cache-x"), (ChannelKind::Private, true));
        assert_eq!(kind("private-encrypted-x"), (ChannelKind::Encrypted, false));
        assert_eq!(
            kind("private-encrypted-cache-x"),
            (ChannelKind::Encrypted, true)
        );
        assert_eq!(kind("presence-x"), (ChannelKind::Presence, false));
        assert_eq!(kind("presence-cache-x"), (ChannelKind::Presence, true));
        assert_eq!(
            kind("#server-to-user-42"),
            (ChannelKind::ServerToUser, false)
        );
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(ChannelName::parse("", 200), Err(ChannelNameError::Empty));
        assert_eq!(
            ChannelName::parse("a b", 200),
            Err(ChannelNameError::BadCharacter)
        );
        assert_eq!(
            ChannelName::parse("#other", 200),
            Err(ChannelNameError::BadCharacter)
        );
        assert_eq!(
            ChannelName::parse("#server-to-user-", 200),
            Err(ChannelNameError::BadCharacter)
        );
        assert_eq!(
            ChannelName::parse("é", 200),
            Err(ChannelNameError::BadCharacter)
        );
        let long = "a".repeat(201);
        assert_eq!(
            ChannelName::parse(&long, 200),
            Err(ChannelNameError::TooLong { max: 200 })
        );
        assert!(ChannelName::parse(&"a".repeat(200), 200).is_ok());
        assert!(ChannelName::parse("Az09_-=@,.;", 200).is_ok());
    }
}
