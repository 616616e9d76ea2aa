//! `kura bench embed`: passage-embedding throughput, Kura against PyTorch on the same
//! model, the same token ids and the same thread count, in one run.
//!
//! The reference (`benches/reference/e5_torch.py`) reads the very E5S1 file Kura
//! serves, dequantizes its Q4_0 matrices to f32 and runs the standard BERT encoder in
//! PyTorch; it receives the token ids Kura produced, so tokenization is not timed on
//! either side and both encode exactly the same sequences. The ratio printed is Kura's
//! chunks/s over PyTorch's. The two first embeddings are compared as a sanity check
//! (cosine ≈ 1 means both engines computed the same function).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use crate::embed::{EmbedError, Embedder};

/// The result of one benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedBench {
    /// Passages per repeat.
    pub passages: usize,
    /// Tokens per passage (specials and prefix included).
    pub tokens_per_passage: usize,
    /// Threads both engines used.
    pub threads: usize,
    /// Kura: passages per second (best repeat).
    pub kura_chunks_per_s: f64,
    /// PyTorch: passages per second (best repeat), when the reference ran.
    pub torch_chunks_per_s: Option<f64>,
    /// Kura / PyTorch.
    pub ratio: Option<f64>,
    /// Cosine between the two engines' first embedding.
    pub agreement_cosine: Option<f64>,
    /// PyTorch version, or why the reference did not run.
    pub reference: String,
}

/// Builds a passage of exactly `tokens` model tokens (prefix and specials included).
fn passage_of(e: &Embedder, seed: usize, tokens: usize) -> Result<String, EmbedError> {
    let base =
        "蔵は、ネットワークに接続しない一台のワークステーションの上で文書の検索と質問応答を行う。\
                Kura runs retrieval and question answering on one workstation, offline. ";
    let text = format!("{seed} {}", base.repeat(tokens / 20 + 4));
    let extra = e.passage_input("")?.len();
    let toks = e.tokenize(&text)?;
    Ok(text[..toks[tokens - extra].start].to_owned())
}

/// The Python with torch: `KURA_BENCH_PYTHON`, else `target/bench-venv/bin/python`.
pub fn reference_python(repo: &Path) -> PathBuf {
    std::env::var_os("KURA_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/bench-venv/bin/python"))
}

/// Runs both engines on `passages` passages of `tokens` tokens, `repeats` times each.
pub fn run(
    embedder: &Embedder,
    model_path: &Path,
    repo: &Path,
    passages: usize,
    tokens: usize,
    repeats: usize,
) -> Result<EmbedBench, EmbedError> {
    let texts: Vec<String> = (0..passages)
        .map(|i| passage_of(embedder, i, tokens))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids: Vec<Vec<u32>> = refs
        .iter()
        .map(|t| embedder.passage_input(t))
        .collect::<Result<_, _>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    embedder.embed_passages(&refs[..refs.len().min(4)])?;
    let mut best = f64::INFINITY;
    let mut first = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let out = embedder.embed_passages(&refs)?;
        best = best.min(t.elapsed().as_secs_f64());
        first = out[0].clone();
    }
    let kura = passages as f64 / best;

    let mut result = EmbedBench {
        passages,
        tokens_per_passage: ids[0].len(),
        threads,
        kura_chunks_per_s: kura,
        torch_chunks_per_s: None,
        ratio: None,
        agreement_cosine: None,
        reference: String::new(),
    };
    let python = reference_python(repo);
    let script = repo.join("benches/reference/e5_torch.py");
    if !python.is_file() {
        result.reference = format!(
            "not run: {} missing (run installer/bench-tools on a connected machine)",
            python.display()
        );
        return Ok(result);
    }
    let batches: Vec<&[Vec<u32>]> = ids.chunks(32).collect();
    let request =
        serde_json::json!({"batches": batches, "threads": threads, "repeats": repeats.max(1)});
    let spawned = Command::new(&python)
        .arg(&script)
        .arg(model_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            result.reference = format!("not run: {}: {e}", python.display());
            return Ok(result);
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(request.to_string().as_bytes());
    }
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => {
            result.reference = format!("failed: {}: {e}", python.display());
            return Ok(result);
        }
    };
    if !out.status.success() {
        result.reference = format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        return Ok(result);
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        seconds: Vec<f64>,
        first_embedding: Vec<f32>,
        torch: String,
    }
    let reply: Reply = match serde_json::from_slice(&out.stdout) {
        Ok(r) => r,
        Err(e) => {
            result.reference = format!("failed: unreadable reply: {e}");
            return Ok(result);
        }
    };
    let torch_best = reply.seconds.iter().copied().fold(f64::INFINITY, f64::min);
    let torch = passages as f64 / torch_best;
    let cosine: f64 = first
        .iter()
        .zip(&reply.first_embedding)
        .map(|(a, b)| (*a as f64) * (*b as f64))
        .sum();
    result.torch_chunks_per_s = Some(torch);
    result.ratio = Some(kura / torch);
    result.agreement_cosine = Some(cosine);
    result.reference = format!("PyTorch {}", reply.torch);
    Ok(result)
}
