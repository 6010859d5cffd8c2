//! Line buffers the writer hands back for reuse.
//!
//! A line is built on the caller's thread and written, then freed, on the worker's. Freeing
//! memory another thread allocated is the allocator's slow path, and every line paid for a fresh
//! allocation too. The writer returns written buffers here instead, and [`LogLayer`]
//! (super::LogLayer) takes one before it allocates: a lock-free queue pop and push per line.

use crossbeam_queue::ArrayQueue;

/// The most buffers kept (about 512 KiB of 512-byte lines).
const KEPT: usize = 1024;

/// A buffer grown past this (a line with large fields) is freed rather than kept.
const KEEP_AT_MOST: usize = 4096;

/// A new line's capacity: an access line is about 300 bytes, so one allocation, no regrowth.
const LINE_CAPACITY: usize = 512;

pub(crate) struct LinePool {
    free: ArrayQueue<Vec<u8>>,
}

impl Default for LinePool {
    fn default() -> Self {
        Self {
            free: ArrayQueue::new(KEPT),
        }
    }
}

impl LinePool {
    /// An empty buffer: a returned one, or a new one.
    pub(crate) fn take(&self) -> Vec<u8> {
        match self.free.pop() {
            Some(mut line) => {
                line.clear();
                line
            }
            None => Vec::with_capacity(LINE_CAPACITY),
        }
    }

    /// Takes back written buffers (those not too large, while there is room).
    pub(crate) fn give(&self, lines: impl IntoIterator<Item = Vec<u8>>) {
        for line in lines {
            if line.capacity() <= KEEP_AT_MOST && self.free.push(line).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_large_ones_are_not_kept() {
        let pool = LinePool::default();
        let mut line = pool.take();
        line.extend_from_slice(b"{\"message\":\"hello\"}\n");
        let address = line.as_ptr();
        pool.give([line, Vec::with_capacity(KEEP_AT_MOST + 1)]);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), address, "the written buffer is reused");
        assert_eq!(pool.free.len(), 0, "the oversized buffer was not kept");
        pool.give((0..KEPT + 10).map(|_| Vec::with_capacity(8)));
        assert_eq!(pool.free.len(), KEPT);
    }
}
