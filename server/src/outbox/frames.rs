//! The outbox's queue of frames, its first frame kept inline.
//!
//! A fan-out at a steady rate finds each outbox empty and leaves one frame in it, which the
//! publisher writes moments later. Kept inline, that frame sits on the cache lines the outbox's
//! lock and flags are already on, so queuing and writing it touch no other memory: a
//! `VecDeque` alone would keep it in a heap buffer of its own, one more cold cache line for each
//! of the two passes over 5,000 subscribers. Frames behind the first (a socket that was full,
//! several publishers at once) wait in the `VecDeque`.

use std::collections::VecDeque;

use bytes::Bytes;

/// Above this many slots, an emptied queue gives its memory back.
const KEEP_SLOTS: usize = 16;

/// One queued frame: a WebSocket opcode and its payload (the socket sink writes the header at
/// send time).
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) op: u8,
    pub(super) payload: Bytes,
}

/// A FIFO of frames. `head` is `None` only when the queue is empty.
#[derive(Debug, Default)]
#[repr(C)]
pub(super) struct Frames {
    head: Option<Frame>,
    tail: VecDeque<Frame>,
}

impl Frames {
    /// Frames queued.
    pub(super) fn len(&self) -> usize {
        match self.head {
            None => 0,
            Some(_) => 1 + self.tail.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Whether exactly one frame is queued.
    pub(super) fn is_single(&self) -> bool {
        self.head.is_some() && self.tail.is_empty()
    }

    pub(super) fn front(&self) -> Option<&Frame> {
        self.head.as_ref()
    }

    pub(super) fn push_back(&mut self, frame: Frame) {
        if self.head.is_none() {
            self.head = Some(frame);
        } else {
            self.tail.push_back(frame);
        }
    }

    pub(super) fn push_front(&mut self, frame: Frame) {
        if let Some(first) = self.head.replace(frame) {
            self.tail.push_front(first);
        }
    }

    /// Takes the first frame; a queue that had grown gives its spare memory back once it is
    /// empty (not before: a slow reader whose backlog swings would reallocate on every swing).
    pub(super) fn pop_front(&mut self) -> Option<Frame> {
        let first = self.head.take()?;
        self.head = self.tail.pop_front();
        if self.head.is_none() && self.tail.capacity() > KEEP_SLOTS {
            self.tail.shrink_to(KEEP_SLOTS);
        }
        Some(first)
    }

    /// The frames in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Frame> {
        self.head.iter().chain(self.tail.iter())
    }

    /// Keeps the first `keep` frames, drops the rest.
    pub(super) fn truncate(&mut self, keep: usize) {
        if keep == 0 {
            self.clear();
        } else {
            self.tail.truncate(keep - 1);
        }
    }

    /// Drops every frame and the memory that held them.
    pub(super) fn clear(&mut self) {
        self.head = None;
        self.tail = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Frame {
        Frame {
            op: n,
            payload: Bytes::new(),
        }
    }

    fn ops(frames: &Frames) -> Vec<u8> {
        frames.iter().map(|f| f.op).collect()
    }

    #[test]
    fn frames_leave_in_the_order_they_came_whatever_the_mix_of_operations() {
        let mut frames = Frames::default();
        assert!(frames.is_empty() && frames.front().is_none());
        assert_eq!(frames.len(), 0);
        frames.push_back(frame(2));
        assert!(frames.is_single());
        frames.push_back(frame(3));
        frames.push_front(frame(1));
        frames.push_back(frame(4));
        assert_eq!(ops(&frames), [1, 2, 3, 4]);
        assert_eq!(frames.len(), 4);
        assert!(!frames.is_single());
        assert_eq!(frames.pop_front().map(|f| f.op), Some(1));
        assert_eq!(frames.front().map(|f| f.op), Some(2));
        frames.truncate(2);
        assert_eq!(ops(&frames), [2, 3]);
        assert_eq!(frames.pop_front().map(|f| f.op), Some(2));
        assert!(frames.is_single());
        assert_eq!(frames.pop_front().map(|f| f.op), Some(3));
        assert!(frames.pop_front().is_none());
        assert!(frames.is_empty());
        frames.push_front(frame(9));
        assert_eq!(ops(&frames), [9]);
        frames.truncate(0);
        assert!(frames.is_empty());
        assert_eq!(frames.len(), 0);
    }

    #[test]
    fn a_drained_queue_gives_back_the_memory_of_a_burst() {
        let mut frames = Frames::default();
        for n in 0..200 {
            frames.push_back(frame(n));
        }
        assert!(frames.tail.capacity() >= 199);
        while frames.pop_front().is_some() {}
        assert!(frames.tail.capacity() <= KEEP_SLOTS);
        for n in 0..200 {
            frames.push_back(frame(n));
        }
        frames.clear();
        assert_eq!(frames.tail.capacity(), 0);
    }
}
