//! The HTTP/1.1 server loop's parser as a fuzz target (test builds only, feature `fixtures`):
//! `tests/scenarios/fuzz.rs` drives it with proptest from `fuzz/corpus/http1/`, on stable Rust.
//!
//! A client's bytes are parsed as the loop parses them — request after request (pipelining),
//! more bytes read on `More` — twice: all at once, and in pieces of a size the input chooses.
//! What the loop relies on is checked on the way: a request consumes a non-empty prefix and is
//! one the loop may answer (no body, no upgrade, no `Expect`); a hand-over gives hyper every
//! byte read so far, unchanged, and the [`Rewind`] hyper reads through yields exactly those and
//! then the rest of the stream; and the outcome does not depend on how the bytes arrived.

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use tokio::io::AsyncReadExt;

use super::super::wire::tokens;
use super::{Next, Rewind, parse};

/// Checks one input: its first byte picks the read size (1 to 64 bytes), the rest is the
/// stream. Returns the number of events (requests, hand-over, refusal) on success.
pub fn check_stream(input: &[u8], max_head: usize, max_headers: usize) -> Result<usize, String> {
    let Some((size, stream)) = input.split_first() else { return Ok(0) };
    let piece = usize::from(*size % 64) + 1;
    let whole = events(stream, stream.len().max(1), max_head, max_headers)?;
    let pieces = events(stream, piece, max_head, max_headers)?;
    if whole != pieces {
        return Err(format!("read at once: {whole:?}; read {piece} bytes at a time: {pieces:?}"));
    }
    Ok(whole.len())
}

/// What the loop does with `stream` read `piece` bytes at a time.
fn events(stream: &[u8], piece: usize, max_head: usize, max_headers: usize) -> Result<Vec<String>, String> {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut out = Vec::new();
    loop {
        let before = buf.clone();
        match parse(&mut buf, max_head, max_headers) {
            Next::Request(parsed) => {
                let used = before.len() - buf.len();
                if used == 0 || before[used..] != buf[..] {
                    return Err(format!("a request consumed {used} bytes, not a prefix"));
                }
                if used > max_head || parsed.req.headers().len() > max_headers {
                    return Err(format!("a head of {used} bytes passed the limits"));
                }
                let h = parsed.req.headers();
                if h.contains_key(TRANSFER_ENCODING) || h.contains_key(UPGRADE) || h.contains_key(EXPECT) {
                    return Err("a request with a body, an upgrade or Expect was answered here".into());
                }
                if h.get_all(CONTENT_LENGTH).iter().any(|v| v != "0") {
                    return Err("a request with a Content-Length other than 0 was answered here".into());
                }
                let upgrade = h
                    .get_all(CONNECTION)
                    .iter()
                    .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"upgrade")));
                if upgrade {
                    return Err("an upgrade was answered here".into());
                }
                let r = &parsed.req;
                out.push(format!(
                    "{} {} {:?} keep-alive={}",
                    r.method(),
                    r.uri(),
                    r.version(),
                    parsed.keep_alive
                ));
            }
            Next::More if fed == stream.len() => {
                out.push("end of stream".into());
                return Ok(out);
            }
            Next::More => {
                let n = piece.min(stream.len() - fed);
                buf.extend_from_slice(&stream[fed..fed + n]);
                fed += n;
            }
            Next::Handover(head) => {
                let mut handed = BytesMut::new();
                if let Some(head) = head {
                    handed.extend_from_slice(&head);
                }
                handed.extend_from_slice(&buf);
                if handed != before {
                    return Err("the hand-over lost or changed bytes".into());
                }
                let mut through = Rewind::new(std::io::Cursor::new(stream[fed..].to_vec()), handed.freeze());
                let mut read = Vec::new();
                futures::executor::block_on(through.read_to_end(&mut read)).map_err(|e| e.to_string())?;
                let mut expected = before.to_vec();
                expected.extend_from_slice(&stream[fed..]);
                if read != expected {
                    return Err("hyper would not read the client's bytes as they were sent".into());
                }
                out.push("hand-over".into());
                return Ok(out);
            }
            Next::Refuse(refusal) => {
                out.push(format!("refused: {refusal:?}"));
                return Ok(out);
            }
        }
    }
}
