//! Answer evaluation: grounded answers ([`crate::rag`]) against the same model
//! answering without retrieval ("closed book").
//!
//! Measures, per system:
//! * **accuracy** on answerable questions: a gold answer, NFKC-normalised with
//!   whitespace removed, is contained in the answer (a refusal scores 0);
//! * **char-F1**: the JSQuAD character F1 between the answer (citation markers
//!   removed) and the best gold answer — low for full-sentence answers by nature,
//!   reported because JSQuAD reports it;
//! * **false refusals** on answerable questions;
//! * **citation precision** (RAG only): share of the answer's citations whose chunk
//!   is from the gold passage (document, and page for the manuals) and contains a
//!   gold answer;
//! * **refusal rate** on unanswerable questions (higher is better).
//!
//! Data sets:
//! * SQuAD-format JSON (JSQuAD): the Wikipedia articles are split in two by
//!   position — even articles are indexed, odd ones held out. Answerable questions
//!   come from indexed articles, unanswerable ones from held-out articles (the
//!   corpus then holds similar text but not the answer: the hard case).
//! * Kura's `questions.jsonl` over a folder of documents (`--corpus`), with its
//!   `answerable: false` lines and, for the refusal side,
//!   [`crate::rag::refusal::OUT_OF_CORPUS`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::rag::citation::parse_markers;
use crate::rag::overlap::{char_f1, squeeze};
use crate::rag::{Answer, Source};

use super::EvalError;

/// One evaluation question.
#[derive(Debug, Clone, Serialize)]
pub struct RagQuestion {
    /// Identifier.
    pub id: String,
    /// The question.
    pub question: String,
    /// Gold answers (empty for unanswerable questions).
    pub answers: Vec<String>,
    /// Gold document: a path suffix (manuals) or the passage id (JSQuAD).
    pub doc: Option<String>,
    /// Gold page (manuals only).
    pub page: Option<i64>,
    /// Whether the corpus holds the answer.
    pub answerable: bool,
}

pub use super::spread;

/// Passages to index as (id, text), answerable questions, unanswerable questions.
pub type SquadSplit = (Vec<(String, String)>, Vec<RagQuestion>, Vec<RagQuestion>);

/// A SQuAD-format file split for answer evaluation: (passages to index as
/// (id, text), answerable questions, unanswerable questions), the questions
/// spread evenly, `answerable` and `unanswerable` of each at most.
pub fn load_squad_split(
    path: &Path,
    answerable: usize,
    unanswerable: usize,
) -> Result<SquadSplit, EvalError> {
    let squad = super::squad::read(path)?;
    let (mut docs, mut pos, mut neg) = (Vec::new(), Vec::new(), Vec::new());
    let mut pid = 0usize;
    for (ai, article) in squad.data.into_iter().enumerate() {
        let indexed = ai % 2 == 0;
        for p in article.paragraphs {
            let id = format!("p{pid:05}");
            pid += 1;
            for qa in p.qas {
                let q = RagQuestion {
                    id: qa.id,
                    question: qa.question,
                    answers: if indexed {
                        qa.answers.into_iter().map(|a| a.text).collect()
                    } else {
                        Vec::new()
                    },
                    doc: indexed.then(|| id.clone()),
                    page: None,
                    answerable: indexed,
                };
                if indexed {
                    pos.push(q);
                } else {
                    neg.push(q);
                }
            }
            if indexed {
                docs.push((id, p.context));
            }
        }
    }
    Ok((docs, spread(pos, answerable), spread(neg, unanswerable)))
}

#[derive(Deserialize)]
struct QuestionLine {
    id: String,
    question: String,
    answer: Option<String>,
    doc: Option<String>,
    page: Option<i64>,
    #[serde(default = "yes")]
    answerable: bool,
}

fn yes() -> bool {
    true
}

/// Loads a Kura `questions.jsonl`.
pub fn load_questions_jsonl(path: &Path) -> Result<Vec<RagQuestion>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let q: QuestionLine = serde_json::from_str(line).map_err(|e| EvalError::Dataset {
            path: path.to_owned(),
            message: format!("line {}: {e}", i + 1),
        })?;
        out.push(RagQuestion {
            id: q.id,
            question: q.question,
            answers: q.answer.into_iter().collect(),
            doc: q.doc,
            page: q.page,
            answerable: q.answerable,
        });
    }
    Ok(out)
}

/// Whether a retrieved source is the gold passage of `q` and holds a gold answer.
pub fn is_gold_source(q: &RagQuestion, s: &Source) -> bool {
    let Some(doc) = &q.doc else { return false };
    let doc_ok = s.doc == *doc || s.doc.ends_with(&format!("/{doc}"));
    let page_ok = q.page.is_none_or(|p| p == s.page);
    let text = squeeze(&format!(
        "{}\n{}",
        s.heading.clone().unwrap_or_default(),
        s.text
    ));
    doc_ok && page_ok && q.answers.iter().any(|a| text.contains(&squeeze(a)))
}

/// Whether `answer` contains a gold answer (after NFKC, whitespace removed).
pub fn contains_gold(answer: &str, golds: &[String]) -> bool {
    let a = squeeze(answer);
    golds
        .iter()
        .any(|g| !g.trim().is_empty() && a.contains(&squeeze(g)))
}

/// `answer` without citation markers.
pub fn strip_markers(answer: &str) -> String {
    let mut out = String::new();
    let mut pos = 0;
    for m in parse_markers(answer) {
        out.push_str(&answer[pos..m.start]);
        pos = m.end;
    }
    out.push_str(&answer[pos..]);
    out
}

/// The outcome of one question for one system.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Question id.
    pub id: String,
    /// Whether the question is answerable.
    pub answerable: bool,
    /// The answer shown.
    pub answer: String,
    /// Refused.
    pub refused: bool,
    /// Gold contained (answerable only).
    pub correct: bool,
    /// Best char-F1 against the golds.
    pub f1: f32,
    /// Citations given, and how many point at the gold passage.
    pub citations: usize,
    /// Citations pointing at the gold passage.
    pub gold_citations: usize,
    /// Whether the gold passage was among the retrieved sources.
    pub gold_retrieved: bool,
    /// Seconds to the first token.
    pub ttft_s: f64,
    /// Seconds in all.
    pub total_s: f64,
}

/// Scores a RAG answer.
pub fn score_rag(q: &RagQuestion, a: &Answer) -> Outcome {
    let shown = strip_markers(&a.answer);
    let correct = q.answerable && !a.refused && contains_gold(&shown, &q.answers);
    let f1 = if a.refused {
        0.0
    } else {
        q.answers
            .iter()
            .map(|g| char_f1(&shown, g))
            .fold(0.0, f32::max)
    };
    let gold_citations = a
        .citations
        .iter()
        .filter(|c| {
            a.sources
                .iter()
                .find(|s| s.n == c.n)
                .is_some_and(|s| is_gold_source(q, s))
        })
        .count();
    Outcome {
        id: q.id.clone(),
        answerable: q.answerable,
        answer: a.answer.clone(),
        refused: a.refused,
        correct,
        f1,
        citations: a.citations.len(),
        gold_citations,
        gold_retrieved: a.sources.iter().any(|s| is_gold_source(q, s)),
        ttft_s: a.time_to_first_token.as_secs_f64(),
        total_s: a.total_time.as_secs_f64(),
    }
}

/// Scores a closed-book answer.
pub fn score_closed_book(q: &RagQuestion, text: &str, ttft_s: f64, total_s: f64) -> Outcome {
    let refused = crate::rag::lang::is_refusal(text);
    Outcome {
        id: q.id.clone(),
        answerable: q.answerable,
        answer: text.to_string(),
        refused,
        correct: q.answerable && !refused && contains_gold(text, &q.answers),
        f1: if refused {
            0.0
        } else {
            q.answers
                .iter()
                .map(|g| char_f1(text, g))
                .fold(0.0, f32::max)
        },
        citations: 0,
        gold_citations: 0,
        gold_retrieved: false,
        ttft_s,
        total_s,
    }
}

/// Aggregate scores of one system.
#[derive(Debug, Clone, Serialize)]
pub struct RagScores {
    /// `rag` or `closed-book`.
    pub system: String,
    /// Answerable questions.
    pub answerable: usize,
    /// Unanswerable questions.
    pub unanswerable: usize,
    /// Gold contained, share of answerable.
    pub accuracy: f64,
    /// Mean char-F1 on answerable.
    pub char_f1: f64,
    /// Refusals on answerable questions.
    pub false_refusals: f64,
    /// Gold citations / all citations (None without citations).
    pub citation_precision: Option<f64>,
    /// Share of answerable questions whose gold passage was retrieved.
    pub gold_retrieved: Option<f64>,
    /// Refusals on unanswerable questions.
    pub refusal_rate: f64,
    /// Median seconds to the first token.
    pub ttft_p50_s: f64,
    /// Median seconds per question.
    pub total_p50_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Aggregates outcomes.
pub fn aggregate(system: &str, outcomes: &[Outcome]) -> RagScores {
    let pos: Vec<&Outcome> = outcomes.iter().filter(|o| o.answerable).collect();
    let neg: Vec<&Outcome> = outcomes.iter().filter(|o| !o.answerable).collect();
    let share = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let cites: usize = pos.iter().map(|o| o.citations).sum();
    let rag = system == "rag";
    RagScores {
        system: system.to_string(),
        answerable: pos.len(),
        unanswerable: neg.len(),
        accuracy: share(pos.iter().filter(|o| o.correct).count(), pos.len()),
        char_f1: if pos.is_empty() {
            0.0
        } else {
            pos.iter().map(|o| o.f1 as f64).sum::<f64>() / pos.len() as f64
        },
        false_refusals: share(pos.iter().filter(|o| o.refused).count(), pos.len()),
        citation_precision: (rag && cites > 0)
            .then(|| share(pos.iter().map(|o| o.gold_citations).sum(), cites)),
        gold_retrieved: rag
            .then(|| share(pos.iter().filter(|o| o.gold_retrieved).count(), pos.len())),
        refusal_rate: share(neg.iter().filter(|o| o.refused).count(), neg.len()),
        ttft_p50_s: median(outcomes.iter().map(|o| o.ttft_s).collect()),
        total_p50_s: median(outcomes.iter().map(|o| o.total_s).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gold_containment_ignores_width_and_spaces() {
        assert!(contains_gold(
            "内線２３４５に連絡してください[1]。",
            &["内線 2345".into()]
        ));
        assert!(!contains_gold("内線1120", &["内線 2345".into()]));
        assert_eq!(strip_markers("14日です[1][2]。"), "14日です。");
    }

    #[test]
    fn aggregate_counts_each_side() {
        let o = |answerable, refused, correct, citations, gold_citations| Outcome {
            id: String::new(),
            answerable,
            answer: String::new(),
            refused,
            correct,
            f1: 0.0,
            citations,
            gold_citations,
            gold_retrieved: true,
            ttft_s: 1.0,
            total_s: 2.0,
        };
        let s = aggregate(
            "rag",
            &[
                o(true, false, true, 2, 1),
                o(true, true, false, 0, 0),
                o(false, true, false, 0, 0),
                o(false, false, false, 1, 0),
            ],
        );
        assert_eq!(
            (s.accuracy, s.false_refusals, s.refusal_rate),
            (0.5, 0.5, 0.5)
        );
        assert_eq!(s.citation_precision, Some(0.5));
    }
}
