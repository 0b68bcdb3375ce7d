//! WebSocket framing (RFC 6455) as Herald needs it: server frames are unmasked and never
//! fragmented; client frames are masked and may be fragmented. Pure functions over byte slices,
//! so the transport can parse straight out of a shared read buffer and keep nothing per
//! connection while it is idle.

/// Frame opcodes.
pub mod opcode {
    /// A continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A UTF-8 text message.
    pub const TEXT: u8 = 0x1;
    /// A binary message.
    pub const BINARY: u8 = 0x2;
    /// The closing handshake.
    pub const CLOSE: u8 = 0x8;
    /// A ping (answered with a pong carrying the same payload).
    pub const PING: u8 = 0x9;
    /// A pong.
    pub const PONG: u8 = 0xA;
}

/// The longest header of a server frame (2 bytes, plus 8 for a 64-bit length).
pub const MAX_SERVER_HEADER: usize = 10;

/// Writes the header of an unmasked, final server frame of `len` payload bytes into `out`;
/// returns how many bytes it used.
pub fn server_header(op: u8, len: usize, out: &mut [u8; MAX_SERVER_HEADER]) -> usize {
    out[0] = 0x80 | (op & 0x0F);
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// The length of the header [`server_header`] writes for `len` payload bytes.
pub fn server_header_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if len <= u16::MAX as usize {
        4
    } else {
        10
    }
}

/// A whole server frame (header and payload) in one buffer; for the rare frames that are not
/// written from the outbox.
pub fn server_frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut header = [0; MAX_SERVER_HEADER];
    let used = server_header(op, payload.len(), &mut header);
    let mut frame = Vec::with_capacity(used + payload.len());
    frame.extend_from_slice(&header[..used]);
    frame.extend_from_slice(payload);
    frame
}

/// The payload of a close frame: the code, then the reason (cut to fit the 125-byte limit of
/// control frames, at a character boundary).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// Why a client's bytes are not acceptable WebSocket; each maps to a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// Broken framing (unmasked, reserved bits or opcodes, a bad control frame or a bad
    /// continuation): close 1002.
    Protocol,
    /// A message longer than the limit: close 1009.
    TooBig,
    /// A text message that is not UTF-8: close 1007.
    InvalidUtf8,
}

impl WsError {
    /// The close code sent for it.
    pub fn close_code(self) -> u16 {
        match self {
            WsError::Protocol => 1002,
            WsError::TooBig => 1009,
            WsError::InvalidUtf8 => 1007,
        }
    }
}

/// A parsed client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Whether this frame ends its message.
    pub fin: bool,
    /// The opcode.
    pub op: u8,
    /// The masking key.
    pub mask: [u8; 4],
    /// Bytes the header takes.
    pub header_len: usize,
    /// Payload bytes after the header.
    pub payload_len: usize,
}

/// Parses the header of a client frame at the start of `buf`: `Ok(None)` while `buf` holds less
/// than the whole header. Data frames whose payload exceeds `max_payload` are refused before
/// their payload arrives (control frames are limited to 125 bytes by the protocol).
pub fn parse_client_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol);
    }
    let fin = b0 & 0x80 != 0;
    let op = b0 & 0x0F;
    let control = op & 0x08 != 0;
    match op {
        opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
        opcode::CLOSE | opcode::PING | opcode::PONG => {}
        _ => return Err(WsError::Protocol),
    }
    if b1 & 0x80 == 0 {
        // Client frames must be masked.
        return Err(WsError::Protocol);
    }
    let (len, at) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(bytes), 10)
        }
        short => (u64::from(short), 2),
    };
    if control && (!fin || len > 125) {
        return Err(WsError::Protocol);
    }
    if !control && len > max_payload as u64 {
        return Err(WsError::TooBig);
    }
    if buf.len() < at + 4 {
        return Ok(None);
    }
    let mut mask = [0; 4];
    mask.copy_from_slice(&buf[at..at + 4]);
    Ok(Some(Header {
        fin,
        op,
        mask,
        header_len: at + 4,
        payload_len: len as usize,
    }))
}

/// Unmasks `payload` in place.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i];
    }
}

/// A client message, reassembled and unmasked.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary,
    /// A ping with its payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// A close, with the peer's code if it sent one.
    Close(Option<u16>),
}

/// Reassembles client messages from bytes as they arrive. Keeps bytes only while a frame or a
/// fragmented message is incomplete: an idle connection holds two empty `Vec`s.
#[derive(Debug, Default)]
pub struct Reader {
    /// The start of a frame whose rest has not arrived.
    partial: Vec<u8>,
    /// The fragments of a message so far, and its opcode.
    message: Vec<u8>,
    message_op: Option<u8>,
}

impl Reader {
    /// Feeds freshly read bytes (which it may unmask in place), calling `on_message` for each
    /// complete message; stops at the first error. `on_message` returns `false` to stop early
    /// (the unread rest is kept for the next call with an empty `input`).
    pub fn feed(
        &mut self,
        input: &mut [u8],
        max_message: usize,
        mut on_message: impl FnMut(Message<'_>) -> bool,
    ) -> Result<(), WsError> {
        if self.partial.is_empty() {
            let used = self.parse(input, max_message, &mut on_message)?;
            if used < input.len() {
                self.partial.extend_from_slice(&input[used..]);
            }
            return Ok(());
        }
        let mut buffered = std::mem::take(&mut self.partial);
        buffered.extend_from_slice(input);
        let result = self.parse(&mut buffered, max_message, &mut on_message);
        match result {
            Ok(used) => {
                buffered.drain(..used);
                if buffered.is_empty() {
                    buffered = Vec::new();
                } else if buffered.capacity() > 2 * buffered.len() + 1024 {
                    // Keep what the unfinished frame needs, not the whole last read.
                    buffered.shrink_to_fit();
                }
                self.partial = buffered;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Whether bytes of an unfinished frame are held.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Parses whole frames from `buf`; returns the bytes consumed.
    fn parse(
        &mut self,
        buf: &mut [u8],
        max_message: usize,
        on_message: &mut impl FnMut(Message<'_>) -> bool,
    ) -> Result<usize, WsError> {
        let mut at = 0;
        loop {
            let room = max_message.saturating_sub(self.message.len());
            let Some(header) = parse_client_header(&buf[at..], max_message)? else {
                return Ok(at);
            };
            let start = at + header.header_len;
            let end = start + header.payload_len;
            if buf.len() < end {
                return Ok(at);
            }
            at = end;
            let payload = &mut buf[start..end];
            unmask(payload, header.mask);
            let keep_going = match header.op {
                opcode::PING => on_message(Message::Ping(payload)),
                opcode::PONG => on_message(Message::Pong),
                opcode::CLOSE => {
                    let code = match payload.len() {
                        0 => None,
                        1 => return Err(WsError::Protocol),
                        _ => Some(u16::from_be_bytes([payload[0], payload[1]])),
                    };
                    if code.is_some_and(|code| !valid_close_code(code)) {
                        return Err(WsError::Protocol);
                    }
                    if payload.len() > 2 && std::str::from_utf8(&payload[2..]).is_err() {
                        return Err(WsError::InvalidUtf8);
                    }
                    on_message(Message::Close(code));
                    return Ok(at);
                }
                opcode::CONTINUATION => {
                    let Some(op) = self.message_op else {
                        return Err(WsError::Protocol);
                    };
                    if payload.len() > room {
                        return Err(WsError::TooBig);
                    }
                    self.message.extend_from_slice(payload);
                    if header.fin {
                        self.message_op = None;
                        let message = std::mem::take(&mut self.message);
                        let keep_going = deliver(op, &message, on_message)?;
                        // Reuse nothing: fragmented messages are rare, idle memory is not.
                        drop(message);
                        keep_going
                    } else {
                        true
                    }
                }
                op => {
                    if self.message_op.is_some() {
                        return Err(WsError::Protocol);
                    }
                    if header.payload_len > max_message {
                        return Err(WsError::TooBig);
                    }
                    if header.fin {
                        deliver(op, payload, on_message)?
                    } else {
                        self.message_op = Some(op);
                        self.message.extend_from_slice(payload);
                        true
                    }
                }
            };
            if !keep_going {
                return Ok(at);
            }
        }
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4): the defined codes that may
/// appear on the wire, and the ranges for libraries (3000-3999) and applications (4000-4999).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn deliver(
    op: u8,
    payload: &[u8],
    on_message: &mut impl FnMut(Message<'_>) -> bool,
) -> Result<bool, WsError> {
    if op == opcode::TEXT {
        let text = std::str::from_utf8(payload).map_err(|_| WsError::InvalidUtf8)?;
        Ok(on_message(Message::Text(text)))
    } else {
        Ok(on_message(Message::Binary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, as a browser would send it.
    fn client_frame(fin: bool, op: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | op];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        let mut masked = payload.to_vec();
        unmask(&mut masked, mask);
        out.extend_from_slice(&masked);
        out
    }

    fn collect(reader: &mut Reader, input: &[u8], max: usize) -> Result<Vec<String>, WsError> {
        let mut seen = Vec::new();
        let mut input = input.to_vec();
        reader.feed(&mut input, max, |m| {
            seen.push(match m {
                Message::Text(t) => format!("text:{t}"),
                Message::Binary => "binary".into(),
                Message::Ping(p) => format!("ping:{}", String::from_utf8_lossy(p)),
                Message::Pong => "pong".into(),
                Message::Close(code) => format!("close:{code:?}"),
            });
            true
        })?;
        Ok(seen)
    }

    #[test]
    fn server_headers_use_the_shortest_length_encoding() {
        let mut h = [0; MAX_SERVER_HEADER];
        assert_eq!(server_header(opcode::TEXT, 5, &mut h), 2);
        assert_eq!(&h[..2], &[0x81, 5]);
        assert_eq!(server_header(opcode::TEXT, 125, &mut h), 2);
        assert_eq!(server_header(opcode::TEXT, 126, &mut h), 4);
        assert_eq!(&h[..4], &[0x81, 126, 0, 126]);
        assert_eq!(server_header(opcode::PONG, 65_535, &mut h), 4);
        assert_eq!(&h[..4], &[0x8A, 126, 0xFF, 0xFF]);
        assert_eq!(server_header(opcode::TEXT, 65_536, &mut h), 10);
        assert_eq!(&h[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        for len in [0, 125, 126, 65_535, 65_536] {
            assert_eq!(
                server_header_len(len),
                server_header(opcode::TEXT, len, &mut h)
            );
        }
        assert_eq!(server_frame(opcode::TEXT, b"hi"), vec![0x81, 2, b'h', b'i']);
    }

    #[test]
    fn close_payloads_carry_the_code_and_a_cut_reason() {
        assert_eq!(
            close_payload(4200, "bye"),
            vec![0x10, 0x68, b'b', b'y', b'e']
        );
        let long = "é".repeat(100);
        let payload = close_payload(1000, &long);
        assert!(payload.len() <= 125);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }

    #[test]
    fn the_rfc_example_unmasks_to_hello() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            collect(&mut Reader::default(), &frame, 100).unwrap(),
            vec!["text:Hello"]
        );
    }

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let mask = [1, 2, 3, 4];
        let mut bytes = client_frame(true, opcode::TEXT, b"first message", mask);
        bytes.extend(client_frame(true, opcode::TEXT, &[b'x'; 300], mask));
        bytes.extend(client_frame(true, opcode::PING, b"p", mask));
        for split in 0..bytes.len() {
            let mut reader = Reader::default();
            let mut seen = collect(&mut reader, &bytes[..split], 1000).unwrap();
            seen.extend(collect(&mut reader, &bytes[split..], 1000).unwrap());
            assert_eq!(seen.len(), 3, "split at {split}");
            assert_eq!(seen[0], "text:first message");
            assert_eq!(seen[1], format!("text:{}", "x".repeat(300)));
            assert_eq!(seen[2], "ping:p");
            assert!(!reader.has_partial());
        }
    }

    #[test]
    fn fragments_with_interleaved_control_frames_make_one_message() {
        let mask = [9, 8, 7, 6];
        let mut bytes = client_frame(false, opcode::TEXT, b"hel", mask);
        bytes.extend(client_frame(true, opcode::PING, b"", mask));
        bytes.extend(client_frame(false, opcode::CONTINUATION, b"lo ", mask));
        bytes.extend(client_frame(
            true,
            opcode::CONTINUATION,
            "wörld".as_bytes(),
            mask,
        ));
        let seen = collect(&mut Reader::default(), &bytes, 1000).unwrap();
        assert_eq!(seen, vec!["ping:", "text:hello wörld"]);
    }

    #[test]
    fn bad_frames_are_refused_with_their_close_codes() {
        let mask = [1, 1, 1, 1];
        let unmasked = [0x81, 0x01, b'a'];
        assert_eq!(
            collect(&mut Reader::default(), &unmasked, 10),
            Err(WsError::Protocol)
        );
        let mut reserved = client_frame(true, opcode::TEXT, b"a", mask);
        reserved[0] |= 0x40;
        assert_eq!(
            collect(&mut Reader::default(), &reserved, 10),
            Err(WsError::Protocol)
        );
        let unknown = client_frame(true, 0x3, b"a", mask);
        assert_eq!(
            collect(&mut Reader::default(), &unknown, 10),
            Err(WsError::Protocol)
        );
        let fragmented_ping = client_frame(false, opcode::PING, b"a", mask);
        assert_eq!(
            collect(&mut Reader::default(), &fragmented_ping, 10),
            Err(WsError::Protocol)
        );
        let stray = client_frame(true, opcode::CONTINUATION, b"a", mask);
        assert_eq!(
            collect(&mut Reader::default(), &stray, 10),
            Err(WsError::Protocol)
        );
        let too_big = client_frame(true, opcode::TEXT, &[b'a'; 11], mask);
        assert_eq!(
            collect(&mut Reader::default(), &too_big, 10),
            Err(WsError::TooBig)
        );
        // Refused from the header alone, before the payload arrives.
        assert_eq!(
            collect(&mut Reader::default(), &too_big[..4], 10),
            Err(WsError::TooBig)
        );
        let mut big_total = client_frame(false, opcode::TEXT, &[b'a'; 6], mask);
        big_total.extend(client_frame(true, opcode::CONTINUATION, &[b'a'; 6], mask));
        assert_eq!(
            collect(&mut Reader::default(), &big_total, 10),
            Err(WsError::TooBig)
        );
        let latin1 = client_frame(true, opcode::TEXT, &[0xE9], mask);
        assert_eq!(
            collect(&mut Reader::default(), &latin1, 10),
            Err(WsError::InvalidUtf8)
        );
        assert_eq!(
            collect(
                &mut Reader::default(),
                &client_frame(true, opcode::CLOSE, &[3, 232], mask),
                10
            ),
            Ok(vec!["close:Some(1000)".to_owned()])
        );
        // 1005 and 1006 never go on the wire; a close reason is UTF-8.
        for code in [999u16, 1005, 1006, 1015, 2000, 5000] {
            let close = client_frame(true, opcode::CLOSE, &code.to_be_bytes(), mask);
            assert_eq!(
                collect(&mut Reader::default(), &close, 10),
                Err(WsError::Protocol),
                "{code}"
            );
        }
        let bad_reason = client_frame(true, opcode::CLOSE, &[3, 232, 0xFF], mask);
        assert_eq!(
            collect(&mut Reader::default(), &bad_reason, 10),
            Err(WsError::InvalidUtf8)
        );
        let app_code = client_frame(true, opcode::CLOSE, &4000u16.to_be_bytes(), mask);
        assert_eq!(
            collect(&mut Reader::default(), &app_code, 10),
            Ok(vec!["close:Some(4000)".to_owned()])
        );
    }

    #[test]
    fn unmask_handles_every_length() {
        let mask = [0xA, 0xB, 0xC, 0xD];
        for len in 0..20 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut data = original.clone();
            unmask(&mut data, mask);
            for (i, b) in data.iter().enumerate() {
                assert_eq!(*b, original[i] ^ mask[i % 4]);
            }
        }
    }
}
