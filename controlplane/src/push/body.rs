//! Response bodies of the push server: each message line goes out as one body frame whose bytes are
//! the line's pieces, read in place.
//!
//! A line is made of [`Bytes`] pieces, most of them shared by every proxy sent the same cluster or
//! outbound section ([`super::encode`]). Handing HTTP/2 one data frame per piece (a snapshot has one
//! per cluster, ~190 in the control-plane bench) made `h2` queue that many frames per connection while
//! the send buffer filled, and its per-connection frame queue (a slab) keeps the room of the most
//! frames it ever held, a few hundred bytes each, for as long as the connection lives. [`Pieces`] is
//! one [`Buf`] over the whole line instead: `h2` queues it as one frame, cuts it into frames of the
//! peer's maximum frame size as flow control allows, and writes each with vectored I/O straight from
//! the shared pieces, copying nothing. The pieces are dropped as soon as they are written.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::IoSlice;

use bytes::{Buf, BufMut as _, Bytes};
use http_body_util::combinators::BoxBody;

/// Response bodies of the push server.
pub(super) type Body = BoxBody<Pieces, Infallible>;

/// Bytes in pieces, read one after the other without being copied together.
#[derive(Debug, Default, Clone)]
pub struct Pieces {
    /// Never holds an empty piece, so the front is the current chunk.
    pieces: VecDeque<Bytes>,
    remaining: usize,
}

impl Pieces {
    /// The bytes of `pieces`, in order.
    pub fn new(mut pieces: Vec<Bytes>) -> Self {
        pieces.retain(|piece| !piece.is_empty());
        let remaining = pieces.iter().map(Bytes::len).sum();
        Self { pieces: VecDeque::from(pieces), remaining }
    }
}

impl From<Bytes> for Pieces {
    fn from(bytes: Bytes) -> Self {
        Self::new(vec![bytes])
    }
}

impl From<Vec<Bytes>> for Pieces {
    fn from(pieces: Vec<Bytes>) -> Self {
        Self::new(pieces)
    }
}

impl Buf for Pieces {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.pieces.front().map_or(&[], |piece| piece.as_ref())
    }

    fn advance(&mut self, mut count: usize) {
        assert!(count <= self.remaining, "advanced {count} bytes past the {} remaining", self.remaining);
        self.remaining -= count;
        while count > 0 {
            let Some(front) = self.pieces.front_mut() else { return };
            if count < front.len() {
                front.advance(count);
                return;
            }
            count -= front.len();
            self.pieces.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, piece) in dst.iter_mut().zip(&self.pieces) {
            *slot = IoSlice::new(piece);
            filled += 1;
        }
        filled
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        // Within the front piece: a slice of it, no copy.
        if let Some(front) = self.pieces.front_mut()
            && len <= front.len()
        {
            let bytes = front.split_to(len);
            self.remaining -= len;
            if front.is_empty() {
                self.pieces.pop_front();
            }
            return bytes;
        }
        assert!(len <= self.remaining, "copied {len} bytes of the {} remaining", self.remaining);
        let mut bytes = bytes::BytesMut::with_capacity(len);
        bytes.put((&mut *self).take(len));
        bytes.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces() -> Pieces {
        let parts: [&'static str; 5] = ["{\"a\":", "", "[1,2,3]", ",\"b\":true}", "\n"];
        Pieces::new(parts.into_iter().map(|p| Bytes::from_static(p.as_bytes())).collect())
    }

    fn whole() -> &'static [u8] {
        b"{\"a\":[1,2,3],\"b\":true}\n"
    }

    #[test]
    fn pieces_read_as_their_bytes_one_after_the_other() {
        let mut buf = pieces();
        assert_eq!(buf.remaining(), whole().len());
        assert_eq!(buf.copy_to_bytes(buf.remaining()), Bytes::from_static(whole()));
        assert_eq!(buf.remaining(), 0);
        assert!(buf.chunk().is_empty());
    }

    #[test]
    fn advancing_across_piece_boundaries_leaves_the_rest_in_order() {
        for step in 1..=whole().len() {
            let mut buf = pieces();
            let mut read = Vec::new();
            while buf.has_remaining() {
                let n = step.min(buf.remaining());
                let mut part = vec![0; n];
                buf.copy_to_slice(&mut part);
                read.extend_from_slice(&part);
            }
            assert_eq!(read, whole(), "reading {step} bytes at a time");
        }
        let mut buf = pieces();
        buf.advance(6);
        assert_eq!(buf.chunk(), b"1,2,3]", "inside the second piece");
        assert_eq!(buf.remaining(), whole().len() - 6);
    }

    #[test]
    fn vectored_chunks_name_every_remaining_piece_and_stop_at_the_slots_given() {
        let mut buf = pieces();
        buf.advance(2);
        let mut slots = [IoSlice::new(&[]); 8];
        let filled = buf.chunks_vectored(&mut slots);
        assert_eq!(filled, 4, "the empty piece is not one");
        let joined: Vec<u8> = slots[..filled].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(joined, &whole()[2..]);
        let mut two = [IoSlice::new(&[]); 2];
        assert_eq!(buf.chunks_vectored(&mut two), 2);
        assert_eq!(&*two[0], b"a\":");
    }

    #[test]
    fn a_limited_read_of_pieces_takes_exactly_that_many_bytes() {
        let mut buf = pieces();
        let head = (&mut buf).take(9).copy_to_bytes(9);
        assert_eq!(head, Bytes::from_static(&whole()[..9]));
        assert_eq!(buf.copy_to_bytes(buf.remaining()), Bytes::from_static(&whole()[9..]));
    }
}
