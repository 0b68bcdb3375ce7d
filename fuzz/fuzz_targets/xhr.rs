//! The HTTP fallback framing (`transport::xhr`, through `herald::fuzzing`): the session path,
//! the `xhr_send` body, and the `a[...]` and `c[...]` lines written back.
//!
//! Input: `path \n body`. Invariants: an accepted path ends in `app/{key}/{server}/{session}/
//! {op}` with the ids the router allows; each `xhr_send` message goes through the client-frame
//! decoder; an `a[...]` line is a JSON array of the frames (read back equal) whose UTF-16
//! length is what a poll counts for it (`escaped_units`); a close line is a JSON array of the
//! code and the reason.
#![no_main]

use bytes::Bytes;
use herald::fuzzing::{
    xhr_close_line, xhr_escaped_units, xhr_push_batch, xhr_route, xhr_send_body, xhr_utf16_units,
};
use herald::protocol::ClientFrame;
use libfuzzer_sys::fuzz_target;

fn id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Writes `frames` as one `a[...]` line and checks it.
fn check_batch(frames: &[String]) {
    let bytes: Vec<Bytes> = frames.iter().map(|f| Bytes::from(f.clone())).collect();
    let line = xhr_push_batch(&bytes);
    assert!(line.starts_with(b"a[") && line.ends_with(b"]\n"));
    let back: Vec<String> = serde_json::from_slice(&line[1..line.len() - 1])
        .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&line)));
    assert_eq!(back, frames);
    // `a[`, `]\n`, the frames and the commas between them.
    let counted = 4
        + frames
            .iter()
            .map(|f| xhr_escaped_units(f.as_bytes()))
            .sum::<usize>()
        + frames.len().saturating_sub(1);
    let written = String::from_utf8(line.clone())
        .unwrap()
        .encode_utf16()
        .count();
    assert_eq!(counted, written);
    assert_eq!(xhr_utf16_units(&line), written);
}

fuzz_target!(|data: &[u8]| {
    let (path, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };

    if let Ok(path) = std::str::from_utf8(path) {
        if let Some((name, op)) = xhr_route(path) {
            let tail = format!("app/{name}/{op}");
            assert!(
                path == tail || path.ends_with(&format!("/{tail}")),
                "{path}"
            );
            let parts: Vec<&str> = name.split('/').collect();
            assert_eq!(parts.len(), 3, "{name}");
            assert!(!parts[0].is_empty() && parts[0].len() <= 128);
            assert!(id(parts[1]) && id(parts[2]));
        }
    }

    match xhr_send_body(body) {
        Some(messages) => {
            for message in &messages {
                let _ = ClientFrame::decode(message);
            }
            check_batch(&messages);
        }
        None => {
            if let Ok(text) = std::str::from_utf8(body) {
                check_batch(&[text.to_owned()]);
                let code = body.first().map_or(4200, |&b| 3000 + u16::from(b) * 7);
                let line = xhr_close_line(code, text);
                assert!(line.starts_with(b"c[") && line.ends_with(b"]\n"));
                let (read_code, reason): (u16, String) =
                    serde_json::from_slice(&line[1..line.len() - 1]).unwrap();
                assert_eq!((read_code, reason.as_str()), (code, text));
            }
        }
    }
});
