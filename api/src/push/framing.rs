//! Framing: one JSON message per line. JSON text never holds a raw newline (strings escape it), so a
//! newline ends a message wherever HTTP/2 happens to cut the body into frames.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// A message as it goes on the stream: compact JSON and a newline.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, Error> {
    let mut line = serde_json::to_vec(message).map_err(|e| Error::Push(format!("cannot encode a message: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

/// One line (without its newline) as a message of type `T`.
pub fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(line).map_err(|e| {
        let start = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        Error::Push(format!("invalid message {start:?}: {e}"))
    })
}

/// Cuts a byte stream into lines, holding at most one partial line of at most `max_line` bytes.
#[derive(Debug)]
pub struct LineDecoder {
    buf: Vec<u8>,
    /// Where the next line starts.
    start: usize,
    /// Bytes before this index hold no newline after `start`.
    scanned: usize,
    max_line: usize,
}

impl LineDecoder {
    /// A decoder that refuses lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self { buf: Vec::new(), start: 0, scanned: 0, max_line }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete, non-blank line, if one has arrived; an error when a line is too long.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, Error> {
        loop {
            let Some(offset) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                return match self.buf.len() - self.start {
                    pending if pending > self.max_line => Err(self.too_long(pending)),
                    _ => Ok(None),
                };
            };
            let end = self.scanned + offset;
            let line = self.start..end;
            self.start = end + 1;
            self.scanned = end + 1;
            if line.len() > self.max_line {
                return Err(self.too_long(line.len()));
            }
            if self.buf[line.clone()].iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(&self.buf[line]));
        }
    }

    /// Whether bytes of an unfinished line are held (a stream that ends here was cut short).
    pub fn has_partial_line(&self) -> bool {
        self.buf[self.start..].iter().any(|b| !b.is_ascii_whitespace())
    }

    fn too_long(&self, len: usize) -> Error {
        Error::Push(format!("a message of more than {} bytes (at least {len}) is too long", self.max_line))
    }
}
