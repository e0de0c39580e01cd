//! Weights laid out once, at upload, for the CPU matmul kernels.
//!
//! A `[N, K]` matrix is stored as panels of [`PANEL`] rows, each panel `[K][PANEL]`: exactly what
//! the GEMM microkernel reads, so prompt processing never re-packs weights, and what the
//! matrix-vector kernel streams sequentially when decoding. Rows past `N` in the last panel are
//! zero. A plain matmul's `[K, N]` right operand (GPT-2's `Conv1D` weights) is packed the same
//! way from its columns, so both kinds of weight take the same kernels; it keeps its own shape.

use super::gemm::PANEL;
use super::huge_pages::HugePageVec;

/// An f32 `[N, K]` matrix in panel layout.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    data: HugePageVec,
    /// `[N, K]` of a product with it.
    nk: [usize; 2],
    /// Packed from a `[K, N]` matrix (a plain matmul's right operand) rather than `[N, K]`.
    from_columns: bool,
    /// The shape as given: `nk`, or `[K, N]` when `from_columns`.
    dims: [usize; 2],
}

impl PackedMatrix {
    /// Packs the row-major `w` (`n` rows of `k`).
    pub fn pack(w: &[f32], n: usize, k: usize) -> PackedMatrix {
        Self::pack_reporting(w, n, k, |_| {})
    }

    /// [`pack`](Self::pack), telling `read` which rows of `w` it has finished reading, a few MiB
    /// at a time and in order, so that their source (a memory-mapped file) can let them go
    /// while the rest is packed.
    pub fn pack_reporting(
        w: &[f32],
        n: usize,
        k: usize,
        mut read: impl FnMut(std::ops::Range<usize>),
    ) -> PackedMatrix {
        /// Source bytes per report.
        const REPORT_BYTES: usize = 4 << 20;
        assert_eq!(w.len(), n * k, "a {n}x{k} matrix needs {} values", n * k);
        let panels = n.div_ceil(PANEL);
        let mut data = HugePageVec::zeroed(panels * k * PANEL);
        let rows_per_report = (REPORT_BYTES / (4 * k.max(1))).max(1);
        let mut reported = 0;
        for (r, row) in w.chunks_exact(k.max(1)).enumerate().take(n) {
            let (p, j) = (r / PANEL, r % PANEL);
            let panel = &mut data[p * k * PANEL..(p + 1) * k * PANEL];
            for (kk, &v) in row.iter().enumerate() {
                panel[kk * PANEL + j] = v;
            }
            if r + 1 - reported == rows_per_report || r + 1 == n {
                read(reported..r + 1);
                reported = r + 1;
            }
        }
        PackedMatrix {
            data,
            nk: [n, k],
            from_columns: false,
            dims: [n, k],
        }
    }

    /// Packs the row-major `b` (`k` rows of `n`), the right operand of a plain matmul
    /// `x · B`: the result computes as [`pack`](Self::pack) of `Bᵀ` would, and keeps `B`'s shape.
    pub fn pack_columns(b: &[f32], k: usize, n: usize) -> PackedMatrix {
        assert_eq!(b.len(), n * k, "a {k}x{n} matrix needs {} values", n * k);
        let panels = n.div_ceil(PANEL);
        let mut data = HugePageVec::zeroed(panels * k * PANEL);
        for (kk, row) in b.chunks_exact(n.max(1)).enumerate().take(k) {
            for (p, part) in row.chunks(PANEL).enumerate() {
                let at = p * k * PANEL + kk * PANEL;
                data[at..at + part.len()].copy_from_slice(part);
            }
        }
        PackedMatrix {
            data,
            nk: [n, k],
            from_columns: true,
            dims: [k, n],
        }
    }

    /// True when packed by [`pack_columns`](Self::pack_columns): a plain matmul's operand.
    pub fn from_columns(&self) -> bool {
        self.from_columns
    }

    /// The shape of the matrix as it was given: `[N, K]`, or `[K, N]` when
    /// [`from_columns`](Self::from_columns).
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Columns of a product with it (rows of `[N, K]`).
    pub fn n(&self) -> usize {
        self.nk[0]
    }

    /// Depth of a product with it.
    pub fn k(&self) -> usize {
        self.nk[1]
    }

    /// Panel `p` (`K × PANEL` values).
    pub fn panel(&self, p: usize) -> &[f32] {
        let k = self.k();
        &self.data[p * k * PANEL..(p + 1) * k * PANEL]
    }

    /// Number of panels.
    pub fn panels(&self) -> usize {
        self.n().div_ceil(PANEL)
    }

    /// Row `r` of `[N, K]` into `out` (`K` values).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let panel = self.panel(r / PANEL);
        for (kk, o) in out.iter_mut().enumerate() {
            *o = panel[kk * PANEL + r % PANEL];
        }
    }

    /// The row-major matrix, in the shape it was given ([`dims`](Self::dims)).
    pub fn unpack(&self) -> Vec<f32> {
        let (n, k) = (self.n(), self.k());
        let mut w = vec![0f32; n * k];
        for (r, row) in w.chunks_exact_mut(k.max(1)).enumerate().take(n) {
            self.row_into(r, row);
        }
        if !self.from_columns {
            return w;
        }
        let mut b = vec![0f32; n * k];
        for (r, row) in w.chunks_exact(k.max(1)).enumerate().take(n) {
            for (kk, &v) in row.iter().enumerate() {
                b[kk * n + r] = v;
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_rows() {
        let (n, k) = (37, 5);
        let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
        let p = PackedMatrix::pack(&w, n, k);
        assert_eq!(p.panels(), 2);
        assert_eq!(p.unpack(), w);
        let mut row = vec![0f32; k];
        p.row_into(33, &mut row);
        assert_eq!(row, w[33 * k..34 * k]);
        // Padding rows of the last panel are zero.
        assert_eq!(p.panel(1)[PANEL - 1], 0.0);
    }

    /// A `[K, N]` operand packed from its columns is the packing of its transpose, and unpacks
    /// to itself.
    #[test]
    fn columns_pack_as_the_transpose() {
        let (k, n) = (5, 37);
        let b: Vec<f32> = (0..k * n).map(|i| i as f32).collect();
        let mut bt = vec![0f32; n * k];
        for kk in 0..k {
            for j in 0..n {
                bt[j * k + kk] = b[kk * n + j];
            }
        }
        let p = PackedMatrix::pack_columns(&b, k, n);
        let t = PackedMatrix::pack(&bt, n, k);
        assert_eq!((p.n(), p.k(), p.dims()), (n, k, &[k, n][..]));
        assert!(p.from_columns() && !t.from_columns());
        assert_eq!(
            (0..p.panels()).map(|i| p.panel(i)).collect::<Vec<_>>(),
            (0..t.panels()).map(|i| t.panel(i)).collect::<Vec<_>>()
        );
        assert_eq!(p.unpack(), b);
    }

    /// Every row is reported read exactly once, in order, in parts of at most 4 MiB of source.
    #[test]
    fn reports_each_row_read_once_in_order() {
        let (n, k) = (3000, 1000);
        let w = vec![1f32; n * k];
        let mut parts = Vec::new();
        let p = PackedMatrix::pack_reporting(&w, n, k, |rows| parts.push(rows));
        assert_eq!(p.unpack(), w);
        let mut next = 0;
        for rows in &parts {
            assert_eq!(rows.start, next);
            assert!(
                !rows.is_empty() && rows.len() * k * 4 <= 4 << 20,
                "{rows:?}"
            );
            next = rows.end;
        }
        assert_eq!(next, n);
        assert!(parts.len() > 1);
    }
}
