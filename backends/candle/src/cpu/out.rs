//! The result of a matrix product as its threads write it in place.

/// A result matrix that several threads write: element `(i, j)` at `ptr + i * ld + j`, inside
/// `len` values. A raw pointer because the threads of a matrix product write disjoint columns of
/// the same rows, which no set of disjoint slices describes.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    ptr: *mut f32,
    ld: usize,
    len: usize,
}

// SAFETY: an `Out` is only written through `row`, whose callers guarantee that no two threads
// (and no live reference) touch the same elements.
unsafe impl Send for Out {}
// SAFETY: as above.
unsafe impl Sync for Out {}

impl Out {
    /// `c` with rows `ld` apart.
    pub(crate) fn of(c: &mut [f32], ld: usize) -> Out {
        Out {
            ptr: c.as_mut_ptr(),
            ld,
            len: c.len(),
        }
    }

    /// The same rows from column `j` on.
    pub(crate) fn columns_from(self, j: usize) -> Out {
        assert!(j <= self.len);
        Out {
            // SAFETY: `j <= len`: at most one past the end of the same allocation.
            ptr: unsafe { self.ptr.add(j) },
            ld: self.ld,
            len: self.len - j,
        }
    }

    /// Row `i`, columns `j..j + cols`.
    ///
    /// # Safety
    /// The `Out` was made from a slice that is still mutably borrowed for it, and nothing else
    /// reads or writes these elements while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn row(&self, i: usize, j: usize, cols: usize) -> &mut [f32] {
        let at = i * self.ld + j;
        assert!(
            at + cols <= self.len,
            "row {i} columns {j}+{cols} outside the result"
        );
        // SAFETY: inside the `len` values from `ptr` (asserted); exclusive by the contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), cols) }
    }
}
