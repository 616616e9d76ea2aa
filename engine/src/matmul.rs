//! Checked matrix products over the gemm crate, for the CPU code that runs its own
//! passes on plain slices: passage embedding (`embed::cpu`), the frozen projections of
//! the training ops (`llm::linear`) and the LoRA training step (`train::cpu_step`).
//!
//! gemm takes raw pointers, strides and nineteen arguments; each of those places had
//! its own `unsafe` calls. Here an operand is a slice with its strides ([`Mat`]) whose
//! reach is checked before the call, so a wrong stride or length panics instead of
//! reading past a buffer, and [`SharedOut`] is the one pointer type for parallel tasks
//! that write disjoint parts of one output (attention heads, weight panels, rows).

/// A matrix operand: element `(i, j)` at `data[i·rs + j·cs]`.
#[derive(Debug)]
pub struct Mat<'a, T> {
    data: &'a [T],
    rs: usize,
    cs: usize,
}

impl<T> Clone for Mat<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Mat<'_, T> {}

impl<'a, T> Mat<'a, T> {
    /// A row-major matrix of `cols` columns.
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// Row-major with row stride `rs` (a column block of a wider matrix).
    pub fn strided(data: &'a [T], rs: usize) -> Self {
        Self { data, rs, cs: 1 }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// The matrix from row `r` on.
    pub fn skip_rows(self, r: usize) -> Self {
        Self {
            data: &self.data[r * self.rs..],
            ..self
        }
    }

    fn check(&self, m: usize, n: usize) {
        if m > 0 && n > 0 {
            assert!(
                (m - 1) * self.rs + (n - 1) * self.cs < self.data.len(),
                "matrix operand out of bounds"
            );
        }
    }
}

/// `dst[m×n] = (acc ? dst : 0) + beta·a[m×k]·b[k×n]`, `dst` row-major with row stride
/// `dst_rs`; `threads > 1` shares the work out over rayon.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Copy + From<f32> + 'static>(
    dst: &mut [T],
    dst_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<T>,
    b: Mat<T>,
    acc: bool,
    beta: T,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len(), "output out of bounds");
    // SAFETY: the output range was checked above, the operands in `matmul_raw`.
    unsafe { matmul_raw(dst.as_mut_ptr(), dst_rs, m, n, k, a, b, acc, beta, threads) }
}

/// [`matmul`] into a raw output (blocks of one matrix written by several tasks at
/// once, through a [`SharedOut`]).
///
/// # Safety
/// `dst` must be valid for writes of `m` rows of `n` values with row stride `dst_rs`,
/// and no other thread may touch those values meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_raw<T: Copy + From<f32> + 'static>(
    dst: *mut T,
    dst_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<T>,
    b: Mat<T>,
    acc: bool,
    beta: T,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            for i in 0..m {
                std::ptr::write_bytes(dst.add(i * dst_rs), 0, n);
            }
        }
        return;
    }
    a.check(m, k);
    b.check(k, n);
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        acc,
        a.data.as_ptr(),
        a.cs as isize,
        a.rs as isize,
        b.data.as_ptr(),
        b.cs as isize,
        b.rs as isize,
        T::from(1.0),
        beta,
        false,
        false,
        false,
        par,
    );
}

/// An output pointer shared by parallel tasks, each writing a disjoint set of its
/// elements (its head's columns, its weight panel, its rows) while the owner waits.
#[derive(Debug)]
pub struct SharedOut<T>(*mut T);

impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedOut<T> {}
// SAFETY: writers touch disjoint elements (see the type's doc); the buffer outlives them.
unsafe impl<T> Send for SharedOut<T> {}
unsafe impl<T> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// Shares `out` (keep it borrowed, and untouched, until the tasks are done).
    pub fn new(out: &mut [T]) -> Self {
        Self(out.as_mut_ptr())
    }

    /// The element `offset` places in (a method, so closures capture the whole `Send`
    /// wrapper rather than its raw pointer).
    pub fn at(&self, offset: usize) -> *mut T {
        self.0.wrapping_add(offset)
    }
}
