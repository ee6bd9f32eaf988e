//! The bounded byte queue between a source and pacman: a transfer buffer
//! (lent by the [`super::pool::Buffers`] while a body streams through it) with
//! its filled part and free space.
//!
//! Owns the buffer's bounds and compaction; it does not read or write
//! sockets (the source fills it, the connection empties it).

use super::pool::{BUFFER, Buffers};

/// The bounded byte queue between a source and pacman.
pub struct Pipe {
    buf: Vec<u8>,
    /// Bytes it queues at most (the size of the buffer it was given).
    cap: usize,
    start: usize,
    end: usize,
    /// Bytes at the end not yet handed to the body check ([`Pipe::unchecked`]).
    unchecked: usize,
}

impl Pipe {
    pub fn new() -> Pipe {
        Pipe {
            buf: Vec::new(),
            cap: BUFFER,
            start: 0,
            end: 0,
            unchecked: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        self.unchecked = self.unchecked.min(self.end - self.start);
    }

    /// The bytes that came in since the last [`Pipe::mark_checked`] and are still here.
    pub fn unchecked(&self) -> &[u8] {
        &self.buf[self.end - self.unchecked..self.end]
    }

    /// Every byte here has been seen by the body check.
    pub fn mark_checked(&mut self) {
        self.unchecked = 0;
    }

    /// Free space before the pipe holds its capacity, compacting first if
    /// that makes room.
    pub fn space(&mut self) -> &mut [u8] {
        if self.buf.len() < self.cap {
            self.buf.resize(self.cap, 0);
        }
        if self.end >= self.cap && self.start > 0 {
            self.compact();
        }
        let end = self.end.max(self.cap);
        &mut self.buf[self.end..end]
    }

    pub fn is_full(&self) -> bool {
        self.end - self.start >= self.cap
    }

    /// Appends bytes that arrived with a response head, even past the
    /// capacity (at most one socket read more).
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        if self.buf.len() < self.end + data.len() {
            self.buf.resize((self.end + data.len()).max(self.cap), 0);
        }
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
        self.unchecked += data.len();
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    pub fn commit(&mut self, n: usize) {
        self.end += n;
        self.unchecked += n;
    }

    /// Gives the pipe a buffer before a body streams through it.
    pub fn provide(&mut self, buffers: &mut Buffers) {
        if self.buf.is_empty() {
            self.buf = buffers.take_buffer();
            self.cap = self.buf.len();
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.unchecked = 0;
    }

    /// Takes the buffer out, to give it back between transfers.
    pub fn release(&mut self) -> Vec<u8> {
        self.clear();
        self.cap = BUFFER;
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_compacts_and_bounds() {
        let mut pipe = Pipe::new();
        let space = pipe.space().len();
        assert_eq!(space, BUFFER);
        pipe.commit(BUFFER);
        assert!(pipe.space().is_empty());
        pipe.consume(10);
        assert_eq!(pipe.space().len(), 10);
        assert_eq!(pipe.data().len(), BUFFER - 10);
        pipe.consume(BUFFER - 10);
        assert!(pipe.is_empty());
        assert_eq!(pipe.space().len(), BUFFER);
        assert_eq!(pipe.release().len(), BUFFER);
        assert!(pipe.buf.is_empty());
    }

    #[test]
    fn new_bytes_are_seen_by_the_check_once_and_before_they_leave() {
        let mut pipe = Pipe::new();
        pipe.space()[..5].copy_from_slice(b"abcde");
        pipe.commit(5);
        assert_eq!(pipe.unchecked(), b"abcde");
        pipe.mark_checked();
        assert!(pipe.unchecked().is_empty());
        pipe.push(b"fgh");
        assert_eq!(pipe.unchecked(), b"fgh");
        // Taken by pacman before the check (only without a check): never more than is here.
        pipe.consume(7);
        assert_eq!(pipe.unchecked(), b"h");
        pipe.clear();
        assert!(pipe.unchecked().is_empty());
    }
}
