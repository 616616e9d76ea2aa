//! Attention for one new token over the KV cache, on x86-64 CPUs with AVX-512.
//!
//! Why not candle's ops: a decode step's attention is a handful of tiny matmuls
//! (`[rep, d] × [d, len]`, then `[rep, len] × [len, d]` per KV group) and a softmax.
//! Through candle's general matmul they ran at a few GFLOP/s: on the default model,
//! decode after a 2,048-token prompt was 20% slower than after a 512-token one, almost
//! all of it in attention. Here each KV group's keys and values are read once, in place
//! from the cache, for all the query heads that share them; the softmax uses a 512-bit
//! `exp`. The result agrees with [`super::layers::attention`] to float rounding
//! (tested below).

use candle_core::{CpuStorage, Storage, Tensor};
use std::sync::OnceLock;

/// Whether this CPU runs the kernel (AVX-512 F; off with `KURA_CPU_KERNELS=candle`).
pub fn cpu_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        std::env::var("KURA_CPU_KERNELS").map_or(true, |v| v != "candle")
            && crate::llm::simd::has_avx512f()
    })
}

/// A read-only f32 view of a `[1, heads, len, d]` tensor whose last dimension is
/// contiguous: `base + h·head_stride + t·d`.
struct View<'a> {
    data: &'a [f32],
    base: usize,
    head_stride: usize,
    row_stride: usize,
}

impl View<'_> {
    fn row(&self, h: usize, t: usize, d: usize) -> &[f32] {
        let o = self.base + h * self.head_stride + t * self.row_stride;
        &self.data[o..o + d]
    }
}

/// `softmax(q·kᵀ/√d)·v` for `q: [1, heads, 1, d]`, `k`, `v: [1, kv_heads, len, d]` (f32 on
/// the CPU, last dimension contiguous — the KV cache's views are), returning
/// `[1, 1, heads·d]`; `None` when the inputs do not fit that description (the caller
/// then uses the general path).
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if !cpu_supported() || !q.device().is_cpu() {
        return Ok(None);
    }
    let (b, heads, seq, d) = q.dims4()?;
    let (_, kv_heads, len, dk) = k.dims4()?;
    if b != 1 || seq != 1 || dk != d || v.dims() != k.dims() || heads % kv_heads != 0 || len == 0 {
        return Ok(None);
    }
    if d % 16 != 0 {
        return Ok(None);
    }
    let q = q.contiguous()?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (
        Storage::Cpu(CpuStorage::F32(qd)),
        Storage::Cpu(CpuStorage::F32(kd)),
        Storage::Cpu(CpuStorage::F32(vd)),
    ) = (&*qs, &*ks, &*vs)
    else {
        return Ok(None);
    };
    let view = |data, l: &candle_core::Layout| {
        let st = l.stride();
        (st[3] == 1).then(|| View {
            data,
            base: l.start_offset(),
            head_stride: st[1],
            row_stride: st[2],
        })
    };
    let (Some(kv), Some(vv)) = (view(kd, kl), view(vd, vl)) else {
        return Ok(None);
    };
    let qv = &qd[ql.start_offset()..ql.start_offset() + heads * d];
    let rep = heads / kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    // One unit per query head: heads of one group read the same keys, which stay in
    // the core's cache between them.
    let out = crate::llm::simd::par_rows(qv, d, |h, qh, y| {
        let mut scores = vec![0f32; len];
        // SAFETY: `cpu_supported()` checked AVX-512 F; `y` is this head's `d` outputs.
        unsafe { x86::head(qh, &kv, &vv, h / rep, len, d, scale, &mut scores, y) };
    });
    Ok(Some(Tensor::from_vec(out, (1, 1, heads * d), q.device())?))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::View;
    use crate::llm::simd::x86::exp;
    use std::arch::x86_64::*;

    /// One query head: scores, softmax, weighted sum of the values.
    ///
    /// # Safety
    /// AVX-512 F; `d` a multiple of 16; `scores` holds `len`, `y` holds `d`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn head(
        q: &[f32],
        k: &View,
        v: &View,
        g: usize,
        len: usize,
        d: usize,
        scale: f32,
        scores: &mut [f32],
        y: &mut [f32],
    ) {
        let chunks = d / 16;
        let mut max = f32::NEG_INFINITY;
        for (t, s) in scores[..len].iter_mut().enumerate() {
            let kt = k.row(g, t, d).as_ptr();
            // Two accumulators: two FMA chains in flight.
            let mut a = [_mm512_setzero_ps(); 2];
            for c in 0..chunks {
                a[c & 1] = _mm512_fmadd_ps(
                    _mm512_loadu_ps(q.as_ptr().add(16 * c)),
                    _mm512_loadu_ps(kt.add(16 * c)),
                    a[c & 1],
                );
            }
            *s = _mm512_reduce_add_ps(_mm512_add_ps(a[0], a[1])) * scale;
            max = max.max(*s);
        }
        // exp(s − max), 16 at a time, and the sum.
        let vmax = _mm512_set1_ps(max);
        let mut sum = _mm512_setzero_ps();
        let mut t = 0;
        while t + 16 <= len {
            let e = exp(_mm512_sub_ps(_mm512_loadu_ps(scores.as_ptr().add(t)), vmax));
            _mm512_storeu_ps(scores.as_mut_ptr().add(t), e);
            sum = _mm512_add_ps(sum, e);
            t += 16;
        }
        if t < len {
            let mask: __mmask16 = (1u32 << (len - t)) as u16 - 1;
            let x = _mm512_maskz_loadu_ps(mask, scores.as_ptr().add(t));
            let e = _mm512_maskz_mov_ps(mask, exp(_mm512_sub_ps(x, vmax)));
            _mm512_mask_storeu_ps(scores.as_mut_ptr().add(t), mask, e);
            sum = _mm512_add_ps(sum, e);
        }
        let inv = 1.0 / _mm512_reduce_add_ps(sum);
        // y = Σ p_t v_t, 4 × 16 outputs at a time.
        let mut c = 0;
        while c < chunks {
            let n = (chunks - c).min(4);
            let mut acc = [_mm512_setzero_ps(); 4];
            for (t, &p) in scores[..len].iter().enumerate() {
                let vt = v.row(g, t, d).as_ptr().add(16 * c);
                let pv = _mm512_set1_ps(p);
                for (j, a) in acc[..n].iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(pv, _mm512_loadu_ps(vt.add(16 * j)), *a);
                }
            }
            let vinv = _mm512_set1_ps(inv);
            for (j, a) in acc[..n].iter().enumerate() {
                _mm512_storeu_ps(y.as_mut_ptr().add(16 * (c + j)), _mm512_mul_ps(*a, vinv));
            }
            c += n;
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::View;
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn head(
        _: &[f32],
        _: &View,
        _: &View,
        _: usize,
        _: usize,
        _: usize,
        _: f32,
        _: &mut [f32],
        _: &mut [f32],
    ) {
        unreachable!("cpu_supported() is false off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::layers;
    use candle_core::{Device, Tensor};

    /// Against the general path on a KV-cache-shaped view (a narrow of a bigger
    /// buffer), for several cache lengths including ones that are not multiples of 16.
    #[test]
    fn decode_attention_matches_the_general_path() {
        if !cpu_supported() {
            eprintln!("no AVX-512 here: the general path serves decode attention");
            return;
        }
        let dev = Device::Cpu;
        for (heads, kv_heads, d, len) in [
            (12, 2, 128, 1),
            (12, 2, 128, 37),
            (14, 2, 64, 300),
            (4, 4, 32, 16),
        ] {
            let cap = len + 9;
            let kbuf = Tensor::randn(0f32, 1.0, (1, kv_heads, cap, d), &dev).unwrap();
            let vbuf = Tensor::randn(0f32, 1.0, (1, kv_heads, cap, d), &dev).unwrap();
            let k = kbuf.narrow(2, 0, len).unwrap();
            let v = vbuf.narrow(2, 0, len).unwrap();
            // Large queries make the softmax peaked, as in real models.
            let q = (Tensor::randn(0f32, 1.0, (1, heads, 1, d), &dev).unwrap() * 3.0).unwrap();
            let want =
                layers::attention(&q, &k.contiguous().unwrap(), &v.contiguous().unwrap(), None)
                    .unwrap();
            let got = attend(&q, &k, &v)
                .unwrap()
                .expect("the kernel takes this shape");
            assert_eq!(got.dims(), want.dims());
            let diff = crate::llm::fused::max_abs_diff(&got, &want);
            assert!(
                diff < 1e-4,
                "{heads}/{kv_heads} heads, d {d}, len {len}: max diff {diff}"
            );
        }
    }

    #[test]
    fn prompts_and_other_shapes_go_to_the_general_path() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 4, 3, 32), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 2, 3, 32), candle_core::DType::F32, &dev).unwrap();
        assert!(
            attend(&q, &k, &k).unwrap().is_none(),
            "3 query positions: not a decode step"
        );
    }
}
