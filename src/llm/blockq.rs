//! Prefill for the GGUF block types that have no Kura kernel: Q4_0, Q4_1, Q5_0, Q5_1 and
//! Q8_0 (32 values a block, one scale, some an offset).
//!
//! Why: the 0.5B model — Kura's LoRA base, and what a tuned adapter is served on — is
//! mostly Q5_0 (its 896 input features are no multiple of the K-quants' 256), and
//! SmolLM2 is Q4_1. candle 0.11 multiplies those types by a scalar dot product per
//! block (`GgmlType::vec_dot`, 85% of a prefill's samples), which made the 0.5B's
//! prefill 33× slower than llama.cpp's (`docs/engineering-notes/llmref.md`).
//!
//! A prefill multiplies many activation rows by the same weight, so it is compute-bound
//! and f32 gemm is the fastest product on this CPU: every worker dequantizes a strip of
//! weight rows (a few hundred KiB, it stays in cache) with candle's own `to_float` and
//! multiplies all activation rows by it with gemm, writing its columns of the output.
//! The dequantization is one pass over the weight per call, small beside the product
//! once there are [`MIN_ROWS`] rows.
//!
//! Decode (fewer rows) is bound by reading the weight, so the weight is not widened:
//! the activations are quantized to 8 bits per 32 values (ggml's Q8_0) and every weight
//! block is unpacked in a register to 32 unsigned bytes `u` with `w = d·u + c` (`c` the
//! type's offset, `-16·d` for Q5_0, or its stored minimum), multiplied by one VNNI
//! instruction (`vpdpbusd`), scaled by `d·d_x` and corrected by `c·Σx` — on CPUs with
//! AVX-512 VNNI ([`super::kquant::cpu_supported`]); elsewhere decode stays on candle's
//! path.

use super::kquant;
use crate::matmul::{matmul_raw, Mat, SharedOut};
use candle_core::quantized::k_quants::{
    BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, GgmlType,
};
use candle_core::quantized::GgmlDType;
use std::cell::RefCell;

/// From this many activation rows on, [`matmul`] dequantizes strips and runs gemm
/// (prefill); below it, it runs the 8-bit dot products (decode).
pub const MIN_ROWS: usize = 16;

/// Values per block of these types.
const QK: usize = 32;

/// Weight rows dequantized at a time, at most.
const STRIP_ROWS: usize = 64;

thread_local! {
    static STRIP: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether [`matmul`] handles `m` activation rows by weights of this type with `k`
/// input features.
pub fn supports_rows(dtype: GgmlDType, k: usize, m: usize) -> bool {
    supports(dtype, k) && (m >= MIN_ROWS || kquant::cpu_supported())
}

/// Whether [`matmul`] handles prefills by weights of this type with `k` input features.
pub fn supports(dtype: GgmlDType, k: usize) -> bool {
    matches!(
        dtype,
        GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q8_0
    ) && k.is_multiple_of(dtype.block_size())
        && std::env::var("KURA_CPU_KERNELS").map_or(true, |v| v != "candle")
}

/// `y[i, j] = Σ_l x[i, l] · w[j, l]`: `x` is `m × k` f32 (row-major), `w` is `n` rows of
/// `k` values in `dtype`'s GGUF blocks, `y` is `m × n`.
///
/// # Panics
/// If the sizes disagree or [`supports_rows`] says no.
pub fn matmul(dtype: GgmlDType, w: &[u8], n: usize, k: usize, x: &[f32], m: usize, y: &mut [f32]) {
    assert!(
        supports_rows(dtype, k, m),
        "{dtype:?} with {k} input features, {m} rows"
    );
    let row_bytes = k / dtype.block_size() * dtype.type_size();
    assert_eq!(
        w.len(),
        n * row_bytes,
        "weight bytes for {n} × {k} {dtype:?}"
    );
    assert_eq!(x.len(), m * k);
    assert_eq!(y.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if m < MIN_ROWS {
        decode(dtype, w, row_bytes, n, k, x, y);
        return;
    }
    // Strips of 16 to 64 rows, at least two per worker so neither core waits long.
    let threads = candle_core::utils::get_num_threads().max(1);
    let strip = n
        .div_ceil(2 * threads)
        .next_multiple_of(16)
        .clamp(16, STRIP_ROWS);
    let out = SharedOut::new(y);
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(strip), |strips| {
        let out = &out;
        STRIP.with(|buf| {
            let mut buf = buf.borrow_mut();
            for s in strips {
                let n0 = s * strip;
                let rows = (n - n0).min(strip);
                buf.resize(rows * k, 0.0);
                let wt = &mut buf[..rows * k];
                dequantize(dtype, &w[n0 * row_bytes..(n0 + rows) * row_bytes], wt);
                // SAFETY: columns n0..n0 + rows of every output row belong to this strip
                // only, and lie inside `y` (sizes asserted above).
                unsafe {
                    matmul_raw(
                        out.at(n0),
                        n,
                        m,
                        rows,
                        k,
                        Mat::rows(x, k),
                        Mat::rows(wt, k).t(),
                        false,
                        1.0,
                        1,
                    )
                };
            }
        });
    });
}

/// 32 activations quantized to 8 bits: `x ≈ d · qs`; `sum = d · Σ qs`.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct XBlock {
    qs: [i8; QK],
    d: f32,
    sum: f32,
}

/// Quantizes a row of `k` activations (round to nearest, scale = max |x| / 127).
fn quantize_row(x: &[f32]) -> Vec<XBlock> {
    x.chunks_exact(QK)
        .map(|v| {
            let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
            let mut b = XBlock {
                qs: [0; QK],
                d: 0.0,
                sum: 0.0,
            };
            if amax > 0.0 && amax.is_finite() {
                let id = 127.0 / amax;
                for (q, x) in b.qs.iter_mut().zip(v) {
                    *q = (x * id).round().clamp(-127.0, 127.0) as i8;
                }
                b.d = amax / 127.0;
                b.sum = b.d * b.qs.iter().map(|&q| q as i32).sum::<i32>() as f32;
            } else if !amax.is_finite() {
                b.d = f32::NAN;
                b.sum = f32::NAN;
            }
            b
        })
        .collect()
}

/// The 8-bit decode product (see the module doc), output rows shared out over candle's
/// worker pool.
#[allow(clippy::too_many_arguments)]
fn decode(
    dtype: GgmlDType,
    w: &[u8],
    row_bytes: usize,
    n: usize,
    k: usize,
    x: &[f32],
    y: &mut [f32],
) {
    assert!(kquant::cpu_supported());
    let xq: Vec<Vec<XBlock>> = x.chunks_exact(k).map(quantize_row).collect();
    let out = SharedOut::new(y);
    candle_core::utils::barrier_pool().execute_chunked(n, |rows| {
        let out = &out;
        for j in rows {
            let wrow = &w[j * row_bytes..(j + 1) * row_bytes];
            for (i, xs) in xq.iter().enumerate() {
                // SAFETY: `cpu_supported()` checked the instructions; `wrow` holds
                // `xs.len()` blocks of `dtype` (sizes asserted by the caller).
                let v = unsafe { x86::dot(dtype, wrow, xs) };
                // SAFETY: (i, j) is written by this chunk only and lies inside `y`.
                unsafe { *out.at(i * n + j) = v };
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::XBlock;
    use candle_core::quantized::GgmlDType;
    use std::arch::x86_64::*;

    /// The dot product of one weight row (`xs.len()` blocks of `dtype`) with a
    /// quantized activation row.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW/VL/VNNI, FMA and F16C; `w` must hold `xs.len()`
    /// blocks of `dtype` (one of the five 32-value types).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn dot(dtype: GgmlDType, w: &[u8], xs: &[XBlock]) -> f32 {
        let size = dtype.type_size();
        assert!(w.len() >= xs.len() * size);
        let m4 = _mm_set1_epi8(0x0F);
        let mut acc = _mm256_setzero_ps();
        let mut corr = 0f32;
        for (b, x) in xs.iter().enumerate() {
            let p = w.as_ptr().add(b * size);
            let f16 = |o: usize| {
                let bits = u16::from_le_bytes([*p.add(o), *p.add(o + 1)]);
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
            };
            let nibbles = |o: usize| {
                // Bytes 0..15: low nibbles (values 0..15); 16..31: high (values 16..31).
                let qs = _mm_loadu_si128(p.add(o).cast());
                let lo = _mm_and_si128(qs, m4);
                let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), m4);
                _mm256_set_m128i(hi, lo)
            };
            let fifth_bit = |u: __m256i, o: usize| {
                let qh =
                    u32::from_le_bytes([*p.add(o), *p.add(o + 1), *p.add(o + 2), *p.add(o + 3)]);
                _mm256_mask_add_epi8(u, qh, u, _mm256_set1_epi8(16))
            };
            // `w = d·u + c`.
            let (d, u, c) = match dtype {
                GgmlDType::Q4_0 => {
                    let d = f16(0);
                    (d, nibbles(2), -8.0 * d)
                }
                GgmlDType::Q4_1 => (f16(0), nibbles(4), f16(2)),
                GgmlDType::Q5_0 => {
                    let d = f16(0);
                    (d, fifth_bit(nibbles(6), 2), -16.0 * d)
                }
                GgmlDType::Q5_1 => (f16(0), fifth_bit(nibbles(8), 4), f16(2)),
                GgmlDType::Q8_0 => {
                    let d = f16(0);
                    let q = _mm256_loadu_si256(p.add(2).cast());
                    (d, _mm256_xor_si256(q, _mm256_set1_epi8(-128)), -128.0 * d)
                }
                other => unreachable!("{other:?}"),
            };
            let xq = _mm256_loadu_si256(x.qs.as_ptr().cast());
            let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, xq);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d * x.d), acc);
            corr += c * x.sum;
        }
        let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s) + corr
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::XBlock;
    use candle_core::quantized::GgmlDType;

    pub(super) unsafe fn dot(_: GgmlDType, _: &[u8], _: &[XBlock]) -> f32 {
        unreachable!("the decode kernel needs x86-64 AVX-512 VNNI")
    }
}

/// Dequantizes whole rows of `dtype` blocks into `out`.
fn dequantize(dtype: GgmlDType, w: &[u8], out: &mut [f32]) {
    match dtype {
        GgmlDType::Q4_0 => to_float::<BlockQ4_0>(w, out),
        GgmlDType::Q4_1 => to_float::<BlockQ4_1>(w, out),
        GgmlDType::Q5_0 => to_float::<BlockQ5_0>(w, out),
        GgmlDType::Q5_1 => to_float::<BlockQ5_1>(w, out),
        GgmlDType::Q8_0 => to_float::<BlockQ8_0>(w, out),
        other => unreachable!("{other:?} is not a 32-value block type"),
    }
}

/// candle's dequantization of `B` blocks, over bytes in the GGUF layout.
fn to_float<B: GgmlType>(w: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<B>();
    assert_eq!(size, B::DTYPE.type_size(), "{:?}: block layout", B::DTYPE);
    assert_eq!(w.len() % size, 0);
    assert_eq!(out.len(), w.len() / size * B::BLCK_SIZE);
    assert!(
        (w.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>()),
        "{:?} blocks must be {}-byte aligned",
        B::DTYPE,
        std::mem::align_of::<B>()
    );
    // SAFETY: the blocks are `repr(C)` structs of `f16` and byte arrays (every bit
    // pattern is a value) whose size is the GGUF block size (asserted), and the pointer
    // is aligned for them (asserted); the slice borrows `w`.
    let blocks = unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<B>(), w.len() / size) };
    B::to_float(blocks, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// Every type, against the product with candle's dequantized weight (f64
    /// reference), for a prefill-sized and an odd-sized batch.
    #[test]
    fn block_matmul_equals_the_dequantized_product() {
        let dev = Device::Cpu;
        let (n, k) = (75, 96);
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
        ] {
            assert!(supports(dtype, k));
            let decodes = kquant::cpu_supported();
            assert_eq!(supports_rows(dtype, k, 1), decodes);
            let q = QTensor::quantize(&w, dtype).unwrap();
            let deq: Vec<f32> = q
                .dequantize(&dev)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let bytes = q.data().unwrap();
            for m in [1, 3, 16, 37] {
                if m < MIN_ROWS && !decodes {
                    continue; // candle's path serves decode on CPUs without VNNI
                }
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
                    .collect();
                let mut y = vec![f32::NAN; m * n];
                matmul(dtype, &bytes, n, k, &x, m, &mut y);
                // Decode multiplies by the activations rounded to 8 bits per 32 values:
                // the reference uses those same values, so only float rounding differs.
                let xr: Vec<f32> = if m < MIN_ROWS {
                    x.chunks_exact(k)
                        .flat_map(quantize_row)
                        .flat_map(|b| b.qs.map(|q| q as f32 * b.d))
                        .collect()
                } else {
                    x.clone()
                };
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|l| xr[i * k + l] as f64 * deq[j * k + l] as f64)
                            .sum();
                        let got = y[i * n + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{dtype:?} m={m} ({i}, {j}): {got} vs {want}"
                        );
                        // And the rounding of the activations stays small.
                        let exact: f64 = (0..k)
                            .map(|l| x[i * k + l] as f64 * deq[j * k + l] as f64)
                            .sum();
                        assert!(
                            (got - exact).abs() <= 0.1,
                            "{dtype:?} m={m}: {got} vs {exact}"
                        );
                    }
                }
            }
        }
        assert!(
            !supports(GgmlDType::Q4K, 256),
            "K-quants have their own kernels"
        );
        assert!(
            !supports(GgmlDType::Q8_0, 100),
            "input features must fill whole blocks"
        );
    }
}
