//! The PEFT round trip: Kura's adapters mean the same thing in Hugging Face's `peft`
//! as in Kura, and adapters made by `peft` mean the same thing in Kura.
//!
//! For each model, the GGUF's dequantized base is exported to a Hugging Face folder
//! (`kura::train::export::export_hf`); `tests/py/peft_roundtrip.py` (transformers +
//! peft on CPU, from the venv `installer/setup` makes in `target/peft-venv`) then
//!
//! 1. computes the base logits for the same token ids (checks the export itself:
//!    names, tied embeddings, RoPE base, RMSNorm epsilon, Qwen2's q/k/v biases, Llama's
//!    q/k row order),
//! 2. loads an adapter Kura saved (random non-zero `B`, so it changes the output) with
//!    `PeftModel.from_pretrained` and computes base + adapter logits,
//! 3. makes its own LoRA adapter with `get_peft_model` (random non-zero `B`), saves it
//!    with `save_pretrained` and reports its logits,
//!
//! and Kura must produce the same logits (training model, dense weights) within a
//! tolerance, for its own adapter and for the imported one; the served (quantized)
//! model with the imported adapter must pick the same next token. Models: the tiny
//! random Qwen2 fixture and the real SmolLM2-135M (Llama, tied embeddings, permuted
//! q/k rows).

mod common;

use candle_core::{DType, Device, Tensor};
use kura::llm::fixtures::write_tiny_qwen2_gguf;
use kura::llm::{argmax, AdapterId, Llm, Model};
use kura::train::dataset::SplitMix64;
use kura::train::export::export_hf;
use kura::train::{load_peft, LoraConfig, LoraWeights, PeftLayout, Target};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv with torch, transformers and peft (made by `installer/setup`). Panics with
/// instructions when it is missing: this test never skips.
fn peft_python() -> PathBuf {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peft-venv/bin/python");
    let ok = py.is_file()
        && Command::new(&py)
            .args(["-c", "import torch, transformers, peft, safetensors"])
            .output()
            .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import torch/transformers/peft: run installer/setup (online) first; it \
         installs tests/py/requirements-peft.txt into target/peft-venv (CPU torch, ~1.5 min)",
        py.display()
    );
    py
}

/// Logits `[seq, vocab]` of the dense training model for every position of `ids`.
fn dense_logits(model: &Model, ids: &[u32], adapters: &[AdapterId]) -> Tensor {
    let ids = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let hidden = model.forward_train(&ids, adapters, None).unwrap();
    let hidden = hidden.squeeze(0).unwrap();
    model
        .lm_head()
        .forward_train(&hidden, &[], None)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

/// Largest absolute difference, and the reference's logit range.
fn max_diff(ours: &Tensor, theirs: &Tensor) -> (f32, f32) {
    assert_eq!(ours.dims(), theirs.dims());
    let d = (ours - theirs)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let range = (theirs.max_all().unwrap().to_scalar::<f32>().unwrap()
        - theirs.min_all().unwrap().to_scalar::<f32>().unwrap())
    .abs();
    (d, range)
}

/// Kura and PyTorch compute the same f32 function in different summation orders:
/// the largest difference must stay below 1e-4 of the logit range (measured: about
/// 2e-6 on both models; a wrong name, bias, RoPE base or row order gives > 1e-2).
const REL_TOL: f32 = 1e-4;

fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor) -> f32 {
    let (d, range) = max_diff(ours, theirs);
    eprintln!("{what}: max |Kura - PyTorch| = {d:.3e}, logit range {range:.2}");
    assert!(
        d <= REL_TOL * range,
        "{what}: Kura's logits differ from PyTorch's by {d} (range {range})"
    );
    range
}

/// Random, non-zero `B` matrices, so the adapter changes the output.
fn randomize_b(lora: &LoraWeights, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for pair in lora.layers.values() {
        let dims = pair.b.dims().to_vec();
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * 0.08) as f32)
            .collect();
        pair.b
            .set(&Tensor::from_vec(v, dims, &Device::Cpu).unwrap())
            .unwrap();
    }
}

fn round_trip(gguf: &Path, text: &str) {
    let python = peft_python();
    let dir = tempfile::tempdir().unwrap();
    let base_dir = dir.path().join("base");
    let export = export_hf(gguf, &base_dir).unwrap();
    eprintln!(
        "exported {} ({} tensors, {:.1} MB, tied embeddings: {})",
        export.architecture,
        export.tensors,
        export.bytes as f64 / 1e6,
        export.tied_embeddings
    );

    let mut llm = Llm::load(gguf, &Device::Cpu).unwrap();
    let ids = llm.tokenizer.encode(text).unwrap();
    assert!(ids.len() >= 8, "{ids:?}");
    let mut dense = llm.model.to_training(DType::F32).unwrap();
    let layout = PeftLayout::of(&dense);

    // Kura's adapter: PEFT init for A, random B; saved in the PEFT format.
    let config = LoraConfig {
        rank: 4,
        alpha: 12.0,
        dropout: 0.0,
        targets: Target::ALL.to_vec(),
    };
    let lora = LoraWeights::init(&mut dense, &config, 11, DType::F32).unwrap();
    randomize_b(&lora, 12);
    let kura_id = lora.attach(&mut dense, "kura").unwrap();
    let kura_dir = dir.path().join("kura-adapter");
    lora.save_peft(&kura_dir, &layout, "exported-base").unwrap();
    let base = dense_logits(&dense, &ids, &[]);
    let with_kura = dense_logits(&dense, &ids, &[kura_id]);

    // PyTorch + PEFT on the exported base.
    let made_dir = dir.path().join("peft-adapter");
    let out_path = dir.path().join("logits.safetensors");
    let ids_arg = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/peft_roundtrip.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg("--base")
        .arg(&base_dir)
        .args(["--ids", &ids_arg])
        .arg("--kura-adapter")
        .arg(&kura_dir)
        .arg("--make-adapter")
        .arg(&made_dir)
        .args(["--rank", "8", "--alpha", "16", "--seed", "5"])
        .arg("--out")
        .arg(&out_path)
        .env("OMP_NUM_THREADS", "2")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "peft_roundtrip.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    let py: HashMap<String, Tensor> = candle_core::safetensors::load(&out_path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();

    // 1. The exported base is the model Kura trains on.
    let range = assert_close("base", &base, &py["base"]);
    // 2. Kura's adapter, read by PEFT, gives Kura's logits — and it does change them.
    assert_close("Kura adapter in PEFT", &with_kura, &py["kura_adapter"]);
    let (moved, _) = max_diff(&with_kura, &base);
    eprintln!("the Kura adapter moves the logits by up to {moved:.2}");
    assert!(
        moved > 50.0 * REL_TOL * range,
        "the Kura adapter barely changes the logits ({moved}): the comparison would prove nothing"
    );

    // 3. PEFT's adapter, imported by Kura, gives PEFT's logits.
    let imported = load_peft(&made_dir, &layout, &Device::Cpu).unwrap();
    assert_eq!(imported.config.r, 8);
    assert_eq!(imported.lora_config().targets, Target::ALL.to_vec());
    assert_eq!(
        imported.adapters.len(),
        7 * llm.model.info().num_layers,
        "one adapter per projection and layer"
    );
    let peft_id = dense
        .attach_adapter("peft", imported.adapters.clone())
        .unwrap();
    let with_peft = dense_logits(&dense, &ids, &[peft_id]);
    assert_close("PEFT adapter in Kura", &with_peft, &py["peft_adapter"]);
    let (moved, _) = max_diff(&with_peft, &base);
    eprintln!("the PEFT adapter moves the logits by up to {moved:.2}");
    assert!(
        moved > 50.0 * REL_TOL * range,
        "the PEFT adapter barely changes the logits ({moved})"
    );

    // 4. Served on the quantized GGUF, the imported adapter picks PEFT's next token.
    let served_id = llm.model.attach_adapter("peft", imported.adapters).unwrap();
    let mut session = llm.model.new_session();
    session.set_adapters(vec![served_id]);
    let served = llm.model.forward_to_vec(&ids, &mut session).unwrap();
    let last = py["peft_adapter"].get(ids.len() - 1).unwrap();
    let want: Vec<f32> = last.to_vec1().unwrap();
    let worst = served
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("served (quantized) + PEFT adapter: max |diff| at the last position {worst:.3e}");
    assert_eq!(
        argmax(&served),
        argmax(&want),
        "the served model with the imported adapter chose another next token than PEFT"
    );
}

#[test]
fn tiny_qwen2_adapters_round_trip_through_peft() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    write_tiny_qwen2_gguf(&gguf, 7).unwrap();
    round_trip(
        &gguf,
        "where is the pen? the cat is on the mat, and the snow is white",
    );
}

#[test]
fn smollm2_adapters_round_trip_through_peft() {
    let gguf = common::real_models_dir().join("smollm2-135m-instruct-q4_1.gguf");
    round_trip(
        &gguf,
        "The maintenance guide says to check the oil level before starting the machine.",
    );
}
