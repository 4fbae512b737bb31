//! A vector kept in chunks of a fixed size, so growing it never moves what
//! it holds.
//!
//! A `Vec` that outgrows its capacity copies every element in the one push
//! that crossed it: a pool of 2·10^6 keys copied its 128 MB of slots in
//! one add request, under the store's lock, while every other request
//! waited. Here a push at most starts a new chunk; the list of chunks
//! (one pointer per `CHUNK` elements) is the only thing that doubles.

use std::ops::{Index, IndexMut};

const SHIFT: u32 = 14;
/// Elements per chunk: 1 MiB of pool slots. The first chunk grows from
/// empty like a `Vec` (at most `CHUNK` elements copied per step), so a
/// small pool stays small. (With 256 KiB chunks of slots, the allocator
/// kept 10 % more resident memory per key.)
const CHUNK: usize = 1 << SHIFT;
const MASK: usize = CHUNK - 1;

/// A growable list indexed by position, in chunks of `CHUNK` elements.
#[derive(Debug, Clone)]
pub struct Chunked<T> {
    /// Every chunk but the last is full; none is empty: the length
    /// follows from the number of chunks and the last one's length.
    chunks: Vec<Vec<T>>,
    /// The chunk the last pop emptied, kept for the next push: a list
    /// whose length goes back and forth across a chunk boundary (a pool's
    /// free keys, leased and released) does not allocate each time.
    spare: Option<Vec<T>>,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            spare: None,
        }
    }
}

impl<T> Chunked<T> {
    /// Number of elements. O(1).
    pub fn len(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |last| (self.chunks.len() - 1) * CHUNK + last.len())
    }

    /// True when there are none. O(1).
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Appends `value`. O(1), plus a copy of at most `CHUNK` elements while
    /// the first chunk grows, or of the chunk list (n / `CHUNK` pointers)
    /// when that doubles.
    pub fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(value),
            last => {
                let mut chunk = match (self.spare.take(), last) {
                    (Some(spare), _) => spare,
                    // The first chunk starts small and doubles up to CHUNK.
                    (None, None) => Vec::new(),
                    (None, Some(_)) => Vec::with_capacity(CHUNK),
                };
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
    }

    /// Removes and returns the last element. O(1).
    pub fn pop(&mut self) -> Option<T> {
        let chunk = self.chunks.last_mut()?;
        let value = chunk.pop()?;
        if chunk.is_empty() {
            self.spare = self.chunks.pop();
        }
        Some(value)
    }

    /// The element at `i`, if `i < len` (every chunk before the last is
    /// full, so the chunk's own bounds say it). O(1).
    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i >> SHIFT)?.get(i & MASK)
    }

    /// The element at `i` to change, if `i < len`. O(1).
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.chunks.get_mut(i >> SHIFT)?.get_mut(i & MASK)
    }

    /// Removes the element at `i`, moving the last one into its place.
    /// O(1). Panics if `i >= len`, as `Vec::swap_remove` does.
    pub fn swap_remove(&mut self, i: usize) -> T {
        let len = self.len();
        assert!(i < len, "swap_remove index {i} out of {len}");
        let last = self.pop().expect("not empty: i < len");
        if i == len - 1 {
            last
        } else {
            std::mem::replace(&mut self[i], last)
        }
    }
}

impl<T: Clone> Chunked<T> {
    /// Appends copies of `value` until there are `len` elements. O(added).
    pub fn resize(&mut self, len: usize, value: T) {
        while self.len() < len {
            self.push(value.clone());
        }
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        self.get(i)
            .unwrap_or_else(|| panic!("index {i} out of {}", self.len()))
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len();
        self.get_mut(i)
            .unwrap_or_else(|| panic!("index {i} out of {len}"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Push(u32),
        Pop,
        SwapRemove(usize),
        Set(usize, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u32>().prop_map(Op::Push),
            2 => Just(Op::Pop),
            1 => any::<usize>().prop_map(Op::SwapRemove),
            1 => (any::<usize>(), any::<u32>()).prop_map(|(i, v)| Op::Set(i, v)),
        ]
    }

    #[test]
    fn growing_past_many_chunks_moves_no_full_chunk() {
        let mut c = Chunked::default();
        for i in 0..CHUNK {
            c.push(i);
        }
        let first = c.chunks[0].as_ptr();
        let n = 3 * CHUNK + 17;
        for i in CHUNK..n {
            c.push(i);
        }
        assert_eq!(
            c.chunks[0].as_ptr(),
            first,
            "the full first chunk stayed put"
        );
        assert_eq!(c.len(), n);
        assert!((0..n).all(|i| c[i] == i));
        assert_eq!(c.get(n), None);
    }

    #[test]
    fn popping_across_a_chunk_boundary_reuses_the_spare_chunk() {
        let mut c = Chunked::default();
        for i in 0..=CHUNK {
            c.push(i);
        }
        let second = c.chunks[1].as_ptr();
        assert_eq!(c.pop(), Some(CHUNK));
        assert_eq!(c.chunks.len(), 1);
        c.push(7);
        assert_eq!(c.chunks[1].as_ptr(), second, "the spare chunk came back");
        assert_eq!(c[CHUNK], 7);
    }

    proptest! {
        #[test]
        fn behaves_as_a_vec(ops in prop::collection::vec(op(), 0..3000), bulk in 0..(2 * CHUNK)) {
            let mut c = Chunked::default();
            let mut v = Vec::new();
            // Start from a size that may sit on either side of a boundary.
            c.resize(bulk, 1u32);
            v.resize(bulk, 1u32);
            for op in ops {
                match op {
                    Op::Push(x) => {
                        c.push(x);
                        v.push(x);
                    }
                    Op::Pop => prop_assert_eq!(c.pop(), v.pop()),
                    Op::SwapRemove(i) if !v.is_empty() => {
                        let i = i % v.len();
                        prop_assert_eq!(c.swap_remove(i), v.swap_remove(i));
                    }
                    Op::SwapRemove(_) => {}
                    Op::Set(i, x) => {
                        let i = i % (v.len() + 1);
                        if let Some(slot) = v.get_mut(i) {
                            *slot = x;
                            c[i] = x;
                        }
                    }
                }
                prop_assert_eq!(c.len(), v.len());
            }
            for (i, x) in v.iter().enumerate() {
                prop_assert_eq!(c.get(i), Some(x));
            }
            prop_assert_eq!(c.get(v.len()), None);
        }
    }
}
