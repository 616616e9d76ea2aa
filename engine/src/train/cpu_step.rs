//! The LoRA training step written out for the CPU: forward pass, loss and backward pass
//! of a dense f32 decoder over buffers that live from one step to the next, without
//! candle's autograd.
//!
//! Why: with every piece already a fused op with its own backward (`llm::fused`,
//! `FrozenLora`), a step of the 0.5B at seq 512 still took 6.3 s where its matrix
//! products need ~3 s (`kura bench train`). The rest was the autograd graph
//! itself: every gradient starts as `zeros_like` + `add` (`GradStore::or_insert`), every
//! element-wise op (SwiGLU, residual adds, reshapes to and from heads) allocates its
//! output, and those fresh allocations cost page faults and kernel page clearing — a
//! quarter of the CPU time was system time. Here the forward keeps exactly what the
//! backward needs in reusable buffers, the heads are read in place with strided
//! matrix products, residual sums are accumulated into the products' outputs, the
//! vocabulary-sized logits exist one chunk of rows at a time, and the gradients of the
//! frozen weights are never formed — only those of the inputs and of LoRA's `A` and `B`.
//!
//! The formulas are those of the fused ops (see their docs), for one block:
//!
//! ```text
//! n₁ = rms(x)·w₁   q,k,v = n₁·Wᵀ + b + s·((n₁⊙m)·A)·B   (RoPE on q, k)
//! a  = softmax(q·kᵀ/√d + causal)·v                       (per head; log-sum-exp kept)
//! x' = x + o(a)    n₂ = rms(x')·w₂    y = x' + down(silu(gate(n₂)) ⊙ up(n₂))
//! ```
//!
//! and the backward pass walks it in reverse, recomputing the attention probabilities
//! from `q`, `k` and the saved log-sum-exp, and `silu(gate)·up` from `gate` and `up`.
//! [`loss_and_grads`] returns `None` where it does not apply (other devices or types, an
//! adapter on the output projection): the trainer then uses the autograd path, which
//! stays the reference — the tests compare the two on the fixture model, loss and every
//! LoRA gradient, with and without dropout.

use super::dataset::TokenizedExample;
use crate::llm::layers::{DecoderView, RopeStyle};
use crate::llm::{AdapterId, Linear, LoraDropout, Model};
use crate::matmul::{matmul, matmul_raw, Mat, SharedOut};
use candle_core::{CpuStorage, DType, Device, Storage, Tensor, TensorId};
use rayon::prelude::*;

/// Buffers kept between steps (their memory is reused rather than allocated, faulted
/// in and cleared again every step).
#[derive(Default)]
pub struct Workspace {
    layers: Vec<Saved>,
    x: Vec<f32>,
    nf: Vec<f32>,
    act: Vec<f32>,
    dact: Vec<f32>,
    dx: Vec<f32>,
    dn: Vec<f32>,
    datt: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dkh: Vec<f32>,
    dvh: Vec<f32>,
    gb: Vec<f32>,
    xm: Vec<f32>,
    logits: Vec<f32>,
    rows: Vec<f32>,
    drows: Vec<f32>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workspace({} layers)", self.layers.len())
    }
}

/// What one block's forward pass keeps for its backward pass.
#[derive(Default)]
struct Saved {
    x_in: Vec<f32>,
    n1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    lse: Vec<f32>,
    att: Vec<f32>,
    x_mid: Vec<f32>,
    n2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// `(x⊙m)·A` per projection (q, k, v, o, gate, up, down).
    h: [Vec<f32>; 7],
    /// Dropout masks per projection (empty without dropout).
    masks: [Vec<f32>; 7],
}

/// The summed NLL of a batch's scored tokens, their count, and the gradient of
/// `loss_scale × NLL` for every `A` and `B` of the active adapter.
#[derive(Debug)]
pub struct StepOutput {
    /// Σ −log p(target) over the scored positions (not scaled).
    pub nll: f64,
    /// How many positions were scored.
    pub targets: usize,
    /// Gradient per adapter tensor (`LoraAdapter::a`/`b` ids, i.e. the trainer's `Var`s).
    pub grads: Vec<(TensorId, Tensor)>,
}

/// A contiguous f32 CPU tensor's values, borrowed for the whole step.
struct Held<'t> {
    guard: candle_core::StorageRef<'t>,
    start: usize,
    len: usize,
}

impl<'t> Held<'t> {
    fn of(t: &'t Tensor) -> Option<Self> {
        if t.dtype() != DType::F32 {
            return None;
        }
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))).then_some(Self {
            guard,
            start,
            len: end - start,
        })
    }

    fn slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.start + self.len],
            _ => unreachable!("checked in Held::of"),
        }
    }
}

/// One projection's frozen weight, bias and (optional) adapter, as slices.
struct Proj<'a> {
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    n_in: usize,
    n_out: usize,
    lora: Option<LoraRef<'a>>,
}

struct LoraRef<'a> {
    a: &'a [f32],
    b: &'a [f32],
    r: usize,
    scale: f32,
    a_id: TensorId,
    b_id: TensorId,
}

/// The tensors a projection reads, in the order [`Proj`] is built from them.
fn proj_tensors(lin: &Linear, active: Option<AdapterId>) -> Option<Vec<&Tensor>> {
    let mut out = vec![lin.dense_weight()?];
    out.extend(lin.bias());
    let mut adapters = lin.adapters().iter().filter(|(id, _)| Some(*id) == active);
    if let Some((_, ad)) = adapters.next() {
        out.push(ad.a());
        out.push(ad.b());
    }
    Some(out)
}

fn proj<'a>(
    lin: &Linear,
    active: Option<AdapterId>,
    held: &mut std::slice::Iter<'a, Held<'_>>,
) -> Proj<'a> {
    let mut next = || held.next().expect("tensors held in order").slice();
    let w = next();
    let bias = lin.bias().map(|_| next());
    let lora = lin
        .adapters()
        .iter()
        .find(|(id, _)| Some(*id) == active)
        .map(|(_, ad)| LoraRef {
            a: next(),
            b: next(),
            r: ad.rank(),
            scale: ad.scale() as f32,
            a_id: ad.a().id(),
            b_id: ad.b().id(),
        });
    Proj {
        w,
        bias,
        n_in: lin.in_dim(),
        n_out: lin.out_dim(),
        lora,
    }
}

/// Runs the step when it applies (CPU, f32, a supported shape); `None` otherwise.
/// `active`: the adapter trained (`None`: the base model alone); without `backward`
/// only the loss is computed (evaluation), keeping nothing for a backward pass.
pub fn loss_and_grads(
    model: &Model,
    active: Option<AdapterId>,
    batch: &[&TokenizedExample],
    dropout: Option<&LoraDropout>,
    loss_scale: f64,
    backward: bool,
    ws: &mut Workspace,
) -> Option<candle_core::Result<StepOutput>> {
    if !model.device().is_cpu() {
        return None;
    }
    let view = model.decoder_view()?;
    if view
        .lm_head
        .adapters()
        .iter()
        .any(|(id, _)| Some(*id) == active)
    {
        return None;
    }
    // Hold every tensor the step reads: embedding, then per block its norms and
    // projections, then the final norm, the output projection and the RoPE tables.
    let mut tensors: Vec<&Tensor> = vec![view.embed];
    for b in &view.blocks {
        tensors.push(b.attn_norm.weight());
        for lin in [b.q, b.k, b.v, b.o] {
            tensors.extend(proj_tensors(lin, active)?);
        }
        tensors.push(b.ffn_norm.weight());
        for lin in [b.gate, b.up, b.down] {
            tensors.extend(proj_tensors(lin, active)?);
        }
    }
    tensors.push(view.norm.weight());
    tensors.push(view.lm_head.dense_weight()?);
    let (cos, sin) = view.rotary.tables();
    tensors.extend([cos, sin]);
    let held: Vec<Held> = tensors.iter().map(|t| Held::of(t)).collect::<Option<_>>()?;
    let d = view.head_dim;
    let shape_ok = view.blocks.iter().all(|b| {
        b.q.out_dim() == view.num_heads * d
            && b.k.out_dim() == view.num_kv_heads * d
            && b.v.out_dim() == view.num_kv_heads * d
            && b.o.in_dim() == view.num_heads * d
            && b.gate.out_dim() == b.down.in_dim()
    }) && view.num_kv_heads > 0
        && view.num_heads.is_multiple_of(view.num_kv_heads)
        && cos.dims().get(1) == Some(&(d / 2));
    if !shape_ok {
        return None;
    }
    Some(run(
        &view, active, &held, batch, dropout, loss_scale, backward, ws,
    ))
}

/// The weights of one block as slices.
struct BlockRef<'a> {
    norm1: &'a [f32],
    q: Proj<'a>,
    k: Proj<'a>,
    v: Proj<'a>,
    o: Proj<'a>,
    norm2: &'a [f32],
    gate: Proj<'a>,
    up: Proj<'a>,
    down: Proj<'a>,
}

#[allow(clippy::too_many_arguments)]
fn run(
    view: &DecoderView<'_>,
    active: Option<AdapterId>,
    held: &[Held<'_>],
    batch: &[&TokenizedExample],
    dropout: Option<&LoraDropout>,
    loss_scale: f64,
    backward: bool,
    ws: &mut Workspace,
) -> candle_core::Result<StepOutput> {
    let th = rayon::current_num_threads().max(1);
    let mut it = held.iter();
    let embed = it.next().expect("embedding").slice();
    let blocks: Vec<BlockRef> = view
        .blocks
        .iter()
        .map(|b| BlockRef {
            norm1: it.next().expect("norm").slice(),
            q: proj(b.q, active, &mut it),
            k: proj(b.k, active, &mut it),
            v: proj(b.v, active, &mut it),
            o: proj(b.o, active, &mut it),
            norm2: it.next().expect("norm").slice(),
            gate: proj(b.gate, active, &mut it),
            up: proj(b.up, active, &mut it),
            down: proj(b.down, active, &mut it),
        })
        .collect();
    let final_norm = it.next().expect("final norm").slice();
    let head_w = it.next().expect("output projection").slice();
    let cos = it.next().expect("cos").slice();
    let sin = it.next().expect("sin").slice();

    let hidden = view.norm.weight().elem_count();
    let vocab = view.lm_head.out_dim();
    let (nh, nkv, d) = (view.num_heads, view.num_kv_heads, view.head_dim);
    let (qd, kd) = (nh * d, nkv * d);
    let eps1: Vec<f32> = view.blocks.iter().map(|b| b.attn_norm.eps()).collect();
    let eps2: Vec<f32> = view.blocks.iter().map(|b| b.ffn_norm.eps()).collect();
    let epsf = view.norm.eps();

    // The batch: right-padded sequences of `len` tokens; scored rows and targets.
    let b = batch.len();
    let len = batch.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let t = b * len;
    let mut ids = Vec::with_capacity(t);
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for (r, ex) in batch.iter().enumerate() {
        ids.extend_from_slice(&ex.ids);
        ids.extend(std::iter::repeat_n(0u32, len - ex.ids.len()));
        for p in 0..ex.ids.len().saturating_sub(1) {
            if ex.mask[p + 1] == 1 {
                rows.push(r * len + p);
                targets.push(ex.ids[p + 1] as usize);
            }
        }
    }
    if rows.is_empty() {
        return Ok(StepOutput {
            nll: 0.0,
            targets: 0,
            grads: Vec::new(),
        });
    }
    if len > cos.len() / (d / 2) {
        candle_core::bail!(
            "sequence of {len} tokens is longer than the model's {} positions",
            cos.len() / (d / 2)
        );
    }
    if let Some(&bad) = ids
        .iter()
        .find(|&&i| (i as usize + 1) * hidden > embed.len())
    {
        candle_core::bail!("token id {bad} is outside the vocabulary");
    }
    if targets.iter().any(|&tg| tg >= vocab) {
        candle_core::bail!("a target token is outside the vocabulary");
    }

    ws.layers.resize_with(blocks.len(), Saved::default);
    let Workspace {
        layers,
        x,
        nf,
        act,
        dact,
        dx,
        dn,
        datt,
        dq,
        dk,
        dv,
        dkh,
        dvh,
        gb,
        xm,
        logits,
        rows: row_buf,
        drows,
    } = ws;

    // ---- forward ----
    let mut cx = Ctx {
        t,
        th,
        dropout,
        gb,
        xm,
        grads: Vec::new(),
    };
    let x = sized(x, t * hidden);
    for (row, &id) in x.chunks_exact_mut(hidden).zip(&ids) {
        let id = id as usize;
        row.copy_from_slice(&embed[id * hidden..(id + 1) * hidden]);
    }
    let rope = |buf: &mut [f32], heads: usize, inverse: bool| {
        rotate(buf, len, heads, d, cos, sin, view.rotary.style(), inverse)
    };
    for (l, (blk, sv)) in blocks.iter().zip(layers.iter_mut()).enumerate() {
        let inter = blk.gate.n_out;
        let x_in = copy_into(&mut sv.x_in, x);
        let n1 = sized(&mut sv.n1, t * hidden);
        rms_norm(x_in, blk.norm1, eps1[l], n1, hidden);
        let [hq, hk, hv, ho, hg, hu, hd] = &mut sv.h;
        let [mq, mk, mv, mo, mg, mu, md] = &mut sv.masks;
        cx.forward(&blk.q, n1, mq, sized(&mut sv.q, t * qd), false, hq);
        cx.forward(&blk.k, n1, mk, sized(&mut sv.k, t * kd), false, hk);
        cx.forward(&blk.v, n1, mv, sized(&mut sv.v, t * kd), false, hv);
        rope(&mut sv.q, nh, false);
        rope(&mut sv.k, nkv, false);
        let att = sized(&mut sv.att, t * qd);
        let lse = sized(&mut sv.lse, b * nh * len);
        attention_forward(
            &sv.q,
            &sv.k,
            &sv.v,
            att,
            lse,
            b,
            len,
            nh,
            nkv,
            d,
            CAUSAL_BLOCK,
        );
        // x' = x + o(att): the product accumulates onto a copy of the residual.
        let x_mid = copy_into(&mut sv.x_mid, &sv.x_in);
        cx.forward(&blk.o, &sv.att, mo, x_mid, true, ho);
        let n2 = sized(&mut sv.n2, t * hidden);
        rms_norm(&sv.x_mid, blk.norm2, eps2[l], n2, hidden);
        cx.forward(&blk.gate, n2, mg, sized(&mut sv.gate, t * inter), false, hg);
        cx.forward(&blk.up, n2, mu, sized(&mut sv.up, t * inter), false, hu);
        let act = sized(act, t * inter);
        swiglu(&sv.gate, &sv.up, act, inter);
        x.copy_from_slice(&sv.x_mid);
        cx.forward(&blk.down, act, md, x, true, hd);
    }
    let nf = sized(nf, t * hidden);
    rms_norm(x, final_norm, epsf, nf, hidden);

    // ---- loss and its gradient with respect to the final norm's output ----
    let dnf = sized(dn, t * hidden);
    dnf.fill(0.0);
    let nll = loss_head(
        nf,
        head_w,
        &rows,
        &targets,
        hidden,
        vocab,
        backward.then_some(loss_scale as f32),
        dnf,
        logits,
        row_buf,
        drows,
        th,
    );
    if !backward {
        return Ok(StepOutput {
            nll,
            targets: rows.len(),
            grads: Vec::new(),
        });
    }
    let dx = sized(dx, t * hidden);
    dx.fill(0.0);
    rms_norm_backward(x, final_norm, epsf, dnf, dx, hidden);

    // ---- backward, last block first ----
    for (l, (blk, sv)) in blocks.iter().zip(layers.iter_mut()).enumerate().rev() {
        let inter = blk.gate.n_out;
        let [hq, hk, hv, ho, hg, hu, hd] = &sv.h;
        let [mq, mk, mv, mo, mg, mu, md] = &sv.masks;
        // y = x' + down(silu(gate)·up); `gate` and `up` become their gradients.
        let act = sized(act, t * inter);
        swiglu(&sv.gate, &sv.up, act, inter);
        let dact = sized(dact, t * inter);
        cx.backward(&blk.down, dx, act, md, hd, dact, false);
        swiglu_backward(&mut sv.gate, &mut sv.up, dact, inter);
        let dn2 = sized(dn, t * hidden);
        cx.backward(&blk.gate, &sv.gate, &sv.n2, mg, hg, dn2, false);
        cx.backward(&blk.up, &sv.up, &sv.n2, mu, hu, dn2, true);
        rms_norm_backward(&sv.x_mid, blk.norm2, eps2[l], dn2, dx, hidden);
        // x' = x + o(attention(q, k, v))
        let datt = sized(datt, t * qd);
        cx.backward(&blk.o, dx, &sv.att, mo, ho, datt, false);
        let (dq, dk, dv) = (sized(dq, t * qd), sized(dk, t * kd), sized(dv, t * kd));
        attention_backward(
            &sv.q,
            &sv.k,
            &sv.v,
            &sv.lse,
            datt,
            dq,
            dk,
            dv,
            dkh,
            dvh,
            b,
            len,
            nh,
            nkv,
            d,
            CAUSAL_BLOCK,
        );
        rope(dq, nh, true);
        rope(dk, nkv, true);
        let dn1 = sized(dn, t * hidden);
        cx.backward(&blk.q, dq, &sv.n1, mq, hq, dn1, false);
        cx.backward(&blk.k, dk, &sv.n1, mk, hk, dn1, true);
        cx.backward(&blk.v, dv, &sv.n1, mv, hv, dn1, true);
        rms_norm_backward(&sv.x_in, blk.norm1, eps1[l], dn1, dx, hidden);
    }
    let grads = cx
        .grads
        .into_iter()
        .map(|(id, g, shape)| Ok((id, Tensor::from_vec(g, shape, &Device::Cpu)?)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(StepOutput {
        nll,
        targets: rows.len(),
        grads,
    })
}

/// What the projections of a step share: its rows, threads and dropout, two scratch
/// buffers, and the adapter gradients collected so far.
struct Ctx<'w> {
    t: usize,
    th: usize,
    dropout: Option<&'w LoraDropout>,
    gb: &'w mut Vec<f32>,
    xm: &'w mut Vec<f32>,
    grads: Vec<(TensorId, Vec<f32>, (usize, usize))>,
}

impl Ctx<'_> {
    /// Draws the projection's dropout mask into `mask`, then [`proj_forward`].
    fn forward(
        &mut self,
        p: &Proj,
        x: &[f32],
        mask: &mut Vec<f32>,
        out: &mut [f32],
        acc: bool,
        h: &mut Vec<f32>,
    ) {
        set_mask(mask, self.dropout, x.len());
        proj_forward(p, self.t, x, mask_of(mask), out, acc, h, self.xm, self.th);
    }

    /// [`proj_backward`] with the mask and `h` its forward kept.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        p: &Proj,
        g: &[f32],
        x: &[f32],
        mask: &[f32],
        h: &[f32],
        dx: &mut [f32],
        acc: bool,
    ) {
        let (t, th) = (self.t, self.th);
        let m = mask_of(mask);
        proj_backward(
            p,
            t,
            g,
            x,
            m,
            h,
            dx,
            acc,
            &mut self.grads,
            self.gb,
            self.xm,
            th,
        );
    }
}

/// `buf` resized to exactly `n` values (contents unspecified: every caller overwrites
/// them). Its capacity stays, so a later, longer batch reuses the memory.
fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buf.resize(n, 0.0);
    buf
}

fn copy_into<'b>(buf: &'b mut Vec<f32>, src: &[f32]) -> &'b mut [f32] {
    let out = sized(buf, src.len());
    out.copy_from_slice(src);
    out
}

/// Draws the next dropout mask of `n` values into `buf` (left empty without dropout).
fn set_mask(buf: &mut Vec<f32>, dropout: Option<&LoraDropout>, n: usize) {
    buf.clear();
    if let Some(m) = dropout.and_then(|d| d.mask_values(n)) {
        *buf = m;
    }
}

fn mask_of(buf: &[f32]) -> Option<&[f32]> {
    (!buf.is_empty()).then_some(buf)
}

/// Rows per parallel chunk of an element-wise pass over `rows` rows.
fn chunk_rows(rows: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads().max(1) * 4)
        .max(1)
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], width: usize) {
    let cr = chunk_rows(x.len() / width) * width;
    out.par_chunks_mut(cr)
        .zip(x.par_chunks(cr))
        .for_each(|(out, x)| {
            for (o, row) in out.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                let ms = row.iter().map(|v| (v * v) as f64).sum::<f64>() / width as f64;
                let r = (1.0 / (ms + eps as f64).sqrt()) as f32;
                for ((o, v), g) in o.iter_mut().zip(row).zip(w) {
                    *o = v * r * g;
                }
            }
        });
}

/// `dx += ∂/∂x` of `rms(x)·w` given `dy`: `r·(dy⊙w) − x·r³/H·Σ(dy⊙w⊙x)`.
fn rms_norm_backward(x: &[f32], w: &[f32], eps: f32, dy: &[f32], dx: &mut [f32], width: usize) {
    let cr = chunk_rows(x.len() / width) * width;
    dx.par_chunks_mut(cr)
        .zip(x.par_chunks(cr).zip(dy.par_chunks(cr)))
        .for_each(|(dx, (x, dy))| {
            for ((dx, x), dy) in dx
                .chunks_exact_mut(width)
                .zip(x.chunks_exact(width))
                .zip(dy.chunks_exact(width))
            {
                let ms = x.iter().map(|v| (v * v) as f64).sum::<f64>() / width as f64;
                let r = 1.0 / (ms + eps as f64).sqrt();
                let dot: f64 = x
                    .iter()
                    .zip(dy)
                    .zip(w)
                    .map(|((x, g), w)| (x * g * w) as f64)
                    .sum();
                let coef = (dot * r * r * r / width as f64) as f32;
                let r = r as f32;
                for (((o, x), g), w) in dx.iter_mut().zip(x).zip(dy).zip(w) {
                    *o += r * g * w - x * coef;
                }
            }
        });
}

/// `act = silu(gate) ⊙ up`.
fn swiglu(gate: &[f32], up: &[f32], act: &mut [f32], width: usize) {
    let cr = chunk_rows(gate.len() / width) * width;
    act.par_chunks_mut(cr)
        .zip(gate.par_chunks(cr).zip(up.par_chunks(cr)))
        .for_each(|(act, (gate, up))| {
            act.copy_from_slice(gate);
            crate::llm::simd::sigmoid_in_place(act);
            for ((a, g), u) in act.iter_mut().zip(gate).zip(up) {
                *a *= g * u;
            }
        });
}

/// Given `dact`, overwrites `gate` with `∂gate = dact·up·σ(g)(1 + g(1 − σ(g)))` and
/// `up` with `∂up = dact·silu(g)`.
fn swiglu_backward(gate: &mut [f32], up: &mut [f32], dact: &[f32], width: usize) {
    let cr = chunk_rows(gate.len() / width) * width;
    gate.par_chunks_mut(cr)
        .zip(up.par_chunks_mut(cr).zip(dact.par_chunks(cr)))
        .for_each_init(Vec::new, |sig, (gate, (up, dact))| {
            let sig = copy_into(sig, gate);
            crate::llm::simd::sigmoid_in_place(sig);
            for (((g, u), da), s) in gate.iter_mut().zip(up.iter_mut()).zip(dact).zip(sig.iter()) {
                let (gv, uv) = (*g, *u);
                *u = da * gv * s;
                *g = da * uv * s * (1.0 + gv * (1.0 - s));
            }
        });
}

/// Rotates every head of `buf: [tokens, heads·d]` (position = token index within its
/// sequence of `len`) by its RoPE angle, or by the opposite angle (`inverse`, the
/// backward pass: a rotation's transpose).
#[allow(clippy::too_many_arguments)]
fn rotate(
    buf: &mut [f32],
    len: usize,
    heads: usize,
    d: usize,
    cos: &[f32],
    sin: &[f32],
    style: RopeStyle,
    inverse: bool,
) {
    let half = d / 2;
    let width = heads * d;
    let sign = if inverse { -1.0f32 } else { 1.0 };
    buf.par_chunks_mut(width)
        .enumerate()
        .for_each(|(tok, row)| {
            let p = tok % len;
            let (c, s) = (
                &cos[p * half..(p + 1) * half],
                &sin[p * half..(p + 1) * half],
            );
            for head in row.chunks_exact_mut(d) {
                for i in 0..half {
                    let (ia, ib) = match style {
                        RopeStyle::Neox => (i, i + half),
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    };
                    let (a, bv) = (head[ia], head[ib]);
                    let sn = sign * s[i];
                    head[ia] = a * c[i] - bv * sn;
                    head[ib] = a * sn + bv * c[i];
                }
            }
        });
}

/// `x⊙m` in `buf`, or `x` itself without a mask.
fn masked<'a>(x: &'a [f32], mask: Option<&[f32]>, buf: &'a mut Vec<f32>) -> &'a [f32] {
    match mask {
        None => x,
        Some(m) => {
            let out = sized(buf, x.len());
            out.par_chunks_mut(4096)
                .zip(x.par_chunks(4096).zip(m.par_chunks(4096)))
                .for_each(|(o, (x, m))| {
                    for ((o, x), m) in o.iter_mut().zip(x).zip(m) {
                        *o = x * m;
                    }
                });
            out
        }
    }
}

/// `out (+)= x·Wᵀ + bias + s·((x⊙m)·A)·B`, keeping `h = (x⊙m)·A`.
#[allow(clippy::too_many_arguments)]
fn proj_forward(
    p: &Proj,
    t: usize,
    x: &[f32],
    mask: Option<&[f32]>,
    out: &mut [f32],
    acc: bool,
    h: &mut Vec<f32>,
    xm: &mut Vec<f32>,
    th: usize,
) {
    let (ni, no) = (p.n_in, p.n_out);
    matmul(
        out,
        no,
        t,
        no,
        ni,
        Mat::rows(x, ni),
        Mat::rows(p.w, ni).t(),
        acc,
        1.0,
        th,
    );
    if let Some(bias) = p.bias {
        let cr = chunk_rows(t) * no;
        out.par_chunks_mut(cr).for_each(|o| {
            for row in o.chunks_exact_mut(no) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        });
    }
    if let Some(l) = &p.lora {
        let xin = masked(x, mask, xm);
        let h = sized(h, t * l.r);
        matmul(
            h,
            l.r,
            t,
            l.r,
            ni,
            Mat::rows(xin, ni),
            Mat::rows(l.a, l.r),
            false,
            1.0,
            th,
        );
        matmul(
            out,
            no,
            t,
            no,
            l.r,
            Mat::rows(h, l.r),
            Mat::rows(l.b, no),
            true,
            l.scale,
            th,
        );
    }
}

/// Given `g = ∂y` of [`proj_forward`]: `dx (+)= g·W + s·((g·Bᵀ)·Aᵀ)⊙m`, and the
/// adapter's `∂A = s·(x⊙m)ᵀ·(g·Bᵀ)`, `∂B = s·hᵀ·g` appended to `grads`.
#[allow(clippy::too_many_arguments)]
fn proj_backward(
    p: &Proj,
    t: usize,
    g: &[f32],
    x: &[f32],
    mask: Option<&[f32]>,
    h: &[f32],
    dx: &mut [f32],
    acc: bool,
    grads: &mut Vec<(TensorId, Vec<f32>, (usize, usize))>,
    gb: &mut Vec<f32>,
    xm: &mut Vec<f32>,
    th: usize,
) {
    let (ni, no) = (p.n_in, p.n_out);
    matmul(
        dx,
        ni,
        t,
        ni,
        no,
        Mat::rows(g, no),
        Mat::rows(p.w, ni),
        acc,
        1.0,
        th,
    );
    let Some(l) = &p.lora else { return };
    let r = l.r;
    let mut db = vec![0f32; r * no];
    matmul(
        &mut db,
        no,
        r,
        no,
        t,
        Mat::rows(h, r).t(),
        Mat::rows(g, no),
        false,
        l.scale,
        th,
    );
    let gb = sized(gb, t * r);
    matmul(
        gb,
        r,
        t,
        r,
        no,
        Mat::rows(g, no),
        Mat::rows(l.b, no).t(),
        false,
        1.0,
        th,
    );
    let mut da = vec![0f32; ni * r];
    {
        let xin = masked(x, mask, xm);
        matmul(
            &mut da,
            r,
            ni,
            r,
            t,
            Mat::rows(xin, ni).t(),
            Mat::rows(gb, r),
            false,
            l.scale,
            th,
        );
    }
    match mask {
        None => matmul(
            dx,
            ni,
            t,
            ni,
            r,
            Mat::rows(gb, r),
            Mat::rows(l.a, r).t(),
            true,
            l.scale,
            th,
        ),
        Some(m) => {
            let tmp = sized(xm, t * ni);
            matmul(
                tmp,
                ni,
                t,
                ni,
                r,
                Mat::rows(gb, r),
                Mat::rows(l.a, r).t(),
                false,
                l.scale,
                th,
            );
            dx.par_chunks_mut(4096)
                .zip(tmp.par_chunks(4096).zip(m.par_chunks(4096)))
                .for_each(|(d, (v, m))| {
                    for ((d, v), m) in d.iter_mut().zip(v).zip(m) {
                        *d += v * m;
                    }
                });
        }
    }
    grads.push((l.a_id, da, (ni, r)));
    grads.push((l.b_id, db, (r, no)));
}

/// Query rows per block of the causal attention: a block's scores reach only the keys
/// up to its last row, so the products skip (almost) the whole masked upper triangle,
/// and the score buffers are `CAUSAL_BLOCK × seq` instead of `seq × seq`.
pub const CAUSAL_BLOCK: usize = 64;

/// Causal grouped-query attention of `b` sequences of `len` tokens, per (sequence,
/// head) and block of `block` query rows: `att = softmax(q·kᵀ/√d + causal)·v` into the
/// head's columns of `att`, and the rows' log-sum-exp into `lse: [b, heads, len]` for
/// the backward pass.
#[allow(clippy::too_many_arguments)]
fn attention_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    att: &mut [f32],
    lse: &mut [f32],
    b: usize,
    len: usize,
    nh: usize,
    nkv: usize,
    d: usize,
    block: usize,
) {
    let (qd, kd, rep) = (nh * d, nkv * d, nh / nkv);
    let scale = 1.0 / (d as f32).sqrt();
    assert_eq!(att.len(), b * len * qd);
    let out = SharedOut::new(att);
    lse.par_chunks_mut(len)
        .enumerate()
        .for_each_init(Vec::new, |scores, (task, lse)| {
            let (s, h) = (task / nh, task % nh);
            let g = h / rep;
            let qm = Mat::strided(&q[s * len * qd + h * d..], qd);
            let km = Mat::strided(&k[s * len * kd + g * d..], kd);
            let vm = Mat::strided(&v[s * len * kd + g * d..], kd);
            for r0 in (0..len).step_by(block) {
                let r1 = (r0 + block).min(len);
                let p = sized(scores, (r1 - r0) * len);
                matmul(
                    p,
                    len,
                    r1 - r0,
                    r1,
                    d,
                    qm.skip_rows(r0),
                    km.t(),
                    false,
                    scale,
                    1,
                );
                for (i, row) in (r0..r1).zip(p.chunks_exact_mut(len)) {
                    let live = &mut row[..=i];
                    let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum = crate::llm::simd::exp_shifted_in_place(live, max);
                    let inv = (1.0 / sum) as f32;
                    live.iter_mut().for_each(|e| *e *= inv);
                    row[i + 1..r1].fill(0.0);
                    lse[i] = max + (sum.ln() as f32);
                }
                // SAFETY: rows r0..r1 of sequence s in this head's d columns belong to
                // this task alone.
                unsafe {
                    matmul_raw(
                        out.at((s * len + r0) * qd + h * d),
                        qd,
                        r1 - r0,
                        d,
                        r1,
                        Mat::rows(p, len),
                        vm,
                        false,
                        1.0,
                        1,
                    )
                };
            }
        });
}

/// The backward pass of [`attention_forward`], block by block of query rows: with `P`
/// recomputed from `q`, `k` and `lse`, `∂v = Pᵀ·∂a`, `∂P = ∂a·vᵀ`,
/// `∂S = P⊙(∂P − rowsum(∂P⊙P))`, `∂q = ∂S·k/√d`, `∂k = ∂Sᵀ·q/√d`; key/value gradients of
/// the heads sharing a group are summed.
#[allow(clippy::too_many_arguments)]
fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lse: &[f32],
    datt: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dkh: &mut Vec<f32>,
    dvh: &mut Vec<f32>,
    b: usize,
    len: usize,
    nh: usize,
    nkv: usize,
    d: usize,
    block: usize,
) {
    let (qd, kd, rep) = (nh * d, nkv * d, nh / nkv);
    let scale = 1.0 / (d as f32).sqrt();
    let dkh = sized(dkh, b * nh * len * d);
    let dvh = sized(dvh, b * nh * len * d);
    assert_eq!(dq.len(), b * len * qd);
    let dq_out = SharedOut::new(dq);
    dkh.par_chunks_mut(len * d)
        .zip(dvh.par_chunks_mut(len * d))
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(pbuf, dpbuf), (task, (dkh, dvh))| {
                let (s, h) = (task / nh, task % nh);
                let g = h / rep;
                let qm = Mat::strided(&q[s * len * qd + h * d..], qd);
                let km = Mat::strided(&k[s * len * kd + g * d..], kd);
                let vm = Mat::strided(&v[s * len * kd + g * d..], kd);
                let dym = Mat::strided(&datt[s * len * qd + h * d..], qd);
                let lse = &lse[task * len..(task + 1) * len];
                // Every block adds to the keys and values up to its last row.
                dkh.fill(0.0);
                dvh.fill(0.0);
                for r0 in (0..len).step_by(block) {
                    let r1 = (r0 + block).min(len);
                    let m = r1 - r0;
                    let p = sized(pbuf, m * len);
                    matmul(p, len, m, r1, d, qm.skip_rows(r0), km.t(), false, scale, 1);
                    for (i, row) in (r0..r1).zip(p.chunks_exact_mut(len)) {
                        crate::llm::simd::exp_shifted_in_place(&mut row[..=i], lse[i]);
                        row[i + 1..r1].fill(0.0);
                    }
                    let (p, pm) = (&*p, Mat::rows(p, len));
                    matmul(dvh, d, r1, d, m, pm.t(), dym.skip_rows(r0), true, 1.0, 1);
                    let dp = sized(dpbuf, m * len);
                    matmul(dp, len, m, r1, d, dym.skip_rows(r0), vm.t(), false, 1.0, 1);
                    for (i, (dp, p)) in
                        (r0..r1).zip(dp.chunks_exact_mut(len).zip(p.chunks_exact(len)))
                    {
                        let dot: f32 = dp[..=i].iter().zip(&p[..=i]).map(|(a, b)| a * b).sum();
                        for (x, pv) in dp[..=i].iter_mut().zip(&p[..=i]) {
                            *x = pv * (*x - dot);
                        }
                        dp[i + 1..r1].fill(0.0);
                    }
                    let dsm = Mat::rows(dp, len);
                    // SAFETY: rows r0..r1 of sequence s in this head's d columns belong
                    // to this task alone.
                    unsafe {
                        matmul_raw(
                            dq_out.at((s * len + r0) * qd + h * d),
                            qd,
                            m,
                            d,
                            r1,
                            dsm,
                            km,
                            false,
                            scale,
                            1,
                        )
                    };
                    matmul(dkh, d, r1, d, m, dsm.t(), qm.skip_rows(r0), true, scale, 1);
                }
            },
        );
    // Sum each group's heads into the key/value gradients.
    for (dst, src) in [(dk, &*dkh), (dv, &*dvh)] {
        dst.par_chunks_mut(kd).enumerate().for_each(|(tok, row)| {
            let (s, i) = (tok / len, tok % len);
            for (g, out) in row.chunks_exact_mut(d).enumerate() {
                out.fill(0.0);
                for h in g * rep..(g + 1) * rep {
                    let at = ((s * nh + h) * len + i) * d;
                    for (o, v) in out.iter_mut().zip(&src[at..at + d]) {
                        *o += v;
                    }
                }
            }
        });
    }
}

/// The summed NLL of `targets` at `rows` of the final hidden states `nf`, and (given a
/// `scale`) `dnf[rows] += scale·(softmax − onehot)·W` — the logits exist one chunk of rows at a
/// time (the whole `[rows, vocab]` matrix is 311 MB for the 0.5B at seq 512).
#[allow(clippy::too_many_arguments)]
fn loss_head(
    nf: &[f32],
    w: &[f32],
    rows: &[usize],
    targets: &[usize],
    hidden: usize,
    vocab: usize,
    scale: Option<f32>,
    dnf: &mut [f32],
    logits: &mut Vec<f32>,
    xbuf: &mut Vec<f32>,
    dxbuf: &mut Vec<f32>,
    th: usize,
) -> f64 {
    const CHUNK: usize = 128;
    let mut total = 0f64;
    for (rws, tgs) in rows.chunks(CHUNK).zip(targets.chunks(CHUNK)) {
        let c = rws.len();
        let xc = sized(xbuf, c * hidden);
        for (dst, &r) in xc.chunks_exact_mut(hidden).zip(rws) {
            dst.copy_from_slice(&nf[r * hidden..(r + 1) * hidden]);
        }
        let lg = sized(logits, c * vocab);
        matmul(
            lg,
            vocab,
            c,
            vocab,
            hidden,
            Mat::rows(xc, hidden),
            Mat::rows(w, hidden).t(),
            false,
            1.0,
            th,
        );
        let mut nll = vec![0f64; c];
        lg.par_chunks_mut(vocab)
            .zip(tgs.par_iter().zip(nll.par_iter_mut()))
            .for_each(|(row, (&tg, nll))| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let picked = row[tg];
                let sum = crate::llm::simd::exp_shifted_in_place(row, max);
                *nll = max as f64 + sum.ln() - picked as f64;
                if let Some(scale) = scale {
                    let k = (scale as f64 / sum) as f32;
                    row.iter_mut().for_each(|e| *e *= k);
                    row[tg] -= scale;
                }
            });
        total += nll.iter().sum::<f64>();
        if scale.is_none() {
            continue;
        }
        let dxc = sized(dxbuf, c * hidden);
        matmul(
            dxc,
            hidden,
            c,
            hidden,
            vocab,
            Mat::rows(lg, vocab),
            Mat::rows(w, hidden),
            false,
            1.0,
            th,
        );
        for (src, &r) in dxc.chunks_exact(hidden).zip(rws) {
            for (o, v) in dnf[r * hidden..(r + 1) * hidden].iter_mut().zip(src) {
                *o += v;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocked causal attention (blocks of 5 rows, a ragged last block) gives the
    /// output, log-sum-exp and gradients of one block covering every row: a block
    /// that reached too few keys, or left stale scores behind, would differ.
    #[test]
    fn blocked_causal_attention_matches_one_block() {
        let (b, len, nh, nkv, d) = (2, 23, 4, 2, 8);
        let mut seed = 7u64;
        let mut rand = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        };
        let (q, k, v) = (
            rand(b * len * nh * d),
            rand(b * len * nkv * d),
            rand(b * len * nkv * d),
        );
        let datt = rand(b * len * nh * d);
        let run = |block: usize| {
            let mut att = vec![0f32; b * len * nh * d];
            let mut lse = vec![0f32; b * nh * len];
            attention_forward(&q, &k, &v, &mut att, &mut lse, b, len, nh, nkv, d, block);
            let mut dq = vec![0f32; q.len()];
            let (mut dk, mut dv) = (vec![0f32; k.len()], vec![0f32; v.len()]);
            let (mut dkh, mut dvh) = (Vec::new(), Vec::new());
            attention_backward(
                &q, &k, &v, &lse, &datt, &mut dq, &mut dk, &mut dv, &mut dkh, &mut dvh, b, len, nh,
                nkv, d, block,
            );
            [att, lse, dq, dk, dv]
        };
        let (blocked, whole) = (run(5), run(len));
        for (name, (x, y)) in ["att", "lse", "dq", "dk", "dv"]
            .iter()
            .zip(blocked.iter().zip(&whole))
        {
            let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = x.iter().zip(y).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(scale > 0.1, "{name} is all zero");
            assert!(diff <= 1e-5 * scale, "{name}: {diff:e} against {scale:e}");
        }
        // The first position attends to itself alone: its output is its own value row.
        assert!(whole[0][..d]
            .iter()
            .zip(&v[..d])
            .all(|(a, b)| (a - b).abs() < 1e-6));
    }
}
