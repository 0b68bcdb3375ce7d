//! Channel names (`ChannelName::parse`).
//!
//! Input: byte 0 picks the length limit, the rest is the name. Invariants: a name is accepted
//! exactly when it is non-empty, within the limit and made of the allowed characters (after the
//! `#server-to-user-` prefix, with a non-empty user id); an accepted name is kept as sent,
//! parses again to the same value, and its kind and cache flag follow its prefix.
#![no_main]

use herald::protocol::{ChannelKind, ChannelName, ChannelNameError, SERVER_TO_USER_PREFIX};
use libfuzzer_sys::fuzz_target;

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-=@,.;".contains(c)
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, name)) = data.split_first() else {
        return;
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    let max = if limit == 255 {
        usize::MAX
    } else {
        usize::from(limit)
    };
    let body = name.strip_prefix(SERVER_TO_USER_PREFIX).unwrap_or(name);
    let expected = if name.is_empty() {
        Err(ChannelNameError::Empty)
    } else if name.len() > max {
        Err(ChannelNameError::TooLong { max })
    } else if body.is_empty() || !body.chars().all(allowed) {
        Err(ChannelNameError::BadCharacter)
    } else {
        Ok(())
    };
    let parsed = ChannelName::parse(name, max);
    assert_eq!(parsed.as_ref().map(|_| ()).map_err(Clone::clone), expected);
    let Ok(channel) = parsed else {
        return;
    };
    assert_eq!(channel.as_str(), name);
    assert_eq!(channel.to_string(), name);
    assert_eq!(
        ChannelName::parse(channel.as_str(), max).as_ref(),
        Ok(&channel)
    );

    let kind = if name.starts_with(SERVER_TO_USER_PREFIX) {
        ChannelKind::ServerToUser
    } else if name.starts_with("private-encrypted-") {
        ChannelKind::Encrypted
    } else if name.starts_with("private-") {
        ChannelKind::Private
    } else if name.starts_with("presence-") {
        ChannelKind::Presence
    } else {
        ChannelKind::Public
    };
    assert_eq!(channel.kind(), kind);
    assert_eq!(
        channel.needs_auth(),
        matches!(
            kind,
            ChannelKind::Private | ChannelKind::Encrypted | ChannelKind::Presence
        )
    );
    let cache = [
        "cache-",
        "private-cache-",
        "private-encrypted-cache-",
        "presence-cache-",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix));
    assert_eq!(channel.is_cache(), cache);
    assert_eq!(
        channel.server_to_user_id(),
        name.strip_prefix(SERVER_TO_USER_PREFIX)
    );
});
