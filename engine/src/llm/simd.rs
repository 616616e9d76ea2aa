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
        let out = match out {
            Some(o) => {
                assert_eq!(o.len(), x.len());
                o.as_mut_ptr()
            }
            None => std::ptr::null_mut(),
        };
        // SAFETY: AVX-512 F is present; `x` and `out` hold `x.len()` values.
        return unsafe { x86::exp_shifted(x.as_ptr(), x.len(), max, out) };
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

/// [`exp_shifted`] in place: each `x[i]` becomes `exp(x[i] − max)`; returns their sum.
pub fn exp_shifted_in_place(x: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512f() {
        // SAFETY: AVX-512 F is present; each value is read before it is overwritten.
        return unsafe { x86::exp_shifted(x.as_ptr(), x.len(), max, x.as_mut_ptr()) };
    }
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    sum
}

/// The logistic function `σ(v) = 1 / (1 + e^(−v))` of every value, in place (SiLU is
/// `v·σ(v)`).
pub fn sigmoid_in_place(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512f() {
        // SAFETY: AVX-512 F is present; the slice is read and written in bounds.
        unsafe { x86::sigmoid_in_place(v) };
        return;
    }
    for x in v.iter_mut() {
        *x = 1.0 / (1.0 + (-*x).exp());
    }
}

/// Runs `f(row index, row, out row)` for every row, the rows shared out over candle's
/// worker pool (a custom op's CPU kernel runs on one thread otherwise).
pub(crate) fn par_rows<T: Copy + Default + Send + Sync>(
    x: &[T],
    width: usize,
    f: impl Fn(usize, &[T], &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = vec![T::default(); x.len()];
    let rows = x.len() / width.max(1);
    let ptr = crate::matmul::SharedOut::new(&mut out);
    candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
        let ptr = &ptr;
        for r in range {
            // SAFETY: each row index is handled by exactly one chunk, inside `out`; the
            // owner waits.
            let o = unsafe { std::slice::from_raw_parts_mut(ptr.at(r * width), width) };
            f(r, &x[r * width..(r + 1) * width], o);
        }
    });
    out
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// `Σ exp(x[i] − max)` over `len` values at `x`, each term also written to `out`
    /// unless it is null (`out` may be `x` itself).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_shifted(x: *const f32, len: usize, max: f32, out: *mut f32) -> f64 {
        let vmax = _mm512_set1_ps(max);
        let mut total = 0f64;
        let mut i = 0;
        while i < len {
            let end = (i + 1024).min(len);
            let mut acc = _mm512_setzero_ps();
            while i < end {
                let n = (end - i).min(16);
                let mask = tail_mask(n);
                let v = _mm512_maskz_loadu_ps(mask, x.add(i));
                let e = _mm512_maskz_mov_ps(mask, exp(_mm512_sub_ps(v, vmax)));
                if !out.is_null() {
                    _mm512_mask_storeu_ps(out.add(i), mask, e);
                }
                acc = _mm512_add_ps(acc, e);
                i += n;
            }
            total += _mm512_reduce_add_ps(acc) as f64;
        }
        total
    }

    /// `σ(v) = 1 / (1 + e^(−v))` in place.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sigmoid_in_place(v: &mut [f32]) {
        let one = _mm512_set1_ps(1.0);
        let mut i = 0;
        while i < v.len() {
            let n = (v.len() - i).min(16);
            let mask = tail_mask(n);
            let x = _mm512_maskz_loadu_ps(mask, v.as_ptr().add(i));
            let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
            let s = _mm512_div_ps(one, _mm512_add_ps(one, e));
            _mm512_mask_storeu_ps(v.as_mut_ptr().add(i), mask, s);
            i += n;
        }
    }

    #[inline]
    fn tail_mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xFFFF
        } else {
            ((1u32 << n) - 1) as u16
        }
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
        let mut inplace = x.clone();
        assert_eq!(exp_shifted_in_place(&mut inplace, max), sum);
        assert_eq!(inplace, out);
    }

    #[test]
    fn sigmoid_matches_the_scalar_formula_including_the_tails() {
        let x: Vec<f32> = (0..1001).map(|i| (i as f32 - 500.0) / 5.0).collect();
        let mut s = x.clone();
        sigmoid_in_place(&mut s);
        for (v, got) in x.iter().zip(&s) {
            let want = 1.0 / (1.0 + (-(*v as f64)).exp());
            assert!(
                (*got as f64 - want).abs() < 1e-6,
                "σ({v}) = {got}, want {want}"
            );
        }
        assert!((0.0..1e-20).contains(&s[0]), "σ(−100) = {}", s[0]);
        assert!(s[1000] > 0.999_999);
    }
}
