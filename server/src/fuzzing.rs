//! Entry points for the fuzz targets (`fuzz/`), each forwarding to an internal function with no
//! behaviour of its own. Not an API: anything here may change with the code it forwards to.

use bytes::{Bytes, BytesMut};

use crate::transport::{session, xhr};

/// A presence `channel_data` as a subscribe reads it: `(user_id, user_info JSON)`, or the
/// refusal's message (the app's size limit on `user_info` is left out: it needs an app).
pub fn presence_member(channel_data: &str) -> Result<(String, Option<String>), String> {
    session::presence_member_of(channel_data).map(|member| {
        (
            member.user_id,
            member.user_info.map(|info| info.get().to_owned()),
        )
    })
}

/// A fallback path as the router reads it: the session's name (`key/server/session`) and the
/// operation (`xhr_streaming`, `xhr` or `xhr_send`).
pub fn xhr_route(path: &str) -> Option<(String, &'static str)> {
    xhr::route_of(path)
}

/// The messages of an `xhr_send` body, before the limits on their number and sizes.
pub fn xhr_send_body(body: &[u8]) -> Option<Vec<String>> {
    xhr::send_body(body)
}

/// One `a[...]` line of frames, as a stream or a poll writes it.
pub fn xhr_push_batch(frames: &[Bytes]) -> Vec<u8> {
    let mut line = BytesMut::new();
    xhr::push_batch(&mut line, frames);
    line.to_vec()
}

/// The UTF-16 code units a frame takes in an `a[...]` line, as a poll counts it.
pub fn xhr_escaped_units(frame: &[u8]) -> usize {
    xhr::escaped_units(frame)
}

/// The length of UTF-8 text in UTF-16 code units, as a poll counts what it wrote.
pub fn xhr_utf16_units(text: &[u8]) -> usize {
    xhr::utf16_units(text)
}

/// A `c[code,"reason"]` line.
pub fn xhr_close_line(code: u16, reason: &str) -> Bytes {
    xhr::close_line(code, reason)
}
