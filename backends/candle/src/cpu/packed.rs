//! Weights laid out once, at upload, for the CPU matmul kernels.
//!
//! A `[N, K]` matrix is stored as panels of [`PANEL`] rows, each panel `[K][PANEL]`: exactly what
//! the GEMM microkernel reads, so prompt processing never re-packs weights, and what the
//! matrix-vector kernel streams sequentially when decoding. Rows past `N` in the last panel are
//! zero.

use super::gemm::PANEL;
use super::huge_pages::HugePageVec;

/// An f32 `[N, K]` matrix in panel layout.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    data: HugePageVec,
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
        PackedMatrix { data, dims: [n, k] }
    }

    /// `[N, K]`.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Rows.
    pub fn n(&self) -> usize {
        self.dims[0]
    }

    /// Columns.
    pub fn k(&self) -> usize {
        self.dims[1]
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

    /// Row `r` into `out` (`K` values).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let panel = self.panel(r / PANEL);
        for (kk, o) in out.iter_mut().enumerate() {
            *o = panel[kk * PANEL + r % PANEL];
        }
    }

    /// The row-major matrix.
    pub fn unpack(&self) -> Vec<f32> {
        let (n, k) = (self.n(), self.k());
        let mut w = vec![0f32; n * k];
        for (r, row) in w.chunks_exact_mut(k.max(1)).enumerate().take(n) {
            self.row_into(r, row);
        }
        w
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
