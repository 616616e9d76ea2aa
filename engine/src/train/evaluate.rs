//! "Did it help?": a trained adapter scored against its base model on held-out
//! examples, the report IT staff read the morning after an overnight job.
//!
//! A lower training loss proves only that the adapter learned its training set. What
//! a company wants to know is whether answers to questions it did *not* train on got
//! better, so both the base model and base + adapter are scored on the job's eval
//! split in two ways:
//!
//! * **loss / perplexity** of the reference replies (assistant tokens only), on the
//!   dense training copy of the base — the same number the trainer logs as eval loss;
//! * **answers**: each held-out prompt is answered greedily by the *served*
//!   (quantized) model, once without and once with the adapter, and compared with the
//!   reference: exact match and character F1 (the JSQuAD metrics, after NFKC and
//!   whitespace removal) and whether the reply contains the reference at all (a
//!   chatty but correct reply still counts there).
//!
//! [`Verdict`] states plainly whether the adapter beat the base: answers first (mean
//! character F1, then the share of replies containing the reference), loss second.
//! The report is written as JSON with every reply side by side, and a PNG with the
//! loss curves and the scores (written with it by [`super::plot`]).

use super::dataset::{self, Example, TokenizedExample};
use super::lora::{load_peft, PeftLayout};
use super::model::masked_nll;
use super::trainer::StepReport;
use super::TrainError;
use crate::llm::{ChatMessage, GenerateParams, Llm, Role};
use crate::rag::overlap::{char_f1, squeeze};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// How to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Tokens each held-out answer may have (greedy decoding).
    pub max_new_tokens: usize,
    /// Sequences per forward pass when scoring the loss.
    pub batch_size: usize,
    /// Sequences are cut to this many tokens for the loss (as in training).
    pub max_seq_len: usize,
    /// Score at most this many examples (`None`: all).
    pub limit: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            batch_size: 4,
            max_seq_len: 512,
            limit: None,
        }
    }
}

/// The scores of one model (base, or base + adapter) on the held-out examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Mean loss per reference assistant token (`None`: no token to score).
    pub loss: Option<f64>,
    /// `exp(loss)`.
    pub perplexity: Option<f64>,
    /// Share of replies equal to the reference (NFKC, case and whitespace ignored).
    pub exact_match: f64,
    /// Mean character F1 of the replies against the references.
    pub char_f1: f64,
    /// Share of replies that contain the reference.
    pub contains_reference: f64,
}

/// One held-out example, answered by both models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRow {
    /// The last user message of the prompt.
    pub question: String,
    /// The reference reply (the example's last assistant message).
    pub reference: String,
    /// The base model's reply.
    pub base: String,
    /// The reply with the adapter.
    pub adapter: String,
    /// Character F1 of `base`.
    pub base_char_f1: f64,
    /// Character F1 of `adapter`.
    pub adapter_char_f1: f64,
}

/// Whether the adapter beat its base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Better answers (and not a worse loss).
    Better,
    /// Worse answers, or equal answers and a worse loss.
    Worse,
    /// Better answers but a worse loss, or the other way round.
    Mixed,
    /// No measurable difference.
    NoChange,
}

impl Verdict {
    /// The word in `report.json` (`better`, `worse`, `mixed`, `no_change`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::Mixed => "mixed",
            Verdict::NoChange => "no_change",
        }
    }

    /// The verdict in a sentence, English then Japanese.
    pub fn sentence(self) -> &'static str {
        match self {
            Verdict::Better => {
                "The adapter beat the base model on the held-out examples. \
                 (アダプタは評価データでベースモデルを上回りました)"
            }
            Verdict::Worse => {
                "The adapter did NOT beat the base model: its held-out answers are worse. \
                 (アダプタはベースモデルより悪化しました)"
            }
            Verdict::Mixed => {
                "Mixed result: the answers and the loss moved in different directions. \
                 (結果はまちまちです: 回答と損失の傾向が一致しません)"
            }
            Verdict::NoChange => {
                "No measurable difference from the base model. (ベースモデルとの差はありません)"
            }
        }
    }
}

/// The "did it help?" report of one adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterReport {
    /// The adapter's name.
    pub adapter: String,
    /// Its PEFT folder.
    pub adapter_dir: PathBuf,
    /// The base model's name.
    pub base_model: String,
    /// The base model's GGUF file.
    pub model_path: PathBuf,
    /// Held-out examples scored.
    pub examples: usize,
    /// The base model's scores.
    pub base: Scores,
    /// The scores with the adapter.
    pub tuned: Scores,
    /// Whether the adapter beat the base.
    pub verdict: Verdict,
    /// [`Verdict::sentence`].
    pub summary: String,
    /// Training loss per step (from the job's `metrics.jsonl`; empty without a job).
    pub train_curve: Vec<(u64, f64)>,
    /// Eval loss with the adapter at the steps that evaluated.
    pub eval_curve: Vec<(u64, f64)>,
    /// Every held-out example with both replies.
    pub answers: Vec<AnswerRow>,
    /// Seconds the evaluation took.
    pub seconds: f64,
}

impl AdapterReport {
    /// Adds the training and eval loss curves of the adapter's job.
    pub fn with_curves(mut self, metrics: &[StepReport]) -> Self {
        self.train_curve = metrics.iter().map(|r| (r.step, r.loss)).collect();
        self.eval_curve = metrics
            .iter()
            .filter_map(|r| r.eval_loss.map(|l| (r.step, l)))
            .collect();
        self
    }
}

/// What an evaluation is about to do, for progress output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalProgress {
    /// Scoring the loss of both models.
    Loss,
    /// Answering held-out example `done + 1` of `total`.
    Answer {
        /// Examples answered so far.
        done: usize,
        /// Examples to answer.
        total: usize,
    },
}

/// The adapter to evaluate and its base model.
#[derive(Debug, Clone, Copy)]
pub struct AdapterUnderTest<'a> {
    /// The adapter's name.
    pub name: &'a str,
    /// Its PEFT folder.
    pub adapter_dir: &'a Path,
    /// The base model's name.
    pub base_model: &'a str,
    /// The base model's GGUF file.
    pub model_path: &'a Path,
}

/// Scores the adapter against its base model on `examples` (each needs a final
/// assistant message: the reference reply).
pub fn evaluate_adapter(
    target: AdapterUnderTest<'_>,
    examples: &[Example],
    options: &EvalOptions,
    device: &Device,
    cancel: Option<&AtomicBool>,
    progress: &mut dyn FnMut(EvalProgress),
) -> Result<AdapterReport, TrainError> {
    let AdapterUnderTest {
        name,
        adapter_dir,
        base_model,
        model_path,
    } = target;
    let started = Instant::now();
    let examples: Vec<&Example> = examples
        .iter()
        .filter(|e| e.messages.last().is_some_and(|m| m.role == Role::Assistant))
        .take(options.limit.unwrap_or(usize::MAX))
        .collect();
    if examples.is_empty() {
        return Err(TrainError::Config(
            "no held-out example ends with an assistant reply to compare with \
             (評価用の例がありません)"
                .into(),
        ));
    }
    let mut llm = Llm::load(model_path, device)?;
    let layout = PeftLayout::of(&llm.model);
    let peft = load_peft(adapter_dir, &layout, device)?;

    progress(EvalProgress::Loss);
    let tokenized: Vec<TokenizedExample> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| dataset::tokenize(e, &llm.template, &llm.tokenizer, options.max_seq_len, i))
        .collect::<Result<_, _>>()?;
    let (base_loss, tuned_loss) = {
        let mut dense = llm.model.to_training(DType::F32)?;
        let id = dense.attach_adapter(name, peft.adapters.clone())?;
        let mean = |active: &[crate::llm::AdapterId]| -> Result<Option<f64>, TrainError> {
            let (mut sum, mut count) = (0.0f64, 0usize);
            for chunk in tokenized.chunks(options.batch_size.max(1)) {
                let refs: Vec<&TokenizedExample> = chunk.iter().collect();
                let (nll, n) = masked_nll(&dense, &refs, active, None, DType::F32)?;
                sum += nll.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                count += n;
            }
            Ok((count > 0).then(|| sum / count as f64))
        };
        (mean(&[])?, mean(&[id])?)
    };

    let id = llm.model.attach_adapter(name, peft.adapters)?;
    let params = GenerateParams::greedy(options.max_new_tokens);
    let mut answers = Vec::with_capacity(examples.len());
    for (i, example) in examples.iter().enumerate() {
        progress(EvalProgress::Answer {
            done: i,
            total: examples.len(),
        });
        let (prompt, reference) = example.messages.split_at(example.messages.len() - 1);
        let reference = reference[0].content.clone();
        let reply = |adapters: Vec<crate::llm::AdapterId>| -> Result<String, TrainError> {
            let mut session = llm.model.new_session();
            session.set_adapters(adapters);
            let g = llm.chat(&mut session, prompt, &params, cancel, &mut |_| {})?;
            Ok(g.text.trim().to_string())
        };
        let base = reply(Vec::new())?;
        let adapter = reply(vec![id])?;
        answers.push(AnswerRow {
            question: last_user(prompt),
            base_char_f1: f64::from(char_f1(&base, &reference)),
            adapter_char_f1: f64::from(char_f1(&adapter, &reference)),
            reference,
            base,
            adapter,
        });
    }
    let base = scores(base_loss, &answers, |a| (&a.base, a.base_char_f1));
    let tuned = scores(tuned_loss, &answers, |a| (&a.adapter, a.adapter_char_f1));
    let verdict = verdict(&base, &tuned);
    Ok(AdapterReport {
        adapter: name.to_string(),
        adapter_dir: adapter_dir.to_path_buf(),
        base_model: base_model.to_string(),
        model_path: model_path.to_path_buf(),
        examples: answers.len(),
        base,
        tuned,
        verdict,
        summary: verdict.sentence().to_string(),
        train_curve: Vec::new(),
        eval_curve: Vec::new(),
        answers,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn last_user(prompt: &[ChatMessage]) -> String {
    prompt
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

fn scores(
    loss: Option<f64>,
    answers: &[AnswerRow],
    pick: impl Fn(&AnswerRow) -> (&String, f64),
) -> Scores {
    let n = answers.len().max(1) as f64;
    let (mut em, mut f1, mut contains) = (0usize, 0.0f64, 0usize);
    for a in answers {
        let (text, f) = pick(a);
        let (t, r) = (squeeze(text), squeeze(&a.reference));
        em += usize::from(t == r);
        contains += usize::from(!r.is_empty() && t.contains(&r));
        f1 += f;
    }
    Scores {
        loss,
        perplexity: loss.map(f64::exp),
        exact_match: em as f64 / n,
        char_f1: f1 / n,
        contains_reference: contains as f64 / n,
    }
}

/// Answers decide (mean character F1, then the share containing the reference); the
/// loss breaks ties and flags a disagreement.
pub fn verdict(base: &Scores, tuned: &Scores) -> Verdict {
    const EPS: f64 = 1e-6;
    let answers = if tuned.char_f1 > base.char_f1 + EPS {
        1
    } else if tuned.char_f1 + EPS < base.char_f1 {
        -1
    } else if tuned.contains_reference > base.contains_reference + EPS {
        1
    } else if tuned.contains_reference + EPS < base.contains_reference {
        -1
    } else {
        0
    };
    let loss = match (base.loss, tuned.loss) {
        (Some(b), Some(t)) if t < b - 1e-4 => 1,
        (Some(b), Some(t)) if t > b + 1e-4 => -1,
        _ => 0,
    };
    match (answers, loss) {
        (1, 0 | 1) => Verdict::Better,
        (-1, 0 | -1) => Verdict::Worse,
        (1, -1) | (-1, 1) => Verdict::Mixed,
        (0, 1) => Verdict::Better,
        (0, -1) => Verdict::Worse,
        _ => Verdict::NoChange,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(loss: f64, f1: f64, contains: f64) -> Scores {
        Scores {
            loss: Some(loss),
            perplexity: Some(loss.exp()),
            exact_match: 0.0,
            char_f1: f1,
            contains_reference: contains,
        }
    }

    #[test]
    fn answers_decide_and_loss_breaks_ties() {
        assert_eq!(
            verdict(&s(2.0, 0.1, 0.0), &s(0.5, 0.8, 0.6)),
            Verdict::Better
        );
        assert_eq!(
            verdict(&s(2.0, 0.5, 0.5), &s(2.5, 0.2, 0.1)),
            Verdict::Worse
        );
        assert_eq!(
            verdict(&s(2.0, 0.1, 0.0), &s(2.5, 0.3, 0.0)),
            Verdict::Mixed
        );
        assert_eq!(
            verdict(&s(2.0, 0.3, 0.2), &s(1.0, 0.3, 0.2)),
            Verdict::Better
        );
        assert_eq!(
            verdict(&s(2.0, 0.3, 0.2), &s(2.0, 0.3, 0.2)),
            Verdict::NoChange
        );
        assert_eq!(
            verdict(&s(2.0, 0.3, 0.2), &s(2.0, 0.3, 0.4)),
            Verdict::Better
        );
    }

    #[test]
    fn scores_count_exact_contained_and_f1() {
        let row = |reply: &str, reference: &str| AnswerRow {
            question: "q".into(),
            reference: reference.into(),
            base: reply.into(),
            adapter: String::new(),
            base_char_f1: f64::from(char_f1(reply, reference)),
            adapter_char_f1: 0.0,
        };
        let rows = [
            row("14日", "14日"),
            row("年に１４日です。", "14日"),
            row("わかりません", "3営業日前"),
        ];
        let sc = scores(Some(1.0), &rows, |a| (&a.base, a.base_char_f1));
        assert!((sc.exact_match - 1.0 / 3.0).abs() < 1e-9);
        assert!((sc.contains_reference - 2.0 / 3.0).abs() < 1e-9);
        assert!(sc.char_f1 > 0.4 && sc.char_f1 < 0.7, "{}", sc.char_f1);
        assert_eq!(sc.perplexity, Some(1f64.exp()));
    }
}
