//! Kura's own CPU matmul for K-quant weights (Q4_K, Q6_K) on x86-64 with AVX-512 VNNI.
//!
//! Why our own: the default chat model is a Q4_K_M file (Q4_K and Q6_K blocks), and
//! candle 0.11 serves those two types in ways that cost us the speed and memory
//! targets (profile in `docs/engineering-notes/llmref.md`):
//!
//! - it repacks every Q4_K/Q6_K weight the first time it is used into a VNNI tile layout
//!   with the scales unpacked to f32 (≈ 1.3× the bytes) — and, with ≥ 32 rows on an AMX
//!   CPU, into a second, AMX layout (≈ 2.2×) — and keeps the original blocks too, so a
//!   model costs two to four times its file size in memory;
//! - a decode step then streams the bigger repacked copy from memory (decode is bound by
//!   memory bandwidth), and Q6_K runs on 256-bit AVX2 code.
//!
//! Here the weight is read in place, in the GGUF block layout, by 512-bit kernels: the
//! activations are quantized once per call to 8 bits per value with one scale per 256
//! (ggml's Q8_K, plus the per-32 sums that Q4_K's minimums need); a weight block is
//! unpacked to bytes in registers, multiplied with `vpmaddubsw` (u8 × i8 → pairs summed
//! to i16) and folded with its sub-block scales by `vpdpwssd` (VNNI, i16 × i16 summed into
//! i32); one float multiply-add per block applies the two block scales. For prefill,
//! each unpacked weight block is used for up to four activation rows. Output rows are
//! shared out over candle's own worker pool, so Kura's kernels and candle's never fight
//! over the cores.
//!
//! Where the CPU lacks AVX-512 VNNI (or `KURA_CPU_KERNELS=candle` is set, for
//! comparisons) [`kernel_for`] says no and [`crate::llm::Linear`] uses candle's
//! `QMatMul` as before.

use crate::matmul::SharedOut;
use candle_core::quantized::GgmlDType;
use std::sync::OnceLock;

/// Values per K-quant block.
pub const QK_K: usize = 256;

/// The K-quant weight types these kernels read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KQuant {
    /// 4-bit values, 8 sub-blocks of 32 with a 6-bit scale and minimum each; 144 bytes.
    Q4K,
    /// 6-bit values, 16 sub-blocks of 16 with an 8-bit scale each; 210 bytes.
    Q6K,
}

impl KQuant {
    /// Bytes of one block of [`QK_K`] values.
    pub fn block_bytes(self) -> usize {
        match self {
            KQuant::Q4K => 144,
            KQuant::Q6K => 210,
        }
    }
}

/// The kernel that can multiply by a weight of this type with `k` input features on this
/// CPU, if any.
pub fn kernel_for(dtype: GgmlDType, k: usize) -> Option<KQuant> {
    if !k.is_multiple_of(QK_K) || !cpu_supported() {
        return None;
    }
    match dtype {
        GgmlDType::Q4K => Some(KQuant::Q4K),
        GgmlDType::Q6K => Some(KQuant::Q6K),
        _ => None,
    }
}

/// Whether this CPU runs the kernels (and they are not switched off).
pub fn cpu_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        if std::env::var("KURA_CPU_KERNELS").is_ok_and(|v| v == "candle") {
            return false;
        }
        detect()
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> bool {
    false
}

/// 256 activations quantized to 8 bits: `x ≈ d · qs`, with the sums of `qs` over every
/// 16 and every 32 values (the K-quants' per-sub-block corrections need them).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct BlockQ8K {
    qs: [i8; QK_K],
    d: f32,
    bsums16: [i16; 16],
    bsums32: [i16; 8],
    /// `d · bsums16` and `d · bsums32`, for the prefill kernel's minimum terms.
    fsums16: [f32; 16],
    fsums32: [f32; 8],
}

impl BlockQ8K {
    const ZERO: Self = Self {
        qs: [0; QK_K],
        d: 0.0,
        bsums16: [0; 16],
        bsums32: [0; 8],
        fsums16: [0.0; 16],
        fsums32: [0.0; 8],
    };

    /// Quantizes 256 values (round to nearest even, symmetric, scale = max |x| / 127).
    fn quantize(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), QK_K);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut b = Self::ZERO;
        if amax == 0.0 || !amax.is_finite() {
            // All zeros (or a non-finite input, which no scale can represent: the
            // result is zero rather than garbage; the model's NaN checks see the rest).
            b.d = if amax.is_finite() { 0.0 } else { f32::NAN };
            return b;
        }
        let id = 127.0 / amax;
        if cpu_supported() {
            // SAFETY: the instructions are there; `x` holds 256 values.
            unsafe { x86::quantize_values(x, id, &mut b.qs) };
        } else {
            for (q, v) in b.qs.iter_mut().zip(x) {
                *q = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
            }
        }
        b.d = amax / 127.0;
        for j in 0..16 {
            b.bsums16[j] = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
            b.fsums16[j] = b.d * b.bsums16[j] as f32;
        }
        for j in 0..8 {
            b.bsums32[j] = b.bsums16[2 * j] + b.bsums16[2 * j + 1];
            b.fsums32[j] = b.d * b.bsums32[j] as f32;
        }
        b
    }
}

/// Quantizes `m` rows of `k` values (`k` a multiple of [`QK_K`]).
pub fn quantize_rows(x: &[f32], m: usize, k: usize) -> Vec<BlockQ8K> {
    assert_eq!(x.len(), m * k);
    assert_eq!(k % QK_K, 0);
    let nb = m * k / QK_K;
    let mut out = vec![BlockQ8K::ZERO; nb];
    let ptr = SharedOut::new(&mut out);
    let work = |range: std::ops::Range<usize>| {
        let p = &ptr;
        for b in range {
            // SAFETY: every block index is written by exactly one chunk.
            unsafe { *p.at(b) = BlockQ8K::quantize(&x[b * QK_K..(b + 1) * QK_K]) };
        }
    };
    if nb >= 64 {
        candle_core::utils::barrier_pool().execute_chunked(nb, work);
    } else {
        work(0..nb);
    }
    out
}

/// `y[i, j] = Σ_l x[i, l] · w[j, l]`: `x` is `m × k` f32 (row-major), `w` is `n` rows of
/// `k / 256` blocks of `kind` in the GGUF layout, `y` is `m × n`.
///
/// # Panics
/// If the sizes disagree or the CPU lacks the instructions ([`kernel_for`] said no).
pub fn matmul(kind: KQuant, w: &[u8], n: usize, k: usize, x: &[f32], m: usize, y: &mut [f32]) {
    assert!(cpu_supported(), "K-quant kernels need AVX-512 VNNI");
    assert_eq!(k % QK_K, 0);
    let nb = k / QK_K;
    let row_bytes = nb * kind.block_bytes();
    assert_eq!(
        w.len(),
        n * row_bytes,
        "weight bytes for {n} × {k} {kind:?}"
    );
    assert_eq!(y.len(), m * n);
    let xq = quantize_rows(x, m, k);
    let out = SharedOut::new(y);
    if m >= TILE_MIN_ROWS {
        // Prefill: re-lay 16 weight rows at a time so one VNNI instruction multiplies 4
        // values of 16 rows at once (see `x86::pack_tile`), then run every activation
        // row against them. The re-laid tile lives in a per-thread scratch buffer.
        candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(TILE_N), |tiles| {
            let out = &out;
            TILE.with(|tile| {
                let mut tile = tile.borrow_mut();
                for t in tiles {
                    let n0 = t * TILE_N;
                    let rows = (n - n0).min(TILE_N);
                    // SAFETY: `cpu_supported()` checked the instructions; `w` holds the
                    // `rows` weight rows from `n0` (asserted above).
                    unsafe {
                        x86::pack_tile(kind, &w[n0 * row_bytes..], row_bytes, rows, nb, &mut tile)
                    };
                    // Blocks in slices that keep the tile's part and the activations'
                    // part in L1 while every activation row passes over them.
                    let mut acc = vec![[0f32; TILE_N]; m];
                    for b0 in (0..nb).step_by(TILE_KB) {
                        let blocks = b0..nb.min(b0 + TILE_KB);
                        let mut i = 0;
                        while i < m {
                            let r = (m - i).min(x86::TILE_MT);
                            let xs: [&[BlockQ8K]; x86::TILE_MT] =
                                std::array::from_fn(|u| &xq[(i + u.min(r - 1)) * nb..][..nb]);
                            // SAFETY: as above; the tile holds `nb` packed blocks.
                            unsafe {
                                x86::tile_rows(
                                    kind,
                                    &tile,
                                    blocks.clone(),
                                    &xs[..r],
                                    &mut acc[i..i + r],
                                )
                            };
                            i += r;
                        }
                    }
                    for (i, row) in acc.iter().enumerate() {
                        for (c, v) in row[..rows].iter().enumerate() {
                            // SAFETY: columns n0..n0+rows of every row belong to this tile
                            // only; the index lies inside `y`.
                            unsafe { *out.at(i * n + n0 + c) = *v };
                        }
                    }
                }
            });
        });
        return;
    }
    candle_core::utils::barrier_pool().execute_chunked(n, |rows| {
        let out = &out;
        for j in rows {
            let wrow = &w[j * row_bytes..(j + 1) * row_bytes];
            let mut i = 0;
            while i < m {
                let r = (m - i).min(4);
                let mut acc = [0f32; 4];
                let xs: [&[BlockQ8K]; 4] =
                    std::array::from_fn(|t| &xq[(i + t.min(r - 1)) * nb..][..nb]);
                // SAFETY: `cpu_supported()` checked the instructions; the slices hold
                // `nb` blocks each (asserted above).
                unsafe { x86::dot_rows(kind, wrow, nb, &xs[..r], &mut acc[..r]) };
                for (t, v) in acc[..r].iter().enumerate() {
                    // SAFETY: (i + t, j) is written by this chunk only (rows are split
                    // between chunks) and lies inside `y` (asserted above).
                    unsafe { *out.at((i + t) * n + j) = *v };
                }
                i += r;
            }
        }
    });
}

/// From this many activation rows on, [`matmul`] re-lays the weight in tiles (prefill);
/// below it reads the blocks directly (decode), where the re-laying would not pay.
pub const TILE_MIN_ROWS: usize = 16;

/// Weight rows per prefill tile: one 32-bit lane of a 512-bit register each.
const TILE_N: usize = 16;

/// Blocks per slice of the prefill loop: 6 blocks of a tile are 24 KiB, and of four
/// activation rows 10 KiB — together inside a 48 KiB L1 data cache.
const TILE_KB: usize = 6;

/// 16 weight rows re-laid for `vpdpbusd`: for every block, 64 groups of 4 consecutive
/// values, each group holding the 4 unpacked bytes of the 16 rows side by side; and
/// per sub-block the 16 rows' effective scales and minimums as f32.
#[derive(Default)]
struct Tile {
    qs: Vec<u8>,
    scale: Vec<f32>,
    min: Vec<f32>,
}

thread_local! {
    static TILE: std::cell::RefCell<Tile> = std::cell::RefCell::new(Tile::default());
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BlockQ8K, KQuant, Tile, TILE_N};
    use std::arch::x86_64::*;

    /// `qs[i] = round(x[i] · id)` (to nearest even, as the scalar path), 16 at a time.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; `x` must hold 256 values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn quantize_values(x: &[f32], id: f32, qs: &mut [i8; 256]) {
        let scale = _mm512_set1_ps(id);
        for c in 0..16 {
            let v = _mm512_mul_ps(_mm512_loadu_ps(x.as_ptr().add(16 * c)), scale);
            let i = _mm512_cvtps_epi32(v); // MXCSR default: round to nearest even
            _mm_storeu_si128(qs.as_mut_ptr().add(16 * c).cast(), _mm512_cvtsepi32_epi8(i));
        }
    }

    /// Activation rows run against one packed tile at a time.
    pub(super) const TILE_MT: usize = 8;

    /// Packs `rows` (≤ 16) weight rows starting at `w` into `tile` (missing rows are
    /// zero).
    ///
    /// # Safety
    /// As [`dot_rows`]; `w` must hold `rows` rows of `row_bytes`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn pack_tile(
        kind: KQuant,
        w: &[u8],
        row_bytes: usize,
        rows: usize,
        nb: usize,
        tile: &mut Tile,
    ) {
        let nsub = match kind {
            KQuant::Q4K => 8,
            KQuant::Q6K => 16,
        };
        tile.qs.resize(nb * 64 * 64, 0);
        tile.scale.resize(nb * nsub * TILE_N, 0.0);
        tile.min.resize(nb * nsub * TILE_N, 0.0);
        if rows < TILE_N {
            tile.qs.fill(0);
            tile.scale.fill(0.0);
            tile.min.fill(0.0);
        }
        // Lane l of a 64-value register is group 16j + l: 64 bytes apart in the tile.
        let lanes: [i32; 16] = std::array::from_fn(|l| (l * TILE_N) as i32);
        let vindex = _mm512_loadu_si512(lanes.as_ptr().cast());
        // Block by block, so that the 16 rows' scattered writes to one 4 KiB slice of
        // the tile hit L1.
        for b in 0..nb {
            for r in 0..rows {
                let blk = w.as_ptr().add(r * row_bytes + b * kind.block_bytes());
                let mut sc = [0f32; 16];
                let mut mn = [0f32; 16];
                let q = match kind {
                    KQuant::Q4K => unpack_q4k(blk, &mut sc, &mut mn),
                    KQuant::Q6K => unpack_q6k(blk, &mut sc, &mut mn),
                };
                for s in 0..nsub {
                    tile.scale[(b * nsub + s) * TILE_N + r] = sc[s];
                    tile.min[(b * nsub + s) * TILE_N + r] = mn[s];
                }
                let base = tile.qs.as_mut_ptr().add(b * 4096 + r * 4);
                for (j, qj) in q.iter().enumerate() {
                    _mm512_i32scatter_epi32::<4>(base.add(j * 16 * 64).cast(), vindex, *qj);
                }
            }
        }
    }

    /// One Q4_K block as 4 × 64 values (u8, natural order), with its 8 effective scales
    /// `d·sc` and minimums `dmin·m`.
    #[inline(always)]
    unsafe fn unpack_q4k(blk: *const u8, sc: &mut [f32; 16], mn: &mut [f32; 16]) -> [__m512i; 4] {
        let d = f16_at(blk);
        let dmin = f16_at(blk.add(2));
        let u = scales_mins_q4k(blk);
        let bytes: [u8; 16] = std::mem::transmute(u);
        for s in 0..8 {
            sc[s] = d * bytes[s] as f32;
            mn[s] = dmin * bytes[8 + s] as f32;
        }
        q4k_values(blk)
    }

    /// The 4-bit values of a Q4_K block, 4 × 64 in natural order: a 32-byte load
    /// broadcast to both halves, the upper half shifted right by 4, masked.
    #[inline(always)]
    unsafe fn q4k_values(blk: *const u8) -> [__m512i; 4] {
        let low4 = _mm512_set1_epi8(0x0F);
        let nibble_shift = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
        let qs = blk.add(16);
        std::array::from_fn(|j| {
            let v = _mm512_broadcast_i64x4(_mm256_loadu_si256(qs.add(32 * j).cast()));
            _mm512_and_si512(_mm512_srlv_epi64(v, nibble_shift), low4)
        })
    }

    /// `Σ_j q[j]·x[64j..] · s[j]` in i32 lanes: `vpmaddubsw` (u8 × i8 → i16 pairs), then
    /// `vpdpwssd` against the sub-block scales spread over the i16 lanes.
    #[inline(always)]
    unsafe fn block_dot(q: &[__m512i; 4], s: &[__m512i; 4], xq: *const i8) -> __m512i {
        let mut acc = _mm512_setzero_si512();
        for j in 0..4 {
            let xv = _mm512_loadu_si512(xq.add(64 * j).cast());
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(q[j], xv), s[j]);
        }
        acc
    }

    /// One Q6_K block as 4 × 64 raw 6-bit values (u8, natural order), with its 16
    /// effective scales `d·sc` and the offset terms `32·d·sc`.
    #[inline(always)]
    unsafe fn unpack_q6k(blk: *const u8, sc: &mut [f32; 16], mn: &mut [f32; 16]) -> [__m512i; 4] {
        let d = f16_at(blk.add(208));
        for s in 0..16 {
            sc[s] = d * (*blk.add(192 + s) as i8) as f32;
            mn[s] = 32.0 * sc[s];
        }
        q6k_values(blk)
    }

    /// The 6-bit values of a Q6_K block, 4 × 64 in natural order.
    #[inline(always)]
    unsafe fn q6k_values(blk: *const u8) -> [__m512i; 4] {
        let low4 = _mm512_set1_epi8(0x0F);
        let low2 = _mm512_set1_epi8(0x03);
        let shift_a = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);
        let shift_b = _mm512_set_epi64(6, 6, 6, 6, 4, 4, 4, 4);
        let ql = blk;
        let qh = blk.add(128);
        let mut q = [_mm512_setzero_si512(); 4];
        for h in 0..2 {
            let l = _mm512_loadu_si512(ql.add(64 * h).cast());
            let hb = _mm512_broadcast_i64x4(_mm256_loadu_si256(qh.add(32 * h).cast()));
            let ha = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(hb, shift_a), low2), 4);
            let hbb = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(hb, shift_b), low2), 4);
            q[2 * h] = _mm512_or_si512(_mm512_and_si512(l, low4), ha);
            q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), low4), hbb);
        }
        q
    }

    /// Q4_K's twelve scale bytes as 8 scales then 8 minimums, one byte each (ggml's
    /// `get_scale_min_k4`, four at a time).
    #[inline(always)]
    unsafe fn scales_mins_q4k(blk: *const u8) -> [u32; 4] {
        let mut u = [0u32; 4];
        std::ptr::copy_nonoverlapping(blk.add(4), u.as_mut_ptr().cast::<u8>(), 12);
        const M1: u32 = 0x3f3f3f3f;
        const M2: u32 = 0x0f0f0f0f;
        const M3: u32 = 0x03030303;
        u[3] = ((u[2] >> 4) & M2) | (((u[1] >> 6) & M3) << 4);
        let mins_lo = u[1] & M1;
        u[1] = (u[2] & M2) | (((u[0] >> 6) & M3) << 4);
        u[2] = mins_lo;
        u[0] &= M1;
        u
    }

    /// 1–4 activation rows against `blocks` of one packed tile: adds to `out[m][c]` the
    /// dot product of row `m` with weight row `c` of the tile over those blocks.
    ///
    /// # Safety
    /// As [`dot_rows`]; `tile` packed from `nb` blocks per row.
    pub(super) unsafe fn tile_rows(
        kind: KQuant,
        tile: &Tile,
        blocks: std::ops::Range<usize>,
        xs: &[&[BlockQ8K]],
        out: &mut [[f32; TILE_N]],
    ) {
        // One instance per row count, so the accumulators live in registers.
        macro_rules! rows {
            ($nsub:literal) => {
                match xs.len() {
                    1 => tile_kernel::<1, $nsub>(tile, blocks, xs, out),
                    2 => tile_kernel::<2, $nsub>(tile, blocks, xs, out),
                    3 => tile_kernel::<3, $nsub>(tile, blocks, xs, out),
                    4 => tile_kernel::<4, $nsub>(tile, blocks, xs, out),
                    5 => tile_kernel::<5, $nsub>(tile, blocks, xs, out),
                    6 => tile_kernel::<6, $nsub>(tile, blocks, xs, out),
                    7 => tile_kernel::<7, $nsub>(tile, blocks, xs, out),
                    _ => tile_kernel::<8, $nsub>(tile, blocks, xs, out),
                }
            };
        }
        match kind {
            KQuant::Q4K => rows!(8),
            KQuant::Q6K => rows!(16),
        }
    }

    /// `NSUB` sub-blocks per block (8 for Q4_K, 16 for Q6_K): per sub-block the integer
    /// dot products of the 16 rows, scaled by their f32 scales; the minimum (Q4_K) or
    /// offset (Q6_K) term subtracted with the activations' per-sub-block sums.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn tile_kernel<const MT: usize, const NSUB: usize>(
        tile: &Tile,
        blocks: std::ops::Range<usize>,
        xs: &[&[BlockQ8K]],
        out: &mut [[f32; TILE_N]],
    ) {
        let groups = 64 / NSUB;
        let mut acc: [__m512; MT] = std::array::from_fn(|m| _mm512_loadu_ps(out[m].as_ptr()));
        for b in blocks {
            let qs = tile.qs.as_ptr().add(b * 4096);
            let xb: [&BlockQ8K; MT] = std::array::from_fn(|m| xs[m].get_unchecked(b));
            let mut blk = [_mm512_setzero_ps(); MT];
            for s in 0..NSUB {
                let mut isum = [_mm512_setzero_si512(); MT];
                for g in 0..groups {
                    let gg = s * groups + g;
                    let wv = _mm512_loadu_si512(qs.add(gg * 64).cast());
                    for m in 0..MT {
                        let a =
                            std::ptr::read_unaligned(xb[m].qs.as_ptr().add(4 * gg).cast::<i32>());
                        isum[m] = _mm512_dpbusd_epi32(isum[m], wv, _mm512_set1_epi32(a));
                    }
                }
                let off = (b * NSUB + s) * TILE_N;
                let sc = _mm512_loadu_ps(tile.scale.as_ptr().add(off));
                let mn = _mm512_loadu_ps(tile.min.as_ptr().add(off));
                for m in 0..MT {
                    blk[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[m]), sc, blk[m]);
                    let f = if NSUB == 8 {
                        xb[m].fsums32[s]
                    } else {
                        xb[m].fsums16[s]
                    };
                    acc[m] = _mm512_fnmadd_ps(mn, _mm512_set1_ps(f), acc[m]);
                }
            }
            for m in 0..MT {
                acc[m] = _mm512_fmadd_ps(blk[m], _mm512_set1_ps(xb[m].d), acc[m]);
            }
        }
        for m in 0..MT {
            _mm512_storeu_ps(out[m].as_mut_ptr(), acc[m]);
        }
    }

    /// Dot products of one weight row (`nb` blocks) with 1–4 quantized activation rows.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C; `w` must hold `nb`
    /// blocks and every `xs[t]` `nb` blocks.
    pub(super) unsafe fn dot_rows(
        kind: KQuant,
        w: &[u8],
        nb: usize,
        xs: &[&[BlockQ8K]],
        out: &mut [f32],
    ) {
        debug_assert!(w.len() >= nb * kind.block_bytes());
        match (kind, xs.len()) {
            (KQuant::Q4K, 1) => q4k::<1>(w.as_ptr(), nb, xs, out),
            (KQuant::Q4K, 2) => q4k::<2>(w.as_ptr(), nb, xs, out),
            (KQuant::Q4K, 3) => q4k::<3>(w.as_ptr(), nb, xs, out),
            (KQuant::Q4K, _) => q4k::<4>(w.as_ptr(), nb, xs, out),
            (KQuant::Q6K, 1) => q6k::<1>(w.as_ptr(), nb, xs, out),
            (KQuant::Q6K, 2) => q6k::<2>(w.as_ptr(), nb, xs, out),
            (KQuant::Q6K, 3) => q6k::<3>(w.as_ptr(), nb, xs, out),
            (KQuant::Q6K, _) => q6k::<4>(w.as_ptr(), nb, xs, out),
        }
    }

    /// Bytes ahead of the block being read that decode asks the memory system for: the
    /// hardware prefetcher stops at every 4 KiB page, a decode step streams the whole
    /// model from DRAM.
    const PREFETCH_AHEAD: usize = 2048;

    #[inline(always)]
    unsafe fn prefetch(blk: *const u8, bytes: usize) {
        let mut o = 0;
        while o < bytes {
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH_AHEAD + o).cast());
            o += 64;
        }
    }

    #[inline(always)]
    unsafe fn f16_at(p: *const u8) -> f32 {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// Lane indices for `vpermw`: 32 i16 lanes, `per` lanes per source index, sources
    /// starting at `first`.
    #[inline(always)]
    unsafe fn spread(first: i16, per: usize) -> __m512i {
        let idx: [i16; 32] = std::array::from_fn(|l| first + (l / per) as i16);
        _mm512_loadu_si512(idx.as_ptr().cast())
    }

    /// Q4_K block: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`; value
    /// `32s + l` of sub-block `s` is `d·sc[s]·q − dmin·m[s]`, where the 4-bit `q` of
    /// values `64j + l` (l < 32) is the low nibble of `qs[32j + l]` and of `64j + 32 + l`
    /// the high nibble.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q4k<const R: usize>(w: *const u8, nb: usize, xs: &[&[BlockQ8K]], out: &mut [f32]) {
        let idx = [spread(0, 16), spread(2, 16), spread(4, 16), spread(6, 16)];
        let mut facc = [_mm512_setzero_ps(); R];
        let mut fmin = [_mm_setzero_ps(); R];
        for b in 0..nb {
            let blk = w.add(b * 144);
            prefetch(blk, 144);
            let d = f16_at(blk);
            let dmin = f16_at(blk.add(2));
            let u = scales_mins_q4k(blk);
            let sc8 = _mm_cvtepu8_epi16(_mm_loadl_epi64(u.as_ptr().cast()));
            let mins8 = _mm_cvtepu8_epi16(_mm_loadl_epi64(u.as_ptr().add(2).cast()));
            let scb = _mm512_broadcast_i32x4(sc8);
            let q = q4k_values(blk);
            let s: [__m512i; 4] = std::array::from_fn(|j| _mm512_permutexvar_epi16(idx[j], scb));
            for r in 0..R {
                let xb = xs[r].get_unchecked(b);
                let acc = block_dot(&q, &s, xb.qs.as_ptr());
                facc[r] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(d * xb.d), facc[r]);
                let bs = _mm_loadu_si128(xb.bsums32.as_ptr().cast());
                let mm = _mm_madd_epi16(mins8, bs);
                fmin[r] = _mm_fmadd_ps(_mm_cvtepi32_ps(mm), _mm_set1_ps(dmin * xb.d), fmin[r]);
            }
        }
        for r in 0..R {
            out[r] = _mm512_reduce_add_ps(facc[r]) - hsum128(fmin[r]);
        }
    }

    /// Q6_K block: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`; value `v` is
    /// `d·scales[v / 16]·(q − 32)` with a 6-bit `q`. In half `h` (values `128h..`), value
    /// `l + 32t` (l < 32, t < 4) takes its low 4 bits from `ql[64h + l + 32(t & 1)]`
    /// (the high nibble when t ≥ 2) and its top 2 bits from bits `2t` of `qh[32h + l]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q6k<const R: usize>(w: *const u8, nb: usize, xs: &[&[BlockQ8K]], out: &mut [f32]) {
        let idx = [spread(0, 8), spread(4, 8), spread(8, 8), spread(12, 8)];
        let mut facc = [_mm512_setzero_ps(); R];
        let mut fmin = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let blk = w.add(b * 210);
            prefetch(blk, 210);
            let d = f16_at(blk.add(208));
            let s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(192).cast()));
            let sb = _mm512_castsi256_si512(s16);
            let q = q6k_values(blk);
            let s: [__m512i; 4] = std::array::from_fn(|j| _mm512_permutexvar_epi16(idx[j], sb));
            for r in 0..R {
                let xb = xs[r].get_unchecked(b);
                let acc = block_dot(&q, &s, xb.qs.as_ptr());
                let dd = d * xb.d;
                facc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(dd), facc[r]);
                // The −32 offset: Σ scale · 32 · Σx over each 16 values.
                let bs = _mm256_loadu_si256(xb.bsums16.as_ptr().cast());
                let mm = _mm256_madd_epi16(s16, bs);
                fmin[r] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(mm), _mm256_set1_ps(32.0 * dd), fmin[r]);
            }
        }
        for r in 0..R {
            out[r] = _mm512_reduce_add_ps(facc[r]) - hsum256(fmin[r]);
        }
    }

    #[inline(always)]
    unsafe fn hsum128(v: __m128) -> f32 {
        let a = _mm_add_ps(v, _mm_movehl_ps(v, v));
        let b = _mm_add_ss(a, _mm_shuffle_ps(a, a, 1));
        _mm_cvtss_f32(b)
    }

    #[inline(always)]
    unsafe fn hsum256(v: __m256) -> f32 {
        hsum128(_mm_add_ps(
            _mm256_castps256_ps128(v),
            _mm256_extractf128_ps(v, 1),
        ))
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::{BlockQ8K, KQuant};
    pub(super) unsafe fn dot_rows(_: KQuant, _: &[u8], _: usize, _: &[&[BlockQ8K]], _: &mut [f32]) {
        unreachable!("cpu_supported() is false off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// The kernels against candle's dequantized weight times our 8-bit activations
    /// dequantized (f32 matmul): the same arithmetic done another way, so the results
    /// must agree to float rounding — a wrong nibble, scale or sub-block sum shows up as
    /// an error thousands of times larger.
    fn check(dtype: GgmlDType, n: usize, k: usize, m: usize) {
        let Some(kind) = kernel_for(dtype, k) else {
            eprintln!("no AVX-512 VNNI on this CPU: the candle path serves {dtype:?}");
            return;
        };
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let wd = q.dequantize(&dev).unwrap();
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let x8: Vec<f32> = quantize_rows(&xs, m, k)
            .iter()
            .flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d))
            .collect();
        let x8 = Tensor::from_vec(x8, (m, k), &dev).unwrap();
        let want: Vec<f32> = x8
            .matmul(&wd.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut got = vec![0f32; m * n];
        matmul(kind, &q.data().unwrap(), n, k, &xs, m, &mut got);
        let scale = (k as f32).sqrt(); // outputs are of order sqrt(k)
        let mut worst = 0f32;
        for (g, e) in got.iter().zip(&want) {
            worst = worst.max((g - e).abs() / scale);
        }
        assert!(
            worst < 1e-4,
            "{dtype:?} {n}×{k}, {m} rows: worst error {worst} × sqrt(k)"
        );
        let spread = want.iter().map(|v| v.abs()).sum::<f32>() / want.len() as f32;
        assert!(
            spread > 0.3 * scale,
            "outputs of order sqrt(k), got mean |y| {spread}"
        );
        // And the 8-bit activations cost little against the f32 ones.
        let exact: Vec<f32> = x
            .matmul(&wd.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let rms = (got
            .iter()
            .zip(&exact)
            .map(|(g, e)| (g - e).powi(2))
            .sum::<f32>()
            / got.len() as f32)
            .sqrt();
        assert!(rms < 0.02 * scale, "8-bit activations: rms error {rms}");
    }

    #[test]
    fn q4k_kernel_matches_the_dequantized_weight() {
        for m in [1, 2, 3, 4, 5, 9, 16, 23] {
            check(GgmlDType::Q4K, 72, 512, m);
        }
        check(GgmlDType::Q4K, 256, 1536, 1);
    }

    #[test]
    fn q6k_kernel_matches_the_dequantized_weight() {
        for m in [1, 2, 3, 4, 5, 9, 16, 23] {
            check(GgmlDType::Q6K, 72, 512, m);
        }
        check(GgmlDType::Q6K, 256, 1536, 1);
    }

    #[test]
    fn zero_and_non_multiple_inputs_are_handled() {
        assert_eq!(
            kernel_for(GgmlDType::Q4K, 100),
            None,
            "k must be a multiple of 256"
        );
        assert_eq!(kernel_for(GgmlDType::Q8_0, 512), None, "only Q4_K and Q6_K");
        let b = BlockQ8K::quantize(&[0.0; QK_K]);
        assert_eq!(b.d, 0.0);
        assert!(b.qs.iter().all(|&q| q == 0));
    }
}
