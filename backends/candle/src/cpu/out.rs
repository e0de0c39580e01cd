//! The result of a matrix product as its threads write it in place.

/// A result matrix that several threads write: element `(i, j)` at `ptr + i * ld + j`, inside
/// `len` values. A raw pointer because the threads of a matrix product write disjoint columns of
/// the same rows, which no set of disjoint slices describes.
///
/// One made by [`Out::of_uninit`] starts uninitialized: each element's first write goes through
/// [`Out::write`] or a store through [`Out::block`]'s pointer, and only then may [`Out::row`]
/// (or a load) reach it.
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

    /// `c`, not yet initialized, with rows `ld` apart (see the type's rule for first writes).
    pub(crate) fn of_uninit(c: &mut [std::mem::MaybeUninit<f32>], ld: usize) -> Out {
        Out {
            ptr: c.as_mut_ptr().cast(),
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

    /// Copies `src` to row `i` from column `j` (a first write included: no reference to the
    /// destination is made).
    ///
    /// # Safety
    /// As for [`Out::row`]: nothing else reads or writes these elements meanwhile.
    pub(crate) unsafe fn write(&self, i: usize, j: usize, src: &[f32]) {
        let at = i * self.ld + j;
        assert!(
            at + src.len() <= self.len,
            "row {i} columns {j}+{} outside the result",
            src.len()
        );
        // SAFETY: the destination is inside the `len` values from `ptr` (asserted), exclusive by
        // the contract, and cannot overlap `src` (a shared borrow of other memory).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(at), src.len()) }
    }

    /// Distance between rows.
    pub(crate) fn ld(&self) -> usize {
        self.ld
    }

    /// A pointer to element `(i, j)`, after checking that `rows` rows of `cols` values from
    /// there lie inside the result. Writing through it is the caller's to justify, as for
    /// [`Out::row`].
    pub(crate) fn block(&self, i: usize, j: usize, rows: usize, cols: usize) -> *mut f32 {
        assert!(
            rows > 0 && (i + rows - 1) * self.ld + j + cols <= self.len,
            "rows {i}+{rows} columns {j}+{cols} outside the result"
        );
        // SAFETY: inside the `len` values from `ptr` (asserted).
        unsafe { self.ptr.add(i * self.ld + j) }
    }
}
