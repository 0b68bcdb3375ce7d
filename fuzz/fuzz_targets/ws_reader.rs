//! The WebSocket frame reader (`protocol::ws`): client frame headers, unmasking, and the
//! reassembly of fragmented messages from bytes arriving in pieces.
//!
//! Input: byte 0 picks the message limit, byte 1 the size of the pieces the rest arrives in.
//! Invariants: the messages and the error do not depend on how the bytes are split; every
//! message is within the limit; a parsed header re-encodes to the bytes it was read from;
//! unmasking matches a byte-by-byte XOR and undoes itself; server headers agree with their
//! announced length.
#![no_main]

use herald::protocol::ws::{
    close_payload, parse_client_header, server_header, server_header_len, unmask, Message, Reader,
    WsError, MAX_SERVER_HEADER,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>),
}

impl Owned {
    fn of(message: Message<'_>) -> Owned {
        match message {
            Message::Text(text) => Owned::Text(text.to_owned()),
            Message::Binary => Owned::Binary,
            Message::Ping(payload) => Owned::Ping(payload.to_vec()),
            Message::Pong => Owned::Pong,
            Message::Close(code) => Owned::Close(code),
        }
    }
}

/// Feeds `bytes` in pieces of `piece` bytes (all at once for 0), stopping at an error or after
/// a close (the reader stops parsing there and keeps the rest).
fn read(bytes: &[u8], piece: usize, max: usize) -> (Vec<Owned>, Option<WsError>) {
    let mut reader = Reader::default();
    let mut messages = Vec::new();
    let piece = if piece == 0 {
        bytes.len().max(1)
    } else {
        piece
    };
    for chunk in bytes.chunks(piece) {
        let mut chunk = chunk.to_vec();
        let result = reader.feed(&mut chunk, max, |message| {
            messages.push(Owned::of(message));
            true
        });
        if let Err(error) = result {
            return (messages, Some(error));
        }
        if matches!(messages.last(), Some(Owned::Close(_))) {
            break;
        }
    }
    (messages, None)
}

/// The header bytes of a masked client frame, with the length in the form `form` (the low
/// seven bits of the second byte as sent: 126 and 127 announce the longer forms).
fn client_header(fin: bool, op: u8, form: u8, len: usize, mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | op, 0x80 | form];
    match form {
        126 => out.extend_from_slice(&(len as u16).to_be_bytes()),
        127 => out.extend_from_slice(&(len as u64).to_be_bytes()),
        _ => {}
    }
    out.extend_from_slice(&mask);
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = 1 + usize::from(data[0]) * 4;
    let piece = usize::from(data[1] % 16);
    let stream = &data[2..];

    // Splitting never changes what is read.
    let whole = read(stream, 0, max);
    let pieces = read(stream, piece, max);
    assert_eq!(whole, pieces, "piece size {piece}");
    let bytewise = read(stream, 1, max);
    assert_eq!(whole, bytewise, "byte by byte");
    for message in &whole.0 {
        match message {
            Owned::Text(text) => assert!(text.len() <= max),
            Owned::Ping(payload) => assert!(payload.len() <= 125),
            _ => {}
        }
    }

    // A header re-encodes to the bytes it was read from.
    if let Ok(Some(header)) = parse_client_header(stream, max) {
        let encoded = client_header(
            header.fin,
            header.op,
            stream[1] & 0x7F,
            header.payload_len,
            header.mask,
        );
        assert_eq!(encoded.len(), header.header_len);
        assert_eq!(&stream[..header.header_len], &encoded[..]);
        assert!(header.payload_len <= max || header.op & 0x08 != 0);
    }

    // Unmasking is a XOR with the repeated key, and undoes itself.
    let mask = [data[0], data[1], data[0] ^ 0x5A, data[1] ^ 0xA5];
    let mut masked = stream.to_vec();
    unmask(&mut masked, mask);
    for (i, (a, b)) in masked.iter().zip(stream).enumerate() {
        assert_eq!(*a, b ^ mask[i % 4]);
    }
    unmask(&mut masked, mask);
    assert_eq!(masked, stream);

    // Server headers: the length they announce, in the shortest form.
    let len = stream.len() * 613;
    let mut header = [0; MAX_SERVER_HEADER];
    let used = server_header(data[0] & 0x0F, len, &mut header);
    assert_eq!(used, server_header_len(len));
    let announced = match header[1] {
        126 => usize::from(u16::from_be_bytes([header[2], header[3]])),
        127 => u64::from_be_bytes(header[2..10].try_into().unwrap()) as usize,
        short => usize::from(short),
    };
    assert_eq!(announced, len);

    // A close payload fits a control frame and keeps its reason's UTF-8.
    let reason = String::from_utf8_lossy(stream);
    let payload = close_payload(u16::from_be_bytes([data[0], data[1]]), &reason);
    assert!(payload.len() <= 125);
    assert!(reason.as_bytes().starts_with(&payload[2..]));
    assert!(std::str::from_utf8(&payload[2..]).is_ok());
});
