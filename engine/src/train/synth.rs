//! Training pairs drafted from the indexed manuals by the local model, kept for a
//! person to review before anything is trained on them.
//!
//! Writing hundreds of question/answer pairs by hand is what stops most companies from
//! fine-tuning at all; letting a model write them unchecked trains its mistakes in. So
//! `kura dataset synth` asks the local model for one question and a short answer per
//! chunk of a collection, **keeps the chunk each pair came from** (document, page,
//! chunk id) and a grounding score — the share of the answer's words (Japanese
//! bigrams) found in the chunk — and stores every pair as a *pending* draft.
//! `kura dataset review` lists drafts and approves, edits or rejects them; only
//! approved pairs become the dataset's train/eval files, re-split (seeded) after every
//! review so a job can use `dataset = "NAME"` at once.
//!
//! Drafts live next to the dataset: `<data>/datasets/NAME/drafts.jsonl`, rewritten
//! atomically on every change.

use super::dataset::{self, DatasetStore, Example};
use super::TrainError;
use crate::catalog::ChunkRecord;
use crate::llm::{ChatMessage, GenerateParams, Llm};
use crate::rag::overlap::{containment, units};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a draft stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DraftStatus {
    /// Waiting for review.
    Pending,
    /// In the dataset.
    Approved,
    /// Left out.
    Rejected,
}

/// The chunk a draft was written from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraftSource {
    /// The chunk's id in the catalog.
    pub chunk_id: i64,
    /// Its document's path.
    pub document: String,
    /// 1-based page.
    pub page: i64,
}

/// One drafted question/answer pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    /// Number within the dataset (1-based, stable).
    pub id: u64,
    /// The question.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// Where it stands.
    pub status: DraftStatus,
    /// Share of the answer's words found in the source chunk (0–1).
    pub grounded: f32,
    /// Whether a reviewer changed the text.
    #[serde(default)]
    pub edited: bool,
    /// Its source.
    pub source: DraftSource,
}

/// The drafts of one dataset.
#[derive(Debug, Clone)]
pub struct DraftStore {
    store: DatasetStore,
    name: String,
}

impl DraftStore {
    /// The drafts of dataset `name` in `store`.
    pub fn new(store: DatasetStore, name: &str) -> Self {
        Self {
            store,
            name: name.to_string(),
        }
    }

    fn path(&self) -> PathBuf {
        self.store.path(&self.name).join("drafts.jsonl")
    }

    /// Every draft (none when the dataset has none yet).
    pub fn load(&self) -> Result<Vec<Draft>, TrainError> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(TrainError::io(&path, e)),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    TrainError::Config(format!("{} line {}: {e}", path.display(), i + 1))
                })
            })
            .collect()
    }

    /// Writes `drafts` and rebuilds the dataset's train/eval files from the approved
    /// ones (`eval_fraction` held out, seeded); returns (train, eval) counts.
    pub fn save(
        &self,
        drafts: &[Draft],
        eval_fraction: f64,
        seed: u64,
    ) -> Result<(usize, usize), TrainError> {
        let dir = self.store.path(&self.name);
        std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        let mut text = String::new();
        for d in drafts {
            text.push_str(&serde_json::to_string(d).expect("serialisable"));
            text.push('\n');
        }
        super::checkpoint::write_atomic(&self.path(), text.as_bytes())
            .map_err(|e| TrainError::io(&self.path(), e))?;
        let approved: Vec<Example> = drafts
            .iter()
            .filter(|d| d.status == DraftStatus::Approved)
            .map(|d| Example {
                messages: vec![
                    ChatMessage::user(d.question.clone()),
                    ChatMessage::assistant(d.answer.clone()),
                ],
            })
            .collect();
        let (train, eval) = if approved.len() >= 2 {
            dataset::split(&approved, eval_fraction, seed)
        } else {
            (approved, Vec::new())
        };
        dataset::write_jsonl(&dir.join("train.jsonl"), &train)?;
        dataset::write_jsonl(&dir.join("eval.jsonl"), &eval)?;
        let info = dataset::DatasetInfo {
            name: self.name.clone(),
            source: self.path(),
            train: train.len(),
            eval: eval.len(),
            eval_fraction,
            seed,
        };
        let meta = dir.join("meta.json");
        super::checkpoint::write_atomic(
            &meta,
            serde_json::to_string_pretty(&info)
                .expect("serialisable")
                .as_bytes(),
        )
        .map_err(|e| TrainError::io(&meta, e))?;
        Ok((train.len(), eval.len()))
    }
}

/// Asks `llm` for one question and a short answer grounded in `chunk`; `None` when
/// the reply does not have both parts.
pub fn draft_from_chunk(
    llm: &Llm,
    chunk: &ChunkRecord,
    max_tokens: usize,
) -> Result<Option<(String, String, f32)>, TrainError> {
    let japanese = chunk
        .text
        .chars()
        .filter(|c| matches!(*c as u32, 0x3040..=0x30FF | 0x4E00..=0x9FFF))
        .count()
        * 4
        > chunk.text.chars().count();
    let document = Path::new(&chunk.path)
        .file_name()
        .map_or(chunk.path.clone(), |n| n.to_string_lossy().to_string());
    let prompt = if japanese {
        format!(
            "次の社内資料の抜粋だけで答えられる質問を1つ作り、その答えを短く書いてください。\
             資料にないことは書かないでください。次の形式で2行だけ出力してください。\n\
             質問: …\n回答: …\n\n資料 ({document} {}ページ):\n{}",
            chunk.page, chunk.text
        )
    } else {
        format!(
            "Write one question that can be answered from this excerpt of a company \
             document alone, and its short answer. Do not add anything the excerpt does \
             not say. Output exactly two lines:\nQuestion: …\nAnswer: …\n\n\
             Excerpt ({document}, page {}):\n{}",
            chunk.page, chunk.text
        )
    };
    let params = GenerateParams::greedy(max_tokens);
    let mut session = llm.model.new_session();
    let g = llm.chat(
        &mut session,
        &[ChatMessage::user(prompt)],
        &params,
        None,
        &mut |_| {},
    )?;
    Ok(parse_pair(&g.text).map(|(q, a)| {
        let grounded = containment(&units(&a), &units(&chunk.text));
        (q, a, grounded)
    }))
}

/// Drafts one pair from each of up to `limit` chunks of `chunks` — long enough to hold
/// a fact, not drafted before, spread evenly — appending them to `store`'s drafts and
/// saving after each one (a killed run keeps what it made). `progress(done, total)`
/// before each chunk. Returns (drafts made, chunks tried).
pub fn synthesize(
    store: &DraftStore,
    llm: &Llm,
    chunks: &[ChunkRecord],
    limit: usize,
    max_tokens: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(usize, usize), TrainError> {
    let mut drafts = store.load()?;
    let done: std::collections::HashSet<i64> = drafts.iter().map(|d| d.source.chunk_id).collect();
    let fresh: Vec<&ChunkRecord> = chunks
        .iter()
        .filter(|c| c.text.chars().count() >= 60 && !done.contains(&c.id))
        .collect();
    let step = (fresh.len() as f64 / limit.max(1) as f64).max(1.0);
    let picked: Vec<&ChunkRecord> = (0..limit.min(fresh.len()))
        .map(|i| fresh[(i as f64 * step) as usize])
        .collect();
    let mut next = drafts.iter().map(|d| d.id).max().unwrap_or(0) + 1;
    let mut made = 0;
    for (i, chunk) in picked.iter().enumerate() {
        progress(i, picked.len());
        let Some((question, answer, grounded)) = draft_from_chunk(llm, chunk, max_tokens)? else {
            continue;
        };
        drafts.push(Draft {
            id: next,
            question,
            answer,
            status: DraftStatus::Pending,
            grounded,
            edited: false,
            source: DraftSource {
                chunk_id: chunk.id,
                document: chunk.path.clone(),
                page: chunk.page,
            },
        });
        next += 1;
        made += 1;
        store.save(&drafts, 0.1, 42)?;
    }
    Ok((made, picked.len()))
}

/// Finds the `質問:`/`Question:` and `回答:`/`Answer:` lines of a reply.
pub fn parse_pair(reply: &str) -> Option<(String, String)> {
    let field = |line: &str, keys: &[&str]| -> Option<String> {
        let l = line.trim().trim_start_matches(['*', '-', ' ']).trim();
        keys.iter().find_map(|k| {
            let rest = l.strip_prefix(k)?;
            let rest = rest.trim_start_matches(['*', ' ']);
            let rest = rest.strip_prefix(':').or_else(|| rest.strip_prefix('：'))?;
            let v = rest.trim().trim_matches('*').trim();
            (!v.is_empty()).then(|| v.to_string())
        })
    };
    let mut q = None;
    let mut a = None;
    for line in reply.lines() {
        if q.is_none() {
            q = field(line, &["質問", "Question", "Q"]);
            if q.is_some() {
                continue;
            }
        }
        if q.is_some() && a.is_none() {
            a = field(line, &["回答", "答え", "Answer", "A"]);
        }
    }
    Some((q?, a?))
}

/// Applies review decisions; unknown ids are an error naming them.
pub fn review(
    drafts: &mut [Draft],
    approve: &[u64],
    reject: &[u64],
    edit: Option<(u64, Option<String>, Option<String>)>,
) -> Result<(), TrainError> {
    let mut unknown: Vec<u64> = approve
        .iter()
        .chain(reject)
        .chain(edit.as_ref().map(|e| &e.0))
        .filter(|id| !drafts.iter().any(|d| d.id == **id))
        .copied()
        .collect();
    unknown.dedup();
    if !unknown.is_empty() {
        return Err(TrainError::Config(format!(
            "no draft with id {} (下書きが見つかりません)",
            unknown
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for d in drafts.iter_mut() {
        if approve.contains(&d.id) {
            d.status = DraftStatus::Approved;
        }
        if reject.contains(&d.id) {
            d.status = DraftStatus::Rejected;
        }
        if let Some((id, q, a)) = &edit {
            if *id == d.id {
                if let Some(q) = q {
                    d.question = q.clone();
                    d.edited = true;
                }
                if let Some(a) = a {
                    d.answer = a.clone();
                    d.edited = true;
                }
            }
        }
    }
    Ok(())
}

/// Drafting runs in the background, by dataset name: what the UI's Training screen
/// starts and polls. At most one run per dataset; a run's progress is (chunks done,
/// chunks in all), and it is forgotten when it ends (its drafts are on disk).
#[derive(Debug, Clone, Default)]
pub struct DraftRuns {
    running: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (usize, usize)>>>,
}

/// Why a drafting run did not start.
#[derive(Debug, thiserror::Error)]
pub enum DraftRunError {
    /// This dataset is being drafted already.
    #[error("dataset `{0}` is already being drafted / データセット「{0}」は作成中です")]
    AlreadyRunning(String),
    /// The background thread could not be started.
    #[error("cannot start the drafting thread: {0}")]
    Thread(std::io::Error),
}

impl DraftRuns {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (usize, usize)>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The progress of dataset `name`'s run, if one is running.
    pub fn progress(&self, name: &str) -> Option<(usize, usize)> {
        self.lock().get(name).copied()
    }

    /// Drafts up to `limit` pairs for dataset `name` from `chunks` with `llm`, on a
    /// thread of its own. A failure is logged; the drafts written before it stay.
    pub fn start(
        &self,
        store: DatasetStore,
        name: &str,
        llm: std::sync::Arc<Llm>,
        chunks: Vec<ChunkRecord>,
        limit: usize,
    ) -> Result<(), DraftRunError> {
        {
            let mut running = self.lock();
            if running.contains_key(name) {
                return Err(DraftRunError::AlreadyRunning(name.to_string()));
            }
            running.insert(name.to_string(), (0, 0));
        }
        let runs = self.clone();
        let name = name.to_string();
        let thread_name = format!("kura-draft-{name}");
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let drafts = DraftStore::new(store, &name);
                let result = synthesize(&drafts, &llm, &chunks, limit, 160, &mut |done, total| {
                    runs.lock().insert(name.clone(), (done, total));
                });
                if let Err(e) = result {
                    tracing::warn!("drafting `{name}` failed: {e}");
                }
                runs.lock().remove(&name);
            })
            .map(|_| ())
            .map_err(DraftRunError::Thread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_found_in_the_usual_reply_shapes() {
        assert_eq!(
            parse_pair("質問: 有給休暇は何日前までに申請しますか？\n回答: 3営業日前まで"),
            Some((
                "有給休暇は何日前までに申請しますか？".into(),
                "3営業日前まで".into()
            ))
        );
        assert_eq!(
            parse_pair("**Question:** What is the hotel cap?\n**Answer:** JPY 14,000 per night"),
            Some((
                "What is the hotel cap?".into(),
                "JPY 14,000 per night".into()
            ))
        );
        assert_eq!(
            parse_pair("質問：E05 とは？\n\n答え：チャック圧低下"),
            Some(("E05 とは？".into(), "チャック圧低下".into()))
        );
        assert_eq!(parse_pair("わかりません"), None);
        assert_eq!(parse_pair("質問: だけ"), None);
    }

    fn draft(id: u64) -> Draft {
        Draft {
            id,
            question: format!("q{id}"),
            answer: format!("a{id}"),
            status: DraftStatus::Pending,
            grounded: 1.0,
            edited: false,
            source: DraftSource {
                chunk_id: id as i64,
                document: "x.pdf".into(),
                page: 1,
            },
        }
    }

    #[test]
    fn only_approved_drafts_become_the_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let store = DraftStore::new(DatasetStore::new(dir.path()), "faq");
        let mut drafts: Vec<Draft> = (1..=5).map(draft).collect();
        review(
            &mut drafts,
            &[1, 2, 3],
            &[4],
            Some((2, None, Some("edited".into()))),
        )
        .unwrap();
        assert!(review(&mut drafts, &[9], &[], None)
            .unwrap_err()
            .to_string()
            .contains("no draft with id 9"));
        let (train, eval) = store.save(&drafts, 0.34, 7).unwrap();
        assert_eq!(train + eval, 3);
        assert_eq!(store.load().unwrap(), drafts);
        let (t, e) = DatasetStore::new(dir.path()).load("faq").unwrap();
        let all: Vec<String> = t
            .iter()
            .chain(&e)
            .map(|x| x.messages[1].content.clone())
            .collect();
        assert!(all.contains(&"edited".to_string()));
        assert!(!all.contains(&"a4".to_string()) && !all.contains(&"a5".to_string()));
    }

    /// A drafting run goes on in the background, refuses a second run on the same
    /// dataset while it works, and is forgotten once it ends.
    #[test]
    fn a_background_run_is_one_per_dataset_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("tiny.gguf");
        crate::llm::fixtures::write_tiny_qwen2_gguf(&gguf, 3).unwrap();
        let llm = std::sync::Arc::new(Llm::load(&gguf, &candle_core::Device::Cpu).unwrap());
        let chunks: Vec<ChunkRecord> = (1..=3)
            .map(|id| ChunkRecord {
                id,
                document_id: 1,
                collection_id: 1,
                path: "規程.pdf".into(),
                page: id,
                char_start: 0,
                char_end: 20,
                heading: None,
                text: format!("第{id}条 有給休暇は3営業日前までに申請する。"),
            })
            .collect();
        let runs = DraftRuns::default();
        let store = DatasetStore::new(dir.path());
        // While a run of "faq" is in progress, a second one is refused.
        runs.lock().insert("faq".into(), (1, 3));
        let again = runs.start(store.clone(), "faq", llm.clone(), chunks.clone(), 3);
        assert!(matches!(again, Err(DraftRunError::AlreadyRunning(n)) if n == "faq"));
        runs.lock().clear();
        runs.start(store, "faq", llm, chunks, 3).unwrap();
        let started = std::time::Instant::now();
        while runs.progress("faq").is_some() {
            assert!(started.elapsed().as_secs() < 120, "the run ends");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(runs.progress("faq"), None);
    }
}
