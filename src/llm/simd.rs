//! Helpers shared by Kura's CPU kernels: a 512-bit `exp`, the shifted exponential sums
//! of softmax rows (with a scalar path where AVX-512 is missing), and rows shared out
//! over candle's worker pool.

use std::sync::OnceLock;

/// Whether this CPU has AVX-512 F (checked once).
pub fn has_avx512f() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// `Σ exp(x[i] − max)`, writing each term to `out` when given (same length as `x`).
/// Partial sums of at most 1,024 terms are added in f64, so a 151,936-entry row does
/// not drift as an f32 running sum would.
pub fn exp_shifted(x: &[f32], max: f32, out: Option<&mut [f32]>) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512f() {
        // SAFETY: AVX-512 F is present; the slices are read and written in bounds.
        return unsafe { x86::exp_shifted(x, max, out) };
    }
    let mut sum = 0f64;
    match out {
        Some(out) => {
            for (o, v) in out.iter_mut().zip(x) {
                *o = (v - max).exp();
                sum += *o as f64;
            }
        }
        None => {
            for v in x {
                sum += (v - max).exp() as f64;
            }
        }
    }
    sum
}

/// Runs `f(row index, row, out row)` for every row, the rows shared out over candle's
/// worker pool (a custom op's CPU kernel runs on one thread otherwise).
pub(crate) fn par_rows<T: Copy + Default + Send + Sync>(
    x: &[T],
    width: usize,
    f: impl Fn(usize, &[T], &mut [T]) + Sync,
) -> Vec<T> {
    struct Out<T>(*mut T);
    // SAFETY: each row index is handled by exactly one chunk; the owner waits.
    unsafe impl<T> Send for Out<T> {}
    unsafe impl<T> Sync for Out<T> {}
    let mut out = vec![T::default(); x.len()];
    let rows = x.len() / width.max(1);
    let ptr = Out(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
        let ptr = &ptr;
        for r in range {
            // SAFETY: rows are disjoint and inside `out`.
            let o = unsafe { std::slice::from_raw_parts_mut(ptr.0.add(r * width), width) };
            f(r, &x[r * width..(r + 1) * width], o);
        }
    });
    out
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_shifted(x: &[f32], max: f32, mut out: Option<&mut [f32]>) -> f64 {
        let vmax = _mm512_set1_ps(max);
        let mut total = 0f64;
        let mut i = 0;
        while i < x.len() {
            let end = (i + 1024).min(x.len());
            let mut acc = _mm512_setzero_ps();
            while i < end {
                let n = (end - i).min(16);
                let mask: __mmask16 = if n == 16 {
                    0xFFFF
                } else {
                    ((1u32 << n) - 1) as u16
                };
                let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(i));
                let e = _mm512_maskz_mov_ps(mask, exp(_mm512_sub_ps(v, vmax)));
                if let Some(o) = out.as_deref_mut() {
                    _mm512_mask_storeu_ps(o.as_mut_ptr().add(i), mask, e);
                }
                acc = _mm512_add_ps(acc, e);
                i += n;
            }
            total += _mm512_reduce_add_ps(acc) as f64;
        }
        total
    }

    /// `e^x` (relative error ~1e-7; x ≤ 0 in softmax use, −∞ gives 0): `2^(x·log2 e)`
    /// split into an integer power (applied by `vscalefps`) and a fraction in [−½, ½]
    /// (degree-6 polynomial).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn exp(x: __m512) -> __m512 {
        let t = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E));
        let t = _mm512_max_ps(t, _mm512_set1_ps(-150.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(std::f32::consts::LN_2));
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0 / 120.0));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0 / 24.0));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0 / 6.0));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0));
        _mm512_scalef_ps(p, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_exponential_sums_match_the_scalar_ones() {
        let x: Vec<f32> = (0..3001)
            .map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 20.0)
            .collect();
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut out = vec![0f32; x.len()];
        let sum = exp_shifted(&x, max, Some(&mut out));
        let want: f64 = x.iter().map(|v| ((v - max) as f64).exp()).sum();
        assert!((sum - want).abs() / want < 1e-6, "{sum} vs {want}");
        for (o, v) in out.iter().zip(&x) {
            let e = ((v - max) as f64).exp();
            assert!(
                (*o as f64 - e).abs() <= 1e-6 * e + 1e-30,
                "exp({}) = {o}, want {e}",
                v - max
            );
        }
        assert_eq!(exp_shifted(&[f32::NEG_INFINITY, 0.0], 0.0, None), 1.0);
    }
}
