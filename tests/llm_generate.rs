//! Generation-loop and loader behaviour on the tiny random-weight Qwen2 fixture
//! (`kura::llm::fixtures`): fast, no model files needed.

use candle_core::Device;
use kura::llm::fixtures::{write_tiny_qwen2_gguf, TINY_CONTEXT};
use kura::llm::{
    generate, quantize_gguf, ChatMessage, FinishReason, GenerateParams, GgufFile, Llm, LlmError,
    LoraAdapter, Model, QuantType, SamplingParams,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

fn tiny() -> (tempfile::TempDir, PathBuf, Llm) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_qwen2_gguf(&path, 7).unwrap();
    let llm = Llm::load(&path, &Device::Cpu).unwrap();
    (dir, path, llm)
}

/// Greedy, never stopping at EOS: the random model must run until `max_tokens`.
fn free_running(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: SamplingParams::greedy(),
        stop_at_eos: false,
        ..Default::default()
    }
}

fn prompt(llm: &Llm) -> Vec<u32> {
    llm.chat_prompt(&[ChatMessage::user("the cat is on the mat")])
        .unwrap()
}

#[test]
fn fixture_loads_and_tokenizes_specials_atomically() {
    let (_d, _p, llm) = tiny();
    assert_eq!(llm.model.info().architecture, "qwen2");
    assert_eq!(llm.model.info().context_length, TINY_CONTEXT);
    let ids = llm
        .tokenizer
        .encode("<|im_start|>user\nsay the end<|im_end|>")
        .unwrap();
    let im_end = llm.tokenizer.token_id("<|im_end|>").unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == im_end).count(), 1);
    assert_eq!(ids[0], llm.tokenizer.token_id("<|im_start|>").unwrap());
    // " the" is one merged token in the tiny vocabulary.
    assert!(ids.contains(&llm.tokenizer.token_id("Ġthe").unwrap()));
    assert_eq!(
        llm.tokenizer.decode(&ids),
        "<|im_start|>user\nsay the end<|im_end|>"
    );
    assert_eq!(llm.tokenizer.eos_id(), Some(im_end));
}

#[test]
fn max_tokens_is_respected_and_stream_pieces_concatenate_to_the_text() {
    let (_d, _p, llm) = tiny();
    let mut session = llm.model.new_session();
    let mut pieces = Vec::new();
    let out = generate(
        &llm.model,
        &llm.tokenizer,
        &mut session,
        &prompt(&llm),
        &free_running(20),
        None,
        &mut |p| pieces.push(p.to_string()),
    )
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::MaxTokens);
    assert_eq!(out.generated_tokens, 20);
    assert_eq!(out.tokens.len(), 20);
    assert_eq!(pieces.concat(), out.text);
    assert!(pieces.iter().all(|p| !p.is_empty()));
    assert_eq!(out.decode_steps, 19);
    assert_eq!(out.text, llm.tokenizer.decode_visible(&out.tokens));
}

#[test]
fn greedy_generation_is_deterministic_and_uses_the_kv_cache_consistently() {
    let (_d, _p, llm) = tiny();
    let p = prompt(&llm);
    let run = || {
        let mut s = llm.model.new_session();
        generate(
            &llm.model,
            &llm.tokenizer,
            &mut s,
            &p,
            &free_running(12),
            None,
            &mut |_| {},
        )
        .unwrap()
        .tokens
    };
    let cached = run();
    assert_eq!(cached, run());
    // Without the cache: feed the whole sequence each step; the argmax must agree.
    let mut seq = p.clone();
    for &expected in &cached {
        let mut s = llm.model.new_session();
        let logits = llm.model.forward_to_vec(&seq, &mut s).unwrap();
        assert_eq!(kura::llm::argmax(&logits), expected);
        seq.push(expected);
    }
}

#[test]
fn stop_strings_end_generation_and_are_never_streamed() {
    let (_d, _p, llm) = tiny();
    let p = prompt(&llm);
    let mut s = llm.model.new_session();
    let full = generate(
        &llm.model,
        &llm.tokenizer,
        &mut s,
        &p,
        &free_running(40),
        None,
        &mut |_| {},
    )
    .unwrap();
    // Pick a stop string from the middle of what the model says anyway.
    let chars: Vec<char> = full.text.chars().collect();
    assert!(chars.len() >= 12, "fixture text too short: {:?}", full.text);
    let stop: String = chars[8..11].iter().collect();
    let expected_text = &full.text[..full.text.find(&stop).unwrap()];

    let mut streamed = String::new();
    let mut s = llm.model.new_session();
    let params = GenerateParams {
        stop: vec![stop.clone()],
        ..free_running(40)
    };
    let out = generate(
        &llm.model,
        &llm.tokenizer,
        &mut s,
        &p,
        &params,
        None,
        &mut |piece| streamed.push_str(piece),
    )
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::StopString);
    assert_eq!(out.text, expected_text);
    assert_eq!(streamed, expected_text);
    assert!(!streamed.contains(&stop));
    assert!(out.generated_tokens < full.generated_tokens);
}

#[test]
fn stop_tokens_end_generation() {
    let (_d, _p, llm) = tiny();
    let p = prompt(&llm);
    let mut s = llm.model.new_session();
    let full = generate(
        &llm.model,
        &llm.tokenizer,
        &mut s,
        &p,
        &free_running(16),
        None,
        &mut |_| {},
    )
    .unwrap();
    let stop_tok = full.tokens[5];
    let first = full.tokens.iter().position(|&t| t == stop_tok).unwrap();
    let params = GenerateParams {
        stop_tokens: vec![stop_tok],
        ..free_running(16)
    };
    let mut s = llm.model.new_session();
    let out = generate(
        &llm.model,
        &llm.tokenizer,
        &mut s,
        &p,
        &params,
        None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Eos);
    assert_eq!(out.tokens, full.tokens[..=first].to_vec());
}

#[test]
fn cancellation_stops_within_one_token() {
    let (_d, _p, llm) = tiny();
    let cancel = AtomicBool::new(false);
    let mut s = llm.model.new_session();
    let mut pieces = 0;
    let out = generate(
        &llm.model,
        &llm.tokenizer,
        &mut s,
        &prompt(&llm),
        &free_running(100),
        Some(&cancel),
        &mut |_| {
            pieces += 1;
            cancel.store(true, Ordering::Relaxed);
        },
    )
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert_eq!(pieces, 1);
    // The first piece may need two tokens if it started with a partial character.
    assert!(out.generated_tokens <= 2, "{} tokens", out.generated_tokens);

    // Cancelled before starting: nothing is generated.
    let mut s = llm.model.new_session();
    let out = generate(
        &llm.model,
        &llm.tokenizer,
        &mut s,
        &prompt(&llm),
        &free_running(10),
        Some(&cancel),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert_eq!(out.generated_tokens, 0);
}

#[test]
fn context_length_is_checked_with_a_clear_error() {
    let (_d, _p, llm) = tiny();
    let p = prompt(&llm);
    let mut s = llm.model.new_session();
    let err = generate(
        &llm.model,
        &llm.tokenizer,
        &mut s,
        &p,
        &free_running(TINY_CONTEXT),
        None,
        &mut |_| {},
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LlmError::ContextLength { .. }));
    assert_eq!(
        msg,
        format!(
            "prompt of {} tokens + max_tokens {} exceeds the model's context of {}",
            p.len(),
            TINY_CONTEXT,
            TINY_CONTEXT
        )
    );
    // Exactly filling the context is fine.
    let out = generate(
        &llm.model,
        &llm.tokenizer,
        &mut s,
        &p,
        &free_running(TINY_CONTEXT - p.len()),
        None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.generated_tokens, TINY_CONTEXT - p.len());
}

#[test]
fn seeded_sampling_is_reproducible_and_seed_dependent() {
    let (_d, _p, llm) = tiny();
    let p = prompt(&llm);
    let run = |seed| {
        let params = GenerateParams {
            max_tokens: 24,
            sampling: SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed,
                ..Default::default()
            },
            stop_at_eos: false,
            ..Default::default()
        };
        let mut s = llm.model.new_session();
        generate(
            &llm.model,
            &llm.tokenizer,
            &mut s,
            &p,
            &params,
            None,
            &mut |_| {},
        )
        .unwrap()
        .tokens
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn sessions_are_independent_and_reuse_their_cached_prefix() {
    let (_d, _p, llm) = tiny();
    let p = prompt(&llm);
    let mut a = llm.model.new_session();
    let mut b = llm.model.new_session();
    let first = generate(
        &llm.model,
        &llm.tokenizer,
        &mut a,
        &p,
        &free_running(8),
        None,
        &mut |_| {},
    )
    .unwrap();
    // Interleave another conversation in session b; a must be unaffected.
    let other = llm.chat_prompt(&[ChatMessage::user("is that so")]).unwrap();
    generate(
        &llm.model,
        &llm.tokenizer,
        &mut b,
        &other,
        &free_running(8),
        None,
        &mut |_| {},
    )
    .unwrap();
    // Continue a with the same prompt extended by the reply: the prefix is reused.
    let mut longer = p.clone();
    longer.extend_from_slice(&first.tokens[..4]);
    let cont = generate(
        &llm.model,
        &llm.tokenizer,
        &mut a,
        &longer,
        &free_running(4),
        None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(cont.cached_prompt_tokens, longer.len() - 1);
    assert_eq!(cont.tokens, first.tokens[4..8].to_vec());
}

#[test]
fn a_session_from_another_model_is_refused() {
    let (_d, path, llm) = tiny();
    let other = Model::load(&path, &Device::Cpu).unwrap();
    let mut s = other.new_session();
    let err = llm.model.forward(&[1, 2, 3], &mut s).unwrap_err();
    assert!(matches!(err, LlmError::SessionMismatch(_)), "{err}");
}

#[test]
fn lora_adapters_change_output_only_when_selected() {
    let (_d, _p, mut llm) = tiny();
    let p = prompt(&llm);
    let base = {
        let mut s = llm.model.new_session();
        llm.model.forward_to_vec(&p, &mut s).unwrap()
    };
    let dev = Device::Cpu;
    let mut weights = HashMap::new();
    for lin in llm.model.linears_mut() {
        if lin.name().ends_with("attn_q") || lin.name().ends_with("ffn_down") {
            let a = candle_core::Tensor::randn(0f32, 0.5, (lin.in_dim(), 4), &dev).unwrap();
            let b = candle_core::Tensor::randn(0f32, 0.5, (4, lin.out_dim()), &dev).unwrap();
            weights.insert(lin.name().to_string(), LoraAdapter::new(a, b, 8.0).unwrap());
        }
    }
    let id = llm.model.attach_adapter("test", weights).unwrap();
    let mut s = llm.model.new_session();
    let without = llm.model.forward_to_vec(&p, &mut s).unwrap();
    assert_eq!(
        without, base,
        "an attached but unselected adapter must not change anything"
    );
    let mut s = llm.model.new_session();
    s.set_adapters(vec![id]);
    let with = llm.model.forward_to_vec(&p, &mut s).unwrap();
    let diff = with
        .iter()
        .zip(&base)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff > 1e-3, "adapter had no effect (max diff {diff})");
    // Unknown layer names are refused.
    let mut bad = HashMap::new();
    let a = candle_core::Tensor::zeros((64, 2), candle_core::DType::F32, &dev).unwrap();
    let b = candle_core::Tensor::zeros((2, 64), candle_core::DType::F32, &dev).unwrap();
    bad.insert(
        "blk.99.attn_q".to_string(),
        LoraAdapter::new(a, b, 1.0).unwrap(),
    );
    assert!(llm.model.attach_adapter("bad", bad).is_err());
}

#[test]
fn corrupt_truncated_and_foreign_files_give_errors_naming_the_file() {
    let (dir, path, _llm) = tiny();
    let bytes = std::fs::read(&path).unwrap();

    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = Model::load(&truncated, &Device::Cpu).unwrap_err();
    assert!(matches!(err, LlmError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("truncated.gguf"), "{err}");

    // Cut inside the header, too.
    let header_cut = dir.path().join("header-cut.gguf");
    std::fs::write(&header_cut, &bytes[..300]).unwrap();
    let err = Model::load(&header_cut, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("header-cut.gguf"), "{err}");

    let not_gguf = dir.path().join("notes.gguf");
    std::fs::write(&not_gguf, b"hello, this is not a model").unwrap();
    let err = Model::load(&not_gguf, &Device::Cpu).unwrap_err();
    assert!(matches!(err, LlmError::NotGguf { .. }), "{err}");
    assert!(err.to_string().contains("notes.gguf"), "{err}");

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let err = Model::load(&empty, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("empty.gguf"), "{err}");

    // Garbage after a valid magic: every prefix length must fail cleanly, never panic.
    for cut in (4..600).step_by(7) {
        let p = dir.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let err = Model::load(&p, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains(&format!("cut{cut}.gguf")), "{err}");
    }

    let missing = dir.path().join("missing.gguf");
    let err = Model::load(&missing, &Device::Cpu).unwrap_err();
    assert!(matches!(err, LlmError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.gguf"), "{err}");
}

#[test]
fn unsupported_architecture_is_named() {
    let (dir, path, _llm) = tiny();
    // Same length as "qwen2" so that the header layout stays valid.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(5)
        .position(|w| w == b"qwen2")
        .expect("architecture string in header");
    bytes[at..at + 5].copy_from_slice(b"mamba");
    let foreign = dir.path().join("foreign.gguf");
    std::fs::write(&foreign, &bytes).unwrap();
    let file = GgufFile::open(&foreign).unwrap();
    assert_eq!(file.architecture().unwrap(), "mamba");
    let err = Model::load(&foreign, &Device::Cpu).unwrap_err();
    assert!(
        matches!(err, LlmError::UnsupportedArchitecture { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("foreign.gguf") && msg.contains("`mamba`"),
        "{msg}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let (dir, path, _llm) = tiny();
    let mut bytes = std::fs::read(&path).unwrap();
    let name = b"blk.1.ffn_up.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap();
    bytes[at..at + name.len()].copy_from_slice(b"blk.1.ffn_XX.weight");
    let p = dir.path().join("holes.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let err = Model::load(&p, &Device::Cpu).unwrap_err();
    assert!(matches!(err, LlmError::MissingTensor { .. }), "{err}");
    assert!(err.to_string().contains("`blk.1.ffn_up.weight`"), "{err}");
    assert!(err.to_string().contains("holes.gguf"), "{err}");
}

#[test]
fn requantized_model_keeps_metadata_and_norms_and_stays_close() {
    let (dir, path, llm) = tiny();
    let p = prompt(&llm);
    let base = {
        let mut s = llm.model.new_session();
        llm.model.forward_to_vec(&p, &mut s).unwrap()
    };
    // Q8_0 → Q4_0 (the fixture's weights are Q8_0), then Q4_0 → Q8_0.
    let mut source = path.clone();
    for (target, name, min_cos) in [
        (QuantType::Q4_0, "q4_0.gguf", 0.95),
        (QuantType::Q8_0, "q8.gguf", 0.95),
    ] {
        let out = dir.path().join(name);
        let report = quantize_gguf(&source, &out, target).unwrap();
        assert_eq!(report.converted, 2 * 7 + 1, "{report:?}");
        assert_eq!(report.kept, 2 * 5 + 1, "{report:?}");
        let src = GgufFile::open(&source).unwrap();
        let dst = GgufFile::open(&out).unwrap();
        for (k, v) in &src.content().metadata {
            if k != "general.file_type" {
                assert_eq!(
                    format!("{:?}", Some(v)),
                    format!("{:?}", dst.get(k)),
                    "metadata {k}"
                );
            }
        }
        let (dtype, _) = dst.tensor_info("blk.0.attn_norm.weight").unwrap();
        assert_eq!(dtype, candle_core::quantized::GgmlDType::F32);
        let (dtype, _) = dst.tensor_info("blk.0.ffn_up.weight").unwrap();
        assert_eq!(dtype, target.ggml_dtype());
        let q = Llm::load(&out, &Device::Cpu).unwrap();
        let mut s = q.model.new_session();
        let l = q.model.forward_to_vec(&p, &mut s).unwrap();
        let dot: f32 = l.iter().zip(&base).map(|(a, b)| a * b).sum();
        let na: f32 = l.iter().map(|a| a * a).sum::<f32>().sqrt();
        let nb: f32 = base.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!(
            dot / (na * nb) > min_cos,
            "{target:?}: cosine {}",
            dot / (na * nb)
        );
        source = out;
    }
    assert!("q5_1".parse::<QuantType>().is_err());
    assert_eq!("Q4_K".parse::<QuantType>().unwrap(), QuantType::Q4K);
}
