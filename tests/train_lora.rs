//! LoRA training on the tiny random-weight Qwen2 fixture (`kura::llm::fixtures`):
//! gradients checked by finite differences, the CPU training step against the autograd
//! path (also on the real SmolLM2-135M, Llama layout), the training forward against the
//! inference forward, loss going down, resume after an interruption, and the PEFT
//! adapter round trip onto the served (quantized) model.

use candle_core::{DType, Device, Tensor};
use kura::llm::fixtures::write_tiny_qwen2_gguf;
use kura::llm::{ChatMessage, Llm, LoraDropout};
use kura::train::dataset::{tokenize, Example, SplitMix64};
use kura::train::model::StepPath;
use kura::train::{
    load_peft, read_metrics, JobSpec, LoraConfig, LoraModel, RunInfo, Target, TokenizedExample,
    TrainRun, Trainer,
};
use std::path::{Path, PathBuf};

mod common;

fn tiny() -> (tempfile::TempDir, PathBuf, Llm) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_qwen2_gguf(&path, 7).unwrap();
    let llm = Llm::load(&path, &Device::Cpu).unwrap();
    (dir, path, llm)
}

fn qa(q: &str, a: &str) -> Example {
    Example {
        messages: vec![ChatMessage::user(q), ChatMessage::assistant(a)],
    }
}

fn examples() -> Vec<Example> {
    vec![
        qa("the cat", "is on the mat"),
        qa("where is the pen", "in the drawer and the box"),
        Example {
            messages: vec![
                ChatMessage::system("answer"),
                ChatMessage::user("one"),
                ChatMessage::assistant("two"),
                ChatMessage::user("three"),
                ChatMessage::assistant("four and five"),
            ],
        },
        qa("is it raining", "not in the south"),
        qa("colour of snow", "white as ever"),
        qa("who wrote it", "the winner"),
    ]
}

fn tokenized(llm: &Llm, ex: &[Example]) -> Vec<TokenizedExample> {
    ex.iter()
        .enumerate()
        .map(|(i, e)| tokenize(e, &llm.template, &llm.tokenizer, 256, i).unwrap())
        .collect()
}

fn loss(model: &LoraModel, batch: &[&TokenizedExample]) -> f64 {
    let (nll, n) = model.nll(batch, true, None).unwrap();
    nll.to_scalar::<f64>().unwrap() / n as f64
}

/// A LoRA model on the fixture with every `B` set to uniform values in ±`spread` (a
/// fresh `B` is zero, which would make every gradient of `A` trivially zero), and the
/// generator that drew them.
fn lora_with_random_b(
    llm: &Llm,
    rank: usize,
    dtype: DType,
    seed: u64,
    spread: f64,
) -> (LoraModel, SplitMix64) {
    let config = LoraConfig {
        rank,
        alpha: 2.0 * rank as f64,
        dropout: 0.0,
        targets: Target::ALL.to_vec(),
    };
    let model = LoraModel::new(&llm.model, &config, seed, dtype).unwrap();
    let mut rng = SplitMix64::new(seed + 8);
    for pair in model.lora().layers.values() {
        let b = pair.b.as_tensor();
        let vals: Vec<f64> = (0..b.elem_count())
            .map(|_| (rng.next_f64() * 2.0 - 1.0) * spread)
            .collect();
        let vals = Tensor::from_vec(vals, b.shape(), &Device::Cpu).unwrap();
        pair.b.set(&vals.to_dtype(dtype).unwrap()).unwrap();
    }
    (model, rng)
}

/// Every LoRA parameter (A and B of all seven projections in both blocks) gets the
/// gradient that finite differences of the loss give: for each tensor, three random
/// directions (which involve every element) and six single elements. B starts
/// non-zero so that the gradient of A is not trivially zero. In f64, central
/// differences are accurate to ~1e-9, so a cut graph (a fused op without backward, a
/// quantized matmul) or a wrong mask shows up as a mismatch, not as noise.
#[test]
fn every_lora_parameter_gets_the_finite_difference_gradient() {
    let (_dir, _path, llm) = tiny();
    let (model, mut rng) = lora_with_random_b(&llm, 2, DType::F64, 3, 0.1);
    let data = tokenized(&llm, &examples()[..3]);
    // Two sequences of different lengths in one padded batch.
    let batch: Vec<&TokenizedExample> = vec![&data[0], &data[2]];
    assert_ne!(batch[0].ids.len(), batch[1].ids.len());

    let (nll, n) = model.nll(&batch, true, None).unwrap();
    let grads = (nll / n as f64).unwrap().backward().unwrap();
    let vars = model.lora().vars();
    assert_eq!(
        vars.len(),
        2 * 7 * 2,
        "A and B for 7 projections in 2 blocks"
    );
    let h = 1e-5;
    let mut probes = 0;
    for (name, var) in vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient at all (graph cut)"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let orig = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let shape = var.as_tensor().shape().clone();
        let scale = g.iter().fold(0f64, |m, x| m.max(x.abs()));
        assert!(scale > 1e-6, "{name}: gradient is zero everywhere");
        // Central difference of the loss along direction d vs the autograd ⟨g, d⟩.
        let mut check = |d: &[f64], what: &str| {
            let at = |t: f64| {
                let p: Vec<f64> = orig.iter().zip(d).map(|(x, di)| x + t * di).collect();
                var.set(&Tensor::from_slice(&p, &shape, &Device::Cpu).unwrap())
                    .unwrap();
                loss(&model, &batch)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            let want: f64 = g.iter().zip(d).map(|(a, b)| a * b).sum();
            let norm = d.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!(
                (fd - want).abs() <= 1e-6 * scale.max(1.0) * norm,
                "{name} {what}: finite difference {fd:e}, autograd {want:e}"
            );
            probes += 1;
        };
        // Random dense directions probe every element at once; single elements
        // (including the largest gradient) check entries one by one.
        for _ in 0..3 {
            let d: Vec<f64> = (0..orig.len())
                .map(|_| rng.next_f64() * 2.0 - 1.0)
                .collect();
            check(&d, "random direction");
        }
        let largest = (0..g.len())
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        let mut elements = vec![largest];
        elements.extend((0..5).map(|_| rng.below(orig.len())));
        for i in elements {
            let mut d = vec![0.0; orig.len()];
            d[i] = 1.0;
            check(&d, &format!("element {i}"));
        }
        var.set(&Tensor::from_slice(&orig, &shape, &Device::Cpu).unwrap())
            .unwrap();
    }
    assert_eq!(probes, 28 * 9);
}

/// The hand-written CPU training step (`kura::train::cpu_step`, what the trainer runs on
/// the CPU) gives the autograd path's loss and every LoRA gradient, on a padded batch
/// of two sequences, with and without dropout (same seeded masks). A wrong transpose,
/// mask, RoPE direction or missed residual term shows up as a gradient off by far
/// more than f32 rounding.
#[test]
fn the_cpu_step_matches_autograd_loss_and_gradients() {
    let (_dir, _path, llm) = tiny();
    let (model, _) = lora_with_random_b(&llm, 4, DType::F32, 5, 0.2);
    let data = tokenized(&llm, &examples());
    let pair: Vec<&TokenizedExample> = vec![&data[1], &data[2]];
    assert_ne!(pair[0].ids.len(), pair[1].ids.len());
    // A shorter batch last: the step's buffers, sized by the first, must shrink to it.
    let single: Vec<&TokenizedExample> = vec![&data[0]];
    for (batch, p) in [(&pair, 0.0), (&pair, 0.3), (&single, 0.0)] {
        assert_cpu_step_matches_autograd(&model, batch, p);
    }
    // Evaluation (forward only, base model and with the adapter) agrees too.
    for with_adapter in [false, true] {
        let fast = model.mean_loss(&data, with_adapter, 2).unwrap().unwrap();
        let (mut sum, mut count) = (0.0, 0);
        for chunk in data.chunks(2) {
            let refs: Vec<&TokenizedExample> = chunk.iter().collect();
            let (nll, n) = model.nll(&refs, with_adapter, None).unwrap();
            sum += nll.to_scalar::<f32>().unwrap() as f64;
            count += n;
        }
        let reference = sum / count as f64;
        assert!(
            (fast - reference).abs() < 1e-5 * reference,
            "adapter {with_adapter}: mean loss {fast} vs {reference}"
        );
    }
}

/// The CPU step's loss and every LoRA gradient against the autograd path's on `batch`
/// (dropout `p`, the same seeded masks on both): loss within 1e-5 relative, each
/// gradient within 2e-4 of its largest entry, and no gradient all zero.
fn assert_cpu_step_matches_autograd(model: &LoraModel, batch: &[&TokenizedExample], p: f64) {
    let dropout = || (p > 0.0).then(|| LoraDropout::new(p, 99));
    let fast = model
        .loss_and_grads(batch, dropout().as_ref(), 0.1, StepPath::Auto)
        .unwrap();
    let reference = model
        .loss_and_grads(batch, dropout().as_ref(), 0.1, StepPath::Autograd)
        .unwrap();
    assert_eq!(fast.targets, reference.targets);
    assert!(
        (fast.loss - reference.loss).abs() < 1e-5 * reference.loss.abs(),
        "p = {p}: loss {} vs autograd {}",
        fast.loss,
        reference.loss
    );
    for ((name, _), (a, b)) in model
        .lora()
        .vars()
        .iter()
        .zip(fast.grads.iter().zip(&reference.grads))
    {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (a, b) = (flat(a), flat(b));
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(scale > 1e-7, "p = {p}, {name}: zero reference gradient");
        assert!(
            diff <= 2e-4 * scale,
            "p = {p}, {name}: max |Δ| {diff:e} against a gradient of scale {scale:e}"
        );
    }
}

/// The same on the Llama layout — interleaved RoPE, no q/k/v bias, 9 query heads over 3
/// key/value heads, tied embeddings — with the real SmolLM2-135M.
#[test]
fn the_cpu_step_matches_autograd_on_the_llama_layout() {
    let gguf = common::real_models_dir().join("smollm2-135m-instruct-q4_1.gguf");
    let llm = Llm::load(&gguf, &Device::Cpu).unwrap();
    let (model, _) = lora_with_random_b(&llm, 4, DType::F32, 9, 0.05);
    let data = tokenized(&llm, &examples());
    let pair: Vec<&TokenizedExample> = vec![&data[1], &data[2]];
    assert_ne!(pair[0].ids.len(), pair[1].ids.len());
    for p in [0.0, 0.2] {
        assert_cpu_step_matches_autograd(&model, &pair, p);
    }
}

/// The differentiable training forward computes the same function as the fused
/// inference forward on the same dense weights, and stays close to the quantized
/// model that is served.
#[test]
fn training_forward_matches_the_inference_forward() {
    let (_dir, _path, llm) = tiny();
    let dense = llm.model.to_training(DType::F32).unwrap();
    let ids = llm
        .chat_prompt(&[ChatMessage::user("where is the cat and the pen")])
        .unwrap();
    let mut session = dense.new_session();
    let inference = dense.forward_to_vec(&ids, &mut session).unwrap();
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let hidden = dense.forward_train(&x, &[], None).unwrap();
    let last = hidden.narrow(1, ids.len() - 1, 1).unwrap();
    let training = dense
        .lm_head()
        .forward_train(&last, &[], None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let max_diff = inference
        .iter()
        .zip(&training)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(max_diff < 1e-4, "fused vs differentiable: {max_diff}");

    let mut session = llm.model.new_session();
    let served = llm.model.forward_to_vec(&ids, &mut session).unwrap();
    let spread = served.iter().fold(0f32, |m, x| m.max(x.abs()));
    let q_diff = served
        .iter()
        .zip(&training)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        q_diff < 0.05 * spread,
        "dense vs quantized differ by {q_diff} (logits up to {spread})"
    );
}

fn job(name: &str, model: &Path) -> JobSpec {
    toml::from_str(&format!(
        r#"
        name = "{name}"
        model = "{}"
        dataset = "inline"
        [lora]
        rank = 4
        alpha = 8
        dropout = 0.1
        [train]
        seed = 5
        max_steps = 10
        batch_size = 2
        grad_accum = 2
        learning_rate = 1e-2
        warmup_steps = 2
        checkpoint_every = 3
        keep_checkpoints = 2
        eval_every = 5
        "#,
        model.display()
    ))
    .unwrap()
}

fn new_run(dir: &Path, job: &JobSpec, model: &Path) -> TrainRun {
    let ex = examples();
    let info = RunInfo {
        model_path: model.to_path_buf(),
        base_model: "kura-tiny".into(),
    };
    TrainRun::create(dir, job, info, &ex[..5], &ex[5..]).unwrap()
}

/// A job stopped after a checkpoint and resumed in a new trainer continues the loss
/// curve exactly: same losses step for step (dropout, data order and optimizer state
/// all restored), same final adapter.
#[test]
fn a_resumed_run_repeats_the_uninterrupted_loss_curve() {
    let (dir, model, _llm) = tiny();
    let job = job("resume", &model);

    let whole = dir.path().join("whole");
    let mut t = Trainer::new(new_run(&whole, &job, &model), &Device::Cpu).unwrap();
    let outcome = t.run(None, &mut |_| {}).unwrap();
    assert!(outcome.finished);
    assert_eq!(outcome.steps, 10);
    let reference = read_metrics(&whole.join("metrics.jsonl")).unwrap();
    assert_eq!(reference.len(), 10);

    let cut = dir.path().join("cut");
    let mut t = Trainer::new(new_run(&cut, &job, &model), &Device::Cpu).unwrap();
    for _ in 0..7 {
        t.step().unwrap();
    }
    drop(t); // as if killed after step 7: the last checkpoint is step 6
    let resumed_run = TrainRun::open(&cut).unwrap();
    let mut t = Trainer::new(resumed_run, &Device::Cpu).unwrap();
    assert_eq!(t.step_count(), 6, "resumes from the last checkpoint");
    t.run(None, &mut |_| {}).unwrap();
    let resumed = read_metrics(&cut.join("metrics.jsonl")).unwrap();
    assert_eq!(
        resumed.iter().map(|r| r.step).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>(),
        "one log line per step, no duplicates from the repeated steps 7"
    );
    for (a, b) in reference.iter().zip(&resumed) {
        assert!(
            (a.loss - b.loss).abs() < 1e-5,
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
        assert_eq!(a.eval_loss.is_some(), b.eval_loss.is_some());
    }
    let a = candle_core::safetensors::load(
        whole.join("adapter/adapter_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let b =
        candle_core::safetensors::load(cut.join("adapter/adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert_eq!(a.len(), b.len());
    for (name, ta) in &a {
        let diff = (ta - &b[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{name} differs by {diff}");
    }
    // Only the newest checkpoints are kept.
    let kept = kura::train::checkpoint::checkpoints(&cut.join("checkpoints")).unwrap();
    assert_eq!(kept.iter().map(|c| c.0).collect::<Vec<_>>(), vec![9, 10]);
}

/// Training lowers the loss on the data it sees, and the eval split is scored with
/// and without the adapter.
#[test]
fn training_lowers_the_loss() {
    let (dir, model, _llm) = tiny();
    let mut job = job("learn", &model);
    job.train.max_steps = Some(40);
    job.train.eval_every = 0;
    job.train.checkpoint_every = 0;
    job.lora.dropout = 0.0;
    let run_dir = dir.path().join("learn");
    let mut t = Trainer::new(new_run(&run_dir, &job, &model), &Device::Cpu).unwrap();
    let mut losses = Vec::new();
    let outcome = t.run(None, &mut |r| losses.push(r.loss)).unwrap();
    let first = losses[..4].iter().sum::<f64>() / 4.0;
    let last = losses[losses.len() - 4..].iter().sum::<f64>() / 4.0;
    assert!(last < 0.5 * first, "loss {first:.3} → {last:.3}");
    assert!(outcome.base_eval_loss.is_some() && outcome.eval_loss.is_some());
    assert!(run_dir.join("adapter/adapter_config.json").is_file());
}

/// The adapter saved in PEFT format loads back bit for bit, and attached to the
/// served quantized model it changes the output the way the training model says.
#[test]
fn peft_adapter_round_trips_onto_the_served_model() {
    let (dir, model_path, mut llm) = tiny();
    let config = LoraConfig {
        rank: 3,
        alpha: 6.0,
        dropout: 0.05,
        targets: vec![Target::Q, Target::V, Target::Down],
    };
    let model = LoraModel::new(&llm.model, &config, 9, DType::F32).unwrap();
    let mut rng = SplitMix64::new(2);
    for pair in model.lora().layers.values() {
        let b = pair.b.as_tensor();
        let vals: Vec<f32> = (0..b.elem_count())
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * 0.2) as f32)
            .collect();
        pair.b
            .set(&Tensor::from_vec(vals, b.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    let out = dir.path().join("adapter");
    model
        .lora()
        .save_peft(&out, &model.layout(), "kura-tiny")
        .unwrap();

    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], 3);
    assert_eq!(cfg["lora_alpha"], 6.0);
    assert_eq!(cfg["base_model_name_or_path"], "kura-tiny");
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["q_proj", "v_proj", "down_proj"])
    );
    let raw = candle_core::safetensors::load(out.join("adapter_model.safetensors"), &Device::Cpu)
        .unwrap();
    assert_eq!(raw.len(), 2 * 3 * 2);
    let a = &raw["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"];
    let b = &raw["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"];
    assert_eq!(a.dims(), [3, 64], "lora_A is [r, in]");
    assert_eq!(b.dims(), [32, 3], "lora_B is [out, r]");

    let loaded = load_peft(&out, &model.layout(), &Device::Cpu).unwrap();
    assert_eq!(loaded.lora_config(), config);
    for (name, pair) in &model.lora().layers {
        let ad = &loaded.adapters[name];
        for (x, y) in [(pair.a.as_tensor(), ad.a()), (pair.b.as_tensor(), ad.b())] {
            assert_eq!(
                x.to_vec2::<f32>().unwrap(),
                y.to_vec2::<f32>().unwrap(),
                "{name}"
            );
        }
        assert_eq!(ad.scale(), 2.0);
    }

    // Served model (quantized) with and without the adapter, vs the training model.
    let ids = llm
        .chat_prompt(&[ChatMessage::user("is the pen in the box")])
        .unwrap();
    let mut s = llm.model.new_session();
    let base = llm.model.forward_to_vec(&ids, &mut s).unwrap();
    let id = llm.model.attach_adapter("tuned", loaded.adapters).unwrap();
    let mut s = llm.model.new_session();
    s.set_adapters(vec![id]);
    let tuned = llm.model.forward_to_vec(&ids, &mut s).unwrap();
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let hidden = model
        .model()
        .forward_train(&x, &[model.model().adapter_id("training").unwrap()], None)
        .unwrap();
    let last = hidden.narrow(1, ids.len() - 1, 1).unwrap();
    let trained = model
        .model()
        .lm_head()
        .forward_train(&last, &[], None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let dist = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f32>()
            .sqrt()
    };
    let effect = dist(&base, &tuned);
    assert!(
        effect > 0.1,
        "the adapter changes the served logits ({effect})"
    );
    assert!(
        dist(&tuned, &trained) < 0.25 * effect,
        "served+adapter ({}) is far closer to the trained model than to the base ({effect})",
        dist(&tuned, &trained)
    );
    drop(model_path);
}
