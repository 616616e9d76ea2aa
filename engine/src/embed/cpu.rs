//! The encoder's forward pass on plain f32 slices, for the CPU.
//!
//! candle's CPU backend runs every op as its own pass over a freshly allocated tensor,
//! with scalar `libm` erf and exp: profiled on the 2-core machines, the matrix products
//! were only a third of passage embedding and half of a query's; softmax exp, GELU erf,
//! memsets, page faults and thread wake-ups were the rest. Embedding is what ingestion
//! waits for and the first step of every search, so the CPU gets this forward instead:
//!
//! * **no padding**: the tokens of all sequences in a batch are packed, so every linear
//!   layer is one GEMM over `[tokens, hidden]` and nothing is computed for pad tokens;
//! * the bias is written first and the GEMM accumulates onto it (`read_dst`);
//! * attention runs per (sequence, head) in parallel, each a pair of small GEMMs around
//!   a row softmax with a vectorisable exp ([`exp_in_place`]);
//! * GELU uses a vectorisable erf (Abramowitz–Stegun 7.1.26, |error| < 10⁻⁶ in f32);
//! * residual + LayerNorm are one pass; buffers are reused across layers;
//! * a short query runs single-threaded: at 20–30 tokens a second thread costs more in
//!   wake-ups than it saves (measured).
//!
//! The weights are the candle encoder's, copied out once (see
//! [`super::bert::BertEncoder::into_plain_cpu`]); `bert.rs` stays the reference and the
//! CUDA path, and a test holds the two to the same embeddings.

use crate::matmul::{matmul, matmul_raw, Mat, SharedOut};
use rayon::prelude::*;

/// Rows (tokens) from which a linear layer's GEMM is split across threads.
const PARALLEL_MIN_ROWS: usize = 64;

/// Outputs per weight panel of the short-input kernel: two AVX-512 registers.
const PANEL: usize = 32;
/// Inputs per scale of a panel: the Q4_0 block size.
const SCALE_BLOCK: usize = 32;
/// Tokens the short-input kernel keeps in registers at once (16 accumulators).
const TOKEN_BLOCK: usize = 8;
/// Bytes ahead of the weight stream that the AVX-512 kernel prefetches (measured best
/// of 256…2048 on the 2-core machines).
const PREFETCH_AHEAD: usize = 1024;

/// A Q4_0 layer's weights as exact small integers in panels for [`panel_kernel`]:
/// panel `p` holds outputs `32p..32p+32`; for each block of 32 inputs, their 32 scales
/// (f32) and then 32 input rows of 32 `i8` values, `w = q · scale` exactly as the
/// f32 dequantization gives it. A quarter of the f32 bytes: at 10–30 tokens a linear
/// layer is bound by reading its weights, which GEMM's cache blocking did at a third of
/// the bandwidth (12-token query: GEMM 14 ms, f32 panels 8 ms, these ≈ 3 ms).
struct QuantPanels {
    values: Vec<i8>,
    scales: Vec<f32>,
}

impl QuantPanels {
    /// From ggml Q4_0 blocks of an `[outputs, inputs]` matrix (row-major, 18 bytes per
    /// 32 values: f16 scale, then 16 bytes whose low nibble is value i, high i + 16).
    fn from_q4_0(blocks: &[u8], inputs: usize, outputs: usize) -> Option<Self> {
        const BYTES: usize = 18;
        let per_row = inputs / SCALE_BLOCK;
        if !inputs.is_multiple_of(SCALE_BLOCK) || blocks.len() != outputs * per_row * BYTES {
            return None;
        }
        let panels = outputs.div_ceil(PANEL);
        let mut values = vec![0i8; panels * inputs * PANEL];
        let mut scales = vec![0f32; panels * per_row * PANEL];
        for row in 0..outputs {
            let (p, j) = (row / PANEL, row % PANEL);
            for b in 0..per_row {
                let block = &blocks[(row * per_row + b) * BYTES..(row * per_row + b + 1) * BYTES];
                let d = super::e5s1::f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
                scales[(p * per_row + b) * PANEL + j] = d;
                for (i, &byte) in block[2..].iter().enumerate() {
                    let base = ((p * per_row + b) * SCALE_BLOCK) * PANEL;
                    values[base + i * PANEL + j] = (byte & 0x0F) as i8 - 8;
                    values[base + (i + 16) * PANEL + j] = (byte >> 4) as i8 - 8;
                }
            }
        }
        Some(QuantPanels { values, scales })
    }
}

/// `y = x Wᵀ + b`. Batches run GEMM on `Wᵀ` kept row-major `[in, out]` (contiguous
/// along the output dimension, which GEMM reads without repacking it on every call);
/// a short input (a query) runs [`panel_kernel`] on [`QuantPanels`] when the layer came
/// from Q4_0, GEMM otherwise.
pub(crate) struct DenseLinear {
    weight_t: Vec<f32>,
    panels: Option<QuantPanels>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl DenseLinear {
    /// From `Wᵀ` (`[inputs, outputs]`, row-major), the bias, and the Q4_0 blocks the
    /// weights were dequantized from, if they were.
    pub fn new(
        weight_t: Vec<f32>,
        bias: Vec<f32>,
        inputs: usize,
        outputs: usize,
        q4_0: Option<&[u8]>,
    ) -> Self {
        assert_eq!(weight_t.len(), inputs * outputs);
        assert_eq!(bias.len(), outputs);
        DenseLinear {
            panels: q4_0.and_then(|b| QuantPanels::from_q4_0(b, inputs, outputs)),
            weight_t,
            bias,
            inputs,
            outputs,
        }
    }

    /// `x` is `[rows, inputs]`, `y` `[rows, outputs]`.
    fn forward(&self, x: &[f32], rows: usize, y: &mut [f32]) {
        let (n, k) = (self.outputs, self.inputs);
        assert_eq!(x.len(), rows * k);
        assert_eq!(y.len(), rows * n);
        if let (true, Some(panels)) = (rows < PARALLEL_MIN_ROWS, &self.panels) {
            return self.forward_short(panels, x, rows, y);
        }
        for row in y.chunks_exact_mut(n) {
            row.copy_from_slice(&self.bias);
        }
        let threads = if rows >= PARALLEL_MIN_ROWS {
            rayon::current_num_threads()
        } else {
            1
        };
        let (x, w) = (Mat::rows(x, k), Mat::rows(&self.weight_t, n));
        matmul(y, n, rows, n, k, x, w, true, 1.0, threads);
    }

    /// Few rows: the threads split the weight panels, each streaming its share once per
    /// block of [`TOKEN_BLOCK`] tokens (the second pass over a panel comes from cache).
    fn forward_short(&self, panels: &QuantPanels, x: &[f32], rows: usize, y: &mut [f32]) {
        let (n, k) = (self.outputs, self.inputs);
        // Token blocks transposed to `[k][TOKEN_BLOCK]` (zero rows past the end), so the
        // kernel reads one contiguous group of broadcasts per input.
        let blocks = rows.div_ceil(TOKEN_BLOCK);
        let mut xt = vec![0f32; blocks * k * TOKEN_BLOCK];
        for (r, row) in x.chunks_exact(k).enumerate() {
            let (b, t) = (r / TOKEN_BLOCK, r % TOKEN_BLOCK);
            for (kk, v) in row.iter().enumerate() {
                xt[(b * k + kk) * TOKEN_BLOCK + t] = *v;
            }
        }
        let out = SharedOut::new(y);
        let panel_count = n.div_ceil(PANEL);
        let threads = rayon::current_num_threads().min(panel_count).max(1);
        let per_thread = panel_count.div_ceil(threads);
        let work = |t: usize| {
            for p in t * per_thread..((t + 1) * per_thread).min(panel_count) {
                let values = &panels.values[p * PANEL * k..(p + 1) * PANEL * k];
                let scales =
                    &panels.scales[p * PANEL * k / SCALE_BLOCK..(p + 1) * PANEL * k / SCALE_BLOCK];
                let cols = (n - p * PANEL).min(PANEL);
                for b in 0..blocks {
                    let xb = &xt[b * k * TOKEN_BLOCK..(b + 1) * k * TOKEN_BLOCK];
                    let acc = panel_kernel(xb, values, scales);
                    let first = b * TOKEN_BLOCK;
                    let bias = &self.bias[p * PANEL..p * PANEL + cols];
                    for (r, a) in acc.iter().take(rows - first).enumerate() {
                        for (c, (v, b)) in a.iter().zip(bias).enumerate() {
                            // SAFETY: row `first + r` < rows and column `p·PANEL + c` < n;
                            // panel p's columns belong to this thread alone.
                            unsafe {
                                *out.at((first + r) * n + p * PANEL + c) = v + b;
                            }
                        }
                    }
                }
            }
        };
        if threads > 1 {
            (0..threads).into_par_iter().for_each(work);
        } else {
            work(0);
        }
    }
}

/// `acc[t][j] = Σₖ xt[k][t] · q[k][j] · scale[k/32][j]`: one token block against one
/// weight panel, 16 accumulators held in registers (AVX-512: 8 tokens × 2 registers;
/// AVX2: two passes of 4 tokens × 4 registers). Chosen at run time.
fn panel_kernel(xt: &[f32], values: &[i8], scales: &[f32]) -> [[f32; PANEL]; TOKEN_BLOCK] {
    let k = values.len() / PANEL;
    assert!(xt.len() == k * TOKEN_BLOCK && scales.len() * SCALE_BLOCK == values.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; the slices' lengths were checked above.
            return unsafe { panel_kernel_avx512(xt, values, scales, k) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above, with AVX2 and FMA.
            return unsafe { panel_kernel_avx2(xt, values, scales, k) };
        }
    }
    panel_kernel_portable(xt, values, scales)
}

/// [`panel_kernel`] without SIMD intrinsics (other CPUs; the reference in tests).
fn panel_kernel_portable(xt: &[f32], values: &[i8], scales: &[f32]) -> [[f32; PANEL]; TOKEN_BLOCK] {
    let mut acc = [[0f32; PANEL]; TOKEN_BLOCK];
    for (kk, (q, xs)) in values
        .chunks_exact(PANEL)
        .zip(xt.chunks_exact(TOKEN_BLOCK))
        .enumerate()
    {
        let s = &scales[kk / SCALE_BLOCK * PANEL..(kk / SCALE_BLOCK + 1) * PANEL];
        for (a, &xv) in acc.iter_mut().zip(xs) {
            for ((a, &q), s) in a.iter_mut().zip(q).zip(s) {
                *a += xv * (q as f32 * s);
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn panel_kernel_avx512(
    xt: &[f32],
    values: &[i8],
    scales: &[f32],
    k: usize,
) -> [[f32; PANEL]; TOKEN_BLOCK] {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; TOKEN_BLOCK];
    let (q, s, x) = (values.as_ptr(), scales.as_ptr(), xt.as_ptr());
    for b in 0..k / SCALE_BLOCK {
        let s0 = _mm512_loadu_ps(s.add(b * PANEL));
        let s1 = _mm512_loadu_ps(s.add(b * PANEL + 16));
        for kk in b * SCALE_BLOCK..(b + 1) * SCALE_BLOCK {
            let row = q.add(kk * PANEL);
            _mm_prefetch::<_MM_HINT_T0>(row.add(PREFETCH_AHEAD));
            let q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(row as *const __m128i));
            let q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(row.add(16) as *const __m128i));
            let w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(q0), s0);
            let w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(q1), s1);
            for (t, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*x.add(kk * TOKEN_BLOCK + t));
                a[0] = _mm512_fmadd_ps(xv, w0, a[0]);
                a[1] = _mm512_fmadd_ps(xv, w1, a[1]);
            }
        }
    }
    let mut out = [[0f32; PANEL]; TOKEN_BLOCK];
    for (o, a) in out.iter_mut().zip(&acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), a[0]);
        _mm512_storeu_ps(o.as_mut_ptr().add(16), a[1]);
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn panel_kernel_avx2(
    xt: &[f32],
    values: &[i8],
    scales: &[f32],
    k: usize,
) -> [[f32; PANEL]; TOKEN_BLOCK] {
    use std::arch::x86_64::*;
    let mut out = [[0f32; PANEL]; TOKEN_BLOCK];
    let (q, s, x) = (values.as_ptr(), scales.as_ptr(), xt.as_ptr());
    for half in 0..2 {
        let mut acc = [[_mm256_setzero_ps(); 4]; 4];
        for b in 0..k / SCALE_BLOCK {
            let sv = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(s.add(b * PANEL + o)));
            for kk in b * SCALE_BLOCK..(b + 1) * SCALE_BLOCK {
                let row = q.add(kk * PANEL);
                let mut w = [_mm256_setzero_ps(); 4];
                for (i, w) in w.iter_mut().enumerate() {
                    let qi =
                        _mm256_cvtepi8_epi32(_mm_loadl_epi64(row.add(i * 8) as *const __m128i));
                    *w = _mm256_mul_ps(_mm256_cvtepi32_ps(qi), sv[i]);
                }
                for (t, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_set1_ps(*x.add(kk * TOKEN_BLOCK + half * 4 + t));
                    for (a, w) in a.iter_mut().zip(w) {
                        *a = _mm256_fmadd_ps(xv, w, *a);
                    }
                }
            }
        }
        for (o, a) in out[half * 4..].iter_mut().zip(&acc) {
            for (j, v) in a.iter().enumerate() {
                _mm256_storeu_ps(o.as_mut_ptr().add(j * 8), *v);
            }
        }
    }
    out
}

/// LayerNorm parameters.
pub(crate) struct Norm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f32,
}

impl Norm {
    /// `x ← LayerNorm(x + residual)` row by row (`residual` may be absent).
    pub(crate) fn apply(&self, x: &mut [f32], residual: Option<&[f32]>) {
        let h = self.gamma.len();
        let rows = x.len() / h;
        let one = |(i, row): (usize, &mut [f32])| {
            if let Some(r) = residual {
                for (a, b) in row.iter_mut().zip(&r[i * h..(i + 1) * h]) {
                    *a += b;
                }
            }
            let mean = row.iter().sum::<f32>() / h as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) * inv * g + b;
            }
        };
        if rows >= PARALLEL_MIN_ROWS {
            x.par_chunks_mut(h).enumerate().for_each(one);
        } else {
            x.chunks_mut(h).enumerate().for_each(one);
        }
    }
}

/// One encoder layer.
pub(crate) struct PlainLayer {
    /// Q, K and V fused: `[3·hidden, hidden]`.
    pub qkv: DenseLinear,
    pub attn_out: DenseLinear,
    pub attn_norm: Norm,
    pub ffn_in: DenseLinear,
    pub ffn_out: DenseLinear,
    pub ffn_norm: Norm,
}

/// The layers and sizes the plain forward needs.
pub(crate) struct PlainEncoder {
    pub layers: Vec<PlainLayer>,
    pub hidden: usize,
    pub heads: usize,
}

impl PlainEncoder {
    /// Runs the layers over `x` (`[tokens, hidden]`, the embedded and normalised input of
    /// sequences of `lengths` packed back to back) and returns each sequence's mean-pooled,
    /// L2-normalised vector.
    pub fn forward(&self, mut x: Vec<f32>, lengths: &[usize]) -> Vec<Vec<f32>> {
        let h = self.hidden;
        let tokens: usize = lengths.iter().sum();
        debug_assert_eq!(x.len(), tokens * h);
        let ff = self.layers.first().map_or(0, |l| l.ffn_in.outputs);
        let mut qkv = vec![0f32; tokens * 3 * h];
        let mut ctx = vec![0f32; tokens * h];
        let mut proj = vec![0f32; tokens * h];
        let mut mid = vec![0f32; tokens * ff];
        let starts: Vec<usize> = lengths
            .iter()
            .scan(0, |acc, &l| {
                let s = *acc;
                *acc += l;
                Some(s)
            })
            .collect();
        for layer in &self.layers {
            layer.qkv.forward(&x, tokens, &mut qkv);
            self.attention(&qkv, &starts, lengths, &mut ctx);
            layer.attn_out.forward(&ctx, tokens, &mut proj);
            layer.attn_norm.apply(&mut x, Some(&proj));
            layer.ffn_in.forward(&x, tokens, &mut mid);
            if tokens >= PARALLEL_MIN_ROWS {
                mid.par_chunks_mut(4096).for_each(gelu_in_place);
            } else {
                gelu_in_place(&mut mid);
            }
            layer.ffn_out.forward(&mid, tokens, &mut proj);
            layer.ffn_norm.apply(&mut x, Some(&proj));
        }
        starts
            .iter()
            .zip(lengths)
            .map(|(&s, &l)| {
                let mut mean = vec![0f32; h];
                for row in x[s * h..(s + l) * h].chunks_exact(h) {
                    for (m, v) in mean.iter_mut().zip(row) {
                        *m += v;
                    }
                }
                mean.iter_mut().for_each(|v| *v /= l as f32);
                let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
                mean.iter_mut().for_each(|v| *v /= norm);
                mean
            })
            .collect()
    }

    /// Self-attention of every sequence and head: `ctx = softmax(q kᵀ / √d) v`.
    fn attention(&self, qkv: &[f32], starts: &[usize], lengths: &[usize], ctx: &mut [f32]) {
        let (h, heads) = (self.hidden, self.heads);
        let hd = h / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let out = SharedOut::new(ctx);
        let task = |(seq, head): (usize, usize)| {
            let (s, l) = (starts[seq], lengths[seq]);
            let row = 3 * h;
            let q = Mat::strided(&qkv[s * row + head * hd..], row);
            let k = Mat::strided(&qkv[s * row + h + head * hd..], row);
            let v = Mat::strided(&qkv[s * row + 2 * h + head * hd..], row);
            let mut scores = vec![0f32; l * l];
            matmul(&mut scores, l, l, l, hd, q, k.t(), false, scale, 1);
            for r in scores.chunks_exact_mut(l) {
                softmax_in_place(r);
            }
            // SAFETY: the context block (rows s..s+l, columns head·hd..+hd of `ctx`)
            // belongs to this task alone.
            unsafe {
                let dst = out.at(s * h + head * hd);
                matmul_raw(dst, h, l, hd, l, Mat::rows(&scores, l), v, false, 1.0, 1);
            }
        };
        let tasks: Vec<(usize, usize)> = (0..lengths.len())
            .flat_map(|s| (0..heads).map(move |hh| (s, hh)))
            .collect();
        if starts.last().map_or(0, |&s| s + lengths[lengths.len() - 1]) >= PARALLEL_MIN_ROWS {
            tasks.into_par_iter().for_each(task);
        } else {
            tasks.into_iter().for_each(task);
        }
    }
}

/// `x ← softmax(x)`.
fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    x.iter_mut().for_each(|v| *v -= max);
    exp_in_place(x);
    let sum: f32 = x.iter().sum();
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// `x ← eˣ`, written so the compiler vectorises it (no calls, no branches).
pub(crate) fn exp_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = exp(*v);
    }
}

/// eˣ to about 2 ulp: x = n·ln 2 + r with |r| ≤ ln2/2, e^r by its degree-6 Taylor
/// polynomial (remainder < 1.2·10⁻⁷), 2ⁿ by building the float's exponent bits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// erf(x), Abramowitz & Stegun 7.1.26: |error| < 1.5·10⁻⁷ in exact arithmetic, < 10⁻⁶
/// in f32 (the `1 − …` cancels near 0), far below what GELU output can show.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// `x ← GELU(x) = x·(1 + erf(x/√2))/2`, the exact (erf) form BERT models use.
fn gelu_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_over_the_softmax_range() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.013;
        }
        assert!(worst < 4e-7, "relative error {worst}");
    }

    #[test]
    fn erf_and_gelu_match_the_exact_forms() {
        let mut x = -6.0f32;
        while x < 6.0 {
            let want = libm::erff(x);
            assert!(
                (erf(x) - want).abs() < 1e-6,
                "erf({x}) = {} vs {want}",
                erf(x)
            );
            x += 0.01;
        }
        let mut g = [-3.0f32, -0.5, 0.0, 0.5, 3.0];
        gelu_in_place(&mut g);
        let want = [-0.004_049_73, -0.154_268_7, 0.0, 0.345_731_3, 2.995_950_3];
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    /// The AVX-512, AVX2 and portable panel kernels agree (whichever this CPU has).
    #[test]
    fn panel_kernels_agree() {
        let k = 96;
        let mut seed = 12345u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let xt: Vec<f32> = (0..k * TOKEN_BLOCK).map(|_| next()).collect();
        let values: Vec<i8> = (0..k * PANEL).map(|_| (next() * 15.0) as i8).collect();
        let scales: Vec<f32> = (0..k / SCALE_BLOCK * PANEL)
            .map(|_| next().abs() + 0.01)
            .collect();
        let want = panel_kernel_portable(&xt, &values, &scales);
        let mut got = vec![panel_kernel(&xt, &values, &scales)];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            got.push(unsafe { panel_kernel_avx2(&xt, &values, &scales, k) });
        }
        for g in got {
            for (a, b) in g.iter().flatten().zip(want.iter().flatten()) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
        assert!(
            want.iter().flatten().any(|v| v.abs() > 0.1),
            "a trivial test"
        );
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut x = [1.0f32, 3.0, -2.0, 0.5, 80.0, -80.0];
        softmax_in_place(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[4] > 0.999 && x[1] > x[0] && x[0] > x[3] && x[3] > x[2]);
    }
}
