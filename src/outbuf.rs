//! A connection's pending output: the bytes the kernel would not take yet.
//!
//! On the fast path nothing is stored here: the loop reads into one shared
//! buffer and writes straight back from it. Only when `write` is partial
//! (the socket's send buffer is full, seed 6: "a send may be partial") is
//! the unsent tail copied into this buffer, to go out when the socket
//! becomes writable again.
//!
//! An empty `OutBuf` owns no heap memory: when the last byte is written the
//! allocation is released, so an idle connection costs only its slab entry.
//! The connection bounds how large this grows through backpressure (it stops
//! reading above a high watermark), not this type.

/// Bytes waiting to be written, in order.
#[derive(Debug, Default)]
pub(crate) struct OutBuf {
    /// Storage; `buf[head..]` is still to be written.
    buf: Vec<u8>,
    /// How much of `buf` has already been written. A `u32` keeps the
    /// connection struct at 64 bytes; pending output is bounded far below
    /// 4 GiB by backpressure.
    head: u32,
}

impl OutBuf {
    /// An empty buffer with no allocation.
    pub(crate) const fn new() -> Self {
        OutBuf {
            buf: Vec::new(),
            head: 0,
        }
    }

    /// Bytes still to be written.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.head as usize
    }

    /// Whether nothing is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `data` after what is pending.
    pub(crate) fn push(&mut self, data: &[u8]) {
        // Reclaim the already-written prefix before growing, so the storage
        // stays about as large as what is pending.
        if self.head > 0 && self.buf.len() + data.len() > self.buf.capacity() {
            self.buf.drain(..self.head as usize);
            self.head = 0;
        }
        // Exactly what is needed, not doubled: the memory budget
        // (`budget.rs`) counts capacity, and a push may grow it by at most
        // the bytes pushed.
        self.buf.reserve_exact(data.len());
        self.buf.extend_from_slice(data);
    }

    /// The pending bytes, for `write`.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf[self.head as usize..]
    }

    /// Marks `n` pending bytes as written; frees the storage when empty.
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.head += n as u32;
        if self.head as usize >= self.buf.len() {
            // Release rather than keep: most connections rarely need an
            // output buffer, and an idle one must not hold memory.
            *self = OutBuf::new();
        }
    }

    /// Heap bytes held: what the memory budget counts.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_partial_consumes() {
        let mut b = OutBuf::new();
        b.push(b"hello ");
        b.consume(3);
        b.push(b"world");
        assert_eq!(b.as_slice(), b"lo world");
        b.consume(8);
        assert!(b.is_empty());
    }

    #[test]
    fn drained_buffer_owns_no_memory() {
        let mut b = OutBuf::new();
        b.push(&[7u8; 10_000]);
        assert!(b.capacity() >= 10_000);
        b.consume(10_000);
        assert_eq!(b.capacity(), 0);
    }

    #[test]
    fn reclaims_written_prefix_instead_of_growing_forever() {
        let mut b = OutBuf::new();
        for _ in 0..1000 {
            b.push(&[1u8; 1000]);
            b.consume(1000 - 1);
        }
        assert_eq!(b.len(), 1000);
        assert!(b.capacity() < 64 * 1024, "capacity {}", b.capacity());
    }

    #[test]
    fn a_push_that_fits_leaves_the_written_prefix_and_one_that_does_not_reclaims_it() {
        let mut b = OutBuf::new();
        b.push(&[1u8; 100]);
        b.consume(10);
        assert_eq!(b.len(), 90);
        let room = b.capacity() - 100;
        // Fits exactly: no bytes moved, no growth.
        b.push(&vec![2u8; room]);
        assert_eq!((b.head, b.len()), (10, 90 + room), "moved for nothing");
        // One byte more than fits: the prefix is reclaimed instead of
        // growing.
        let capacity = b.capacity();
        b.push(&[3u8]);
        assert_eq!(b.head, 0);
        assert_eq!(b.capacity(), capacity, "grew with room left");
        assert_eq!(b.len(), 90 + room + 1);
        assert_eq!(b.as_slice()[..90], [1u8; 90]);
        assert_eq!(b.as_slice()[90 + room], 3);
    }
}
