//! The one message a publish sends over Redis (`PUBLISH {cluster}:app:{app_id} <message>`): the
//! origin process's instance id (random per process, then the node id), the channel, the
//! excluded socket id, whether a cache channel keeps it, and the frame exactly as the origin
//! serialized it. Binary, so the frame is copied, not escaped:
//!
//! ```text
//! b'H' 1 | flags u8 | origin: u8 length + bytes | channel: u16 length (big endian) + bytes
//!        | except: u8 length + bytes (absent unless flags & EXCEPT)
//!        | sequence: u64 big endian (absent unless flags & ECHO) | frame: the rest
//! ```
//!
//! With `ECHO`, the origin did not deliver the publish locally: it delivers it when the message
//! comes back from Redis (in Redis's order, so sequential REST publishes through different nodes
//! keep their order everywhere), unless its sequence number (per origin process) was given up on
//! and delivered locally meanwhile (`cluster/order.rs`). Other nodes ignore the flag.
//!
//! The second byte is the message's kind. Kind 2 is a REST `terminate_connections`: every node
//! closes the user's signed-in sockets of the app (the origin closed its own already):
//!
//! ```text
//! b'H' 2 | origin: u8 length + bytes | user id: the rest (UTF-8)
//! ```
//!
//! Kind 5 is a signed-in user coming online or going offline cluster-wide: it is published by
//! the Redis scripts that decide it ([`super::users`]), so every node, the deciding one
//! included, hears it once and in Redis's order, and tells its local watchers:
//!
//! ```text
//! b'H' 5 | online: u8 (1 online, 0 offline) | user id: the rest (UTF-8)
//! ```
//!
//! Kind 6 is a Mercure update: it is published by the script that appends it to the app's
//! Mercure history stream ([`super::mercure`]), so every node, the origin included, hears it
//! once and in the stream's order, and delivers it to its Mercure subscribers. `entry` is the
//! stream entry id (`<ms>-<seq>`; empty for an update that is not kept: a subscription event),
//! and the update is as the origin formatted it:
//!
//! ```text
//! b'H' 6 | entry: u8 length + ASCII | update flags u8 (1: private)
//!        | topics: u16 count, then each a u16 length + bytes | id: u16 length + bytes
//!        | SSE event: the rest
//! ```
//!
//! A publish flagged `UNBRIDGED` (8) is the Pusher side of a Mercure update (its Mercure
//! subscribers got the update as kind 6): nodes deliver it to their Pusher subscribers only.
//! A publish flagged `IN_HISTORY` (16, set by the Mercure bridge script when it appended the
//! event to the app's Mercure history) reaches the Mercure subscribers as the kind-6 message
//! that follows it (one id everywhere), so nodes do not bridge it themselves; an unflagged one
//! (no subscriber anywhere at the time, or the append failed) each node bridges on its own.

use bytes::Bytes;

use crate::protocol::SocketId;

const MAGIC: u8 = b'H';
const VERSION: u8 = 1;
const TERMINATE: u8 = 2;
/// The kind byte of a user status message (built by the Lua scripts of [`super::users`]).
pub const USER_STATUS: u8 = 5;
/// The kind byte of a Mercure update (built by the Lua script of [`super::mercure`]).
pub const MERCURE_UPDATE: u8 = 6;
const EXCEPT: u8 = 1;
const KEEP: u8 = 2;
const ECHO: u8 = 4;
const UNBRIDGED: u8 = 8;
/// Set by the bridge script ([`super::mercure::BRIDGE_SCRIPT`]) only.
const IN_HISTORY: u8 = 16;
const PRIVATE: u8 = 1;
/// An update body's flag: a bridged Pusher event (built by the bridge script).
const BRIDGED: u8 = 2;

/// A decoded bus message, borrowing from the received bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The node that published it (it delivered it locally already and ignores its own).
    pub origin: &'a str,
    /// The Pusher channel.
    pub channel: &'a str,
    /// The socket that must not receive it (`socket_id` on a REST publish, the sender of a
    /// client event); socket ids are unique cluster-wide.
    pub except: Option<SocketId>,
    /// A REST publish: a cache channel keeps it as its last event.
    pub keep: bool,
    /// The origin's sequence number when the origin delivers its own copy on the echo (see the
    /// module doc); `None` when the origin delivered it locally already.
    pub echo: Option<u64>,
    /// The Pusher side of a Mercure update: not handed to the Mercure bridge.
    pub unbridged: bool,
    /// Appended to the app's Mercure history by the bridge script, which publishes it as a
    /// kind-6 message too: not handed to this node's Mercure bridge.
    pub in_history: bool,
    /// The serialized frame.
    pub frame: &'a [u8],
}

/// Encodes a message (one allocation, the frame copied once).
pub fn encode(
    origin: &str,
    channel: &str,
    except: Option<SocketId>,
    keep: bool,
    frame: &[u8],
) -> Bytes {
    encode_echo(origin, channel, except, keep, None, frame)
}

/// [`encode`] for the Pusher side of a Mercure update (flagged `UNBRIDGED`).
pub fn encode_unbridged(origin: &str, channel: &str, frame: &[u8]) -> Bytes {
    let mut out = Vec::from(encode(origin, channel, None, false, frame));
    out[2] |= UNBRIDGED;
    Bytes::from(out)
}

/// [`encode`] with the origin's sequence number `echo`, when the origin delivers its own copy on
/// the echo.
pub fn encode_echo(
    origin: &str,
    channel: &str,
    except: Option<SocketId>,
    keep: bool,
    echo: Option<u64>,
    frame: &[u8],
) -> Bytes {
    let except = except.map(|id| id.to_string());
    let mut out = Vec::with_capacity(
        14 + origin.len() + channel.len() + except.as_ref().map_or(0, String::len) + frame.len(),
    );
    let flags = if except.is_some() { EXCEPT } else { 0 }
        | if keep { KEEP } else { 0 }
        | if echo.is_some() { ECHO } else { 0 };
    out.extend_from_slice(&[MAGIC, VERSION, flags]);
    // Node ids are at most 64 bytes (config), channel names at most 200.
    out.push(u8::try_from(origin.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&origin.as_bytes()[..origin.len().min(255)]);
    let channel_len = u16::try_from(channel.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&channel_len.to_be_bytes());
    out.extend_from_slice(&channel.as_bytes()[..usize::from(channel_len)]);
    if let Some(except) = &except {
        // "\d+.\d+" of two u64: at most 41 bytes.
        out.push(u8::try_from(except.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(except.as_bytes());
    }
    if let Some(sequence) = echo {
        out.extend_from_slice(&sequence.to_be_bytes());
    }
    out.extend_from_slice(frame);
    Bytes::from(out)
}

/// Decodes a message; `None` for anything that is not one (another version, garbage).
pub fn decode(bytes: &[u8]) -> Option<Message<'_>> {
    let (&[MAGIC, VERSION, flags], rest) = bytes.split_first_chunk::<3>()? else {
        return None;
    };
    let (&origin_len, rest) = rest.split_first()?;
    let (origin, rest) = rest.split_at_checked(usize::from(origin_len))?;
    let (channel_len, rest) = rest.split_first_chunk::<2>()?;
    let (channel, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*channel_len)))?;
    let (except, frame) = if flags & EXCEPT != 0 {
        let (&except_len, rest) = rest.split_first()?;
        let (except, rest) = rest.split_at_checked(usize::from(except_len))?;
        (Some(std::str::from_utf8(except).ok()?.parse().ok()?), rest)
    } else {
        (None, rest)
    };
    let (echo, frame) = if flags & ECHO != 0 {
        let (sequence, rest) = frame.split_first_chunk::<8>()?;
        (Some(u64::from_be_bytes(*sequence)), rest)
    } else {
        (None, frame)
    };
    Some(Message {
        origin: std::str::from_utf8(origin).ok()?,
        channel: std::str::from_utf8(channel).ok()?,
        except,
        keep: flags & KEEP != 0,
        echo,
        unbridged: flags & UNBRIDGED != 0,
        in_history: flags & IN_HISTORY != 0,
        frame,
    })
}

/// A decoded `terminate_connections` message, borrowing from the received bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Terminate<'a> {
    /// The node that published it (it closed its own sockets of the user already).
    pub origin: &'a str,
    /// The user whose signed-in sockets are closed.
    pub user_id: &'a str,
}

/// Encodes a `terminate_connections` message.
pub fn encode_terminate(origin: &str, user_id: &str) -> Bytes {
    let origin = &origin.as_bytes()[..origin.len().min(255)];
    let mut out = Vec::with_capacity(3 + origin.len() + user_id.len());
    out.extend_from_slice(&[MAGIC, TERMINATE]);
    out.push(u8::try_from(origin.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(origin);
    out.extend_from_slice(user_id.as_bytes());
    Bytes::from(out)
}

/// Decodes a `terminate_connections` message; `None` for anything that is not one (a publish,
/// garbage).
pub fn decode_terminate(bytes: &[u8]) -> Option<Terminate<'_>> {
    let (&[MAGIC, TERMINATE], rest) = bytes.split_first_chunk::<2>()? else {
        return None;
    };
    let (&origin_len, rest) = rest.split_first()?;
    let (origin, user_id) = rest.split_at_checked(usize::from(origin_len))?;
    let user_id = std::str::from_utf8(user_id).ok()?;
    if user_id.is_empty() {
        return None;
    }
    Some(Terminate {
        origin: std::str::from_utf8(origin).ok()?,
        user_id,
    })
}

/// A decoded user status message, borrowing from the received bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct UserStatus<'a> {
    /// The user whose status changed cluster-wide.
    pub user_id: &'a str,
    /// Online (its first signed-in socket cluster-wide) or offline (its last one gone).
    pub online: bool,
}

/// Encodes a user status message (the Lua scripts build the same bytes; this is for tests and
/// documentation of the format).
pub fn encode_user_status(user_id: &str, online: bool) -> Bytes {
    let mut out = Vec::with_capacity(3 + user_id.len());
    out.extend_from_slice(&[MAGIC, USER_STATUS, u8::from(online)]);
    out.extend_from_slice(user_id.as_bytes());
    Bytes::from(out)
}

/// Decodes a user status message; `None` for anything that is not one.
pub fn decode_user_status(bytes: &[u8]) -> Option<UserStatus<'_>> {
    let (&[MAGIC, USER_STATUS, online], user_id) = bytes.split_first_chunk::<3>()? else {
        return None;
    };
    let online = match online {
        0 => false,
        1 => true,
        _ => return None,
    };
    let user_id = std::str::from_utf8(user_id).ok()?;
    if user_id.is_empty() {
        return None;
    }
    Some(UserStatus { user_id, online })
}

/// A Mercure update as it crosses Redis (kind 6), borrowing from the received bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct MercureUpdate<'a> {
    /// Its history stream entry id (`None`: not kept, a subscription event).
    pub entry: Option<&'a str>,
    /// Whether only subscribers allowed to read one of its topics get it.
    pub private: bool,
    /// Its topics, the canonical one first.
    pub topics: Vec<&'a str>,
    /// Its id.
    pub id: &'a str,
    /// The SSE event, as the origin formatted it.
    pub event: &'a [u8],
}

/// Encodes a Mercure update's body (what follows the kind and entry id; also what the history
/// stream stores). Topics and ids longer than 65,535 bytes are cut (the forms refuse them long
/// before).
pub fn encode_mercure_body(private: bool, topics: &[String], id: &str, event: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(
        5 + id.len() + event.len() + topics.iter().map(|t| t.len() + 2).sum::<usize>(),
    );
    out.push(if private { PRIVATE } else { 0 });
    let count = u16::try_from(topics.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    let put = |out: &mut Vec<u8>, text: &str| {
        let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&text.as_bytes()[..usize::from(len)]);
    };
    for topic in topics.iter().take(usize::from(count)) {
        put(&mut out, topic);
    }
    put(&mut out, id);
    out.extend_from_slice(event);
    Bytes::from(out)
}

/// Encodes a whole kind-6 message (the script builds the same bytes; for tests and for the
/// updates that are not kept).
pub fn encode_mercure(entry: &str, body: &[u8]) -> Bytes {
    let entry = &entry.as_bytes()[..entry.len().min(255)];
    let mut out = Vec::with_capacity(3 + entry.len() + body.len());
    out.extend_from_slice(&[MAGIC, MERCURE_UPDATE]);
    out.push(u8::try_from(entry.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(entry);
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Decodes a kind-6 message into its entry id (`None`: not kept) and its body (an update,
/// [`decode_mercure_body`], or a bridged Pusher event, [`decode_bridged_body`]); `None` for
/// anything that is not one.
pub fn decode_mercure(bytes: &[u8]) -> Option<(Option<&str>, &[u8])> {
    let (&[MAGIC, MERCURE_UPDATE], rest) = bytes.split_first_chunk::<2>()? else {
        return None;
    };
    let (&entry_len, rest) = rest.split_first()?;
    let (entry, body) = rest.split_at_checked(usize::from(entry_len))?;
    let entry = std::str::from_utf8(entry).ok()?;
    Some(((!entry.is_empty()).then_some(entry), body))
}

/// A bridged Pusher event's body (flags 2, the channel as a u16 length + bytes, the frame as
/// the origin serialized it), as the bridge script builds it.
pub fn encode_bridged_body(channel: &str, frame: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(3 + channel.len() + frame.len());
    out.push(BRIDGED);
    let len = u16::try_from(channel.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&channel.as_bytes()[..usize::from(len)]);
    out.extend_from_slice(frame);
    Bytes::from(out)
}

/// A bridged Pusher event's channel and frame; `None` for anything else.
pub fn decode_bridged_body(body: &[u8]) -> Option<(&str, &[u8])> {
    let (&BRIDGED, rest) = body.split_first()? else {
        return None;
    };
    take_str(rest)
}

/// A u16-length-prefixed UTF-8 string, and what follows it.
fn take_str(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, tail) = bytes.split_first_chunk::<2>()?;
    let (text, tail) = tail.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
    Some((std::str::from_utf8(text).ok()?, tail))
}

/// Decodes an update's body as [`encode_mercure_body`] wrote it (its entry id unknown).
pub fn decode_mercure_body(body: &[u8]) -> Option<MercureUpdate<'_>> {
    let (&flags, rest) = body.split_first()?;
    if flags & !PRIVATE != 0 {
        return None;
    }
    let (count, mut rest) = rest.split_first_chunk::<2>()?;
    let count = u16::from_be_bytes(*count);
    let mut topics = Vec::with_capacity(usize::from(count).min(64));
    for _ in 0..count {
        let (topic, tail) = take_str(rest)?;
        topics.push(topic);
        rest = tail;
    }
    let (id, rest) = take_str(rest)?;
    Some(MercureUpdate {
        entry: None,
        private: flags & PRIVATE != 0,
        topics,
        id,
        event: rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_and_without_an_excluded_socket() {
        let frame = br#"{"event":"e","channel":"c","data":"{}"}"#;
        let except = SocketId::new(12, 345);
        let bytes = encode("node-a", "cache-c", Some(except), true, frame);
        assert_eq!(
            decode(&bytes),
            Some(Message {
                origin: "node-a",
                channel: "cache-c",
                except: Some(except),
                keep: true,
                echo: None,
                unbridged: false,
                in_history: false,
                frame,
            })
        );
        let bytes = encode("b", "c", None, false, frame);
        let message = decode(&bytes).expect("decodes");
        assert_eq!((message.except, message.keep), (None, false));
        assert_eq!(message.frame, frame);
    }

    #[test]
    fn echoed_messages_carry_their_sequence_number_and_plain_ones_decode_as_before() {
        let frame = br#"{"event":"e","channel":"c","data":"{}"}"#;
        let except = SocketId::new(7, 8);
        for except in [None, Some(except)] {
            let bytes = encode_echo("node-a", "c", except, true, Some(u64::MAX - 1), frame);
            let message = decode(&bytes).expect("decodes");
            assert_eq!(message.echo, Some(u64::MAX - 1));
            assert_eq!((message.except, message.keep), (except, true));
            assert_eq!(message.frame, frame);
        }
        // A message without the flag (as every node sent before) has no sequence number.
        let plain = encode("node-a", "c", None, false, frame);
        assert_eq!(decode(&plain).expect("decodes").echo, None);
        // Truncated inside the sequence number: refused.
        let bytes = encode_echo("n", "c", None, false, Some(1), b"");
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        assert!(decode(&bytes).is_some());
    }

    #[test]
    fn garbage_and_truncated_messages_are_refused() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"hello world"), None);
        let bytes = encode("node-a", "channel", Some(SocketId::new(1, 2)), false, b"{}");
        for cut in 0..bytes.len() - 2 {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn terminate_messages_round_trip_and_are_told_apart_from_publishes() {
        let bytes = encode_terminate("node-a", "user-1");
        assert_eq!(
            decode_terminate(&bytes),
            Some(Terminate {
                origin: "node-a",
                user_id: "user-1",
            })
        );
        assert_eq!(decode(&bytes), None, "not a publish");
        let publish = encode("node-a", "c", None, false, b"{}");
        assert_eq!(decode_terminate(&publish), None, "not a terminate");
        assert!(decode(&publish).is_some(), "publishes decode as before");
    }

    #[test]
    fn malformed_terminate_messages_are_refused() {
        let bytes = encode_terminate("node-a", "u");
        for cut in 0..bytes.len() {
            assert_eq!(decode_terminate(&bytes[..cut]), None, "cut at {cut}");
        }
        // An origin longer than the rest, a user id that is not UTF-8, another magic byte.
        assert_eq!(decode_terminate(b"H\x02\x09abc"), None);
        assert_eq!(decode_terminate(b"H\x02\x01a\xff\xfe"), None);
        assert_eq!(decode_terminate(b"X\x02\x01au"), None);
    }

    #[test]
    fn user_status_messages_round_trip_and_are_told_apart() {
        for online in [true, false] {
            let bytes = encode_user_status("u-1", online);
            assert_eq!(
                decode_user_status(&bytes),
                Some(UserStatus {
                    user_id: "u-1",
                    online
                })
            );
            assert_eq!(decode(&bytes), None, "not a publish");
            assert_eq!(decode_terminate(&bytes), None, "not a terminate");
        }
        assert_eq!(decode_user_status(&encode_terminate("a", "u")), None);
        assert_eq!(decode_user_status(b"H\x05\x01"), None, "no user id");
        assert_eq!(decode_user_status(b"H\x05\x02u"), None, "another flag");
        assert_eq!(decode_user_status(b"H\x05\x01\xff"), None, "not UTF-8");
    }

    #[test]
    fn mercure_updates_round_trip_and_are_told_apart() {
        let topics = vec!["https://example.com/books/1".to_owned(), "b".to_owned()];
        let body = encode_mercure_body(true, &topics, "urn:uuid:1", b"id: x\ndata: y\n\n");
        let bytes = encode_mercure("1700000000000-3", &body);
        let (entry, got) = decode_mercure(&bytes).expect("decodes");
        assert_eq!(entry, Some("1700000000000-3"));
        let update = decode_mercure_body(got).expect("an update");
        assert!(update.private);
        assert_eq!(update.topics, vec!["https://example.com/books/1", "b"]);
        assert_eq!(update.id, "urn:uuid:1");
        assert_eq!(update.event, b"id: x\ndata: y\n\n");
        assert_eq!(decode(&bytes), None, "not a publish");
        assert_eq!(decode_user_status(&bytes), None);
        assert_eq!(decode_terminate(&bytes), None);
        // Not kept: no entry id.
        let bytes = encode_mercure("", &encode_mercure_body(false, &topics, "i", b""));
        let (entry, got) = decode_mercure(&bytes).expect("decodes");
        assert_eq!(
            (entry, decode_mercure_body(got).unwrap().private),
            (None, false)
        );
        // Truncated anywhere before the event: refused.
        let body = encode_mercure_body(false, &topics, "id", b"");
        for cut in 0..body.len() {
            assert_eq!(decode_mercure_body(&body[..cut]), None, "cut at {cut}");
        }
        assert_eq!(
            decode_mercure(b"H\x06\x09ab"),
            None,
            "an entry longer than the rest"
        );
        assert_eq!(
            decode_mercure_body(b"\x04\x00\x00\x00\x00"),
            None,
            "bad flags"
        );
        // A bridged Pusher event's body is told apart.
        let bridged = encode_bridged_body("orders", b"{}");
        assert_eq!(decode_bridged_body(&bridged), Some(("orders", &b"{}"[..])));
        assert_eq!(decode_mercure_body(&bridged), None);
        assert_eq!(decode_bridged_body(&body), None);
    }

    #[test]
    fn unbridged_publishes_carry_their_flag() {
        let bytes = encode_unbridged("node-a", "orders", b"{}");
        let message = decode(&bytes).expect("decodes");
        assert!(message.unbridged);
        assert_eq!((message.channel, message.frame), ("orders", &b"{}"[..]));
        assert!(
            !decode(&encode("a", "c", None, false, b"{}"))
                .unwrap()
                .unbridged
        );
    }
}
