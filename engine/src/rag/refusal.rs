//! When Kura says 「資料に記載が見つかりませんでした」/ "The documents do not say"
//! instead of answering, and how its thresholds were chosen.
//!
//! Two gates:
//!
//! 1. **Before generation — is anything relevant?** Every search returns a "best"
//!    chunk, so relevance is judged on absolute features of the retrieved sources
//!    (see [`super::retrieve`]): the best query–chunk cosine and the best
//!    coverage of the question's content units. Retrieval is *relevant* when
//!    `cosine ≥ min_cosine` **or** `coverage ≥ min_coverage`: the cosine carries
//!    cross-lingual questions (an English question about a Japanese page shares
//!    no characters with it), coverage carries questions whose rare keywords
//!    (`E05`, `KR-200`) the embedding blurs. When neither holds, the model is not
//!    called at all — the refusal comes at once, with the closest sources.
//! 2. **After generation — is the answer backed?** The model may refuse by itself
//!    (the system prompt gives it the phrase), and the citation check
//!    ([`super::citation`]) may find that no claim of the answer is supported by
//!    any source. Both end in the refusal; the model's text stays available
//!    (`model_answer`) for inspection.
//!
//! # Calibration
//!
//! The defaults were calibrated on data with `kura eval rag --calibrate` (it
//! prints both feature distributions and the sweep), on
//! * JSQuAD v1.3 **valid** (tuning split): half of the Wikipedia articles are
//!   indexed; questions about indexed articles are *answerable*, questions about
//!   the held-out half *unanswerable* (near misses: same genre, other topic);
//! * the sample manuals' `assets/questions.jsonl` (31 answerable, 5 unanswerable)
//!   plus [`OUT_OF_CORPUS`], questions written for this purpose.
//!
//! Rule used: the highest thresholds that keep at least 97 % of the answerable
//! questions on each data set (a wrong refusal of an answerable question costs
//! more than the few seconds of a generation, and the second gate still catches
//! unanswerable ones). See NOTES-FOR-LEAD.md for the measured distributions.

use serde::Serialize;

use super::retrieve::Source;

/// Unanswerable questions about the sample manuals' company, written for the
/// refusal calibration (none of them is answered by any document).
pub const OUT_OF_CORPUS: &[&str] = &[
    "くら精機の社長の誕生日はいつですか？",
    "浜松工場の駐車場は何台分ありますか？",
    "社員旅行の行き先はどこですか？",
    "KR-200の重量は何トンですか？",
    "くら精機の昨年度の売上高はいくらですか？",
    "新入社員研修は何日間ですか？",
    "Who is the CEO of Kura Seiki?",
    "What is the dress code at the head office?",
    "How many parking spaces does the Hamamatsu plant have?",
    "What is the company's annual revenue?",
];

/// Thresholds of both gates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RefusalPolicy {
    /// Gate 1: the best query–chunk cosine that counts as relevant.
    pub min_cosine: f32,
    /// Gate 1: the best coverage of the question's content units that counts as relevant.
    pub min_coverage: f32,
    /// Gate 2: share of a claim's units that must occur in its cited sources.
    pub min_support: f32,
}

impl Default for RefusalPolicy {
    /// The calibrated defaults (see the module docs and NOTES-FOR-LEAD.md).
    fn default() -> Self {
        RefusalPolicy {
            min_cosine: 0.84,
            min_coverage: 0.6,
            min_support: 0.5,
        }
    }
}

/// The gate-1 features of a retrieval: the best of each over its sources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Relevance {
    /// Best cosine.
    pub cosine: f32,
    /// Best coverage.
    pub coverage: f32,
}

impl Relevance {
    /// The features of a set of sources.
    pub fn of(sources: &[Source]) -> Relevance {
        Relevance {
            cosine: sources.iter().map(|s| s.cosine).fold(0.0, f32::max),
            coverage: sources.iter().map(|s| s.coverage).fold(0.0, f32::max),
        }
    }
}

impl RefusalPolicy {
    /// Gate 1: whether retrieval found something relevant enough to answer from.
    pub fn is_relevant(&self, r: Relevance) -> bool {
        r.cosine >= self.min_cosine || r.coverage >= self.min_coverage
    }
}

/// One threshold of a calibration sweep.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SweepPoint {
    /// The threshold.
    pub threshold: f32,
    /// Share of answerable questions at or above it (kept).
    pub answerable_kept: f64,
    /// Share of unanswerable questions below it (refused).
    pub unanswerable_refused: f64,
}

/// Summary of one feature's distributions on answerable and unanswerable questions.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureCalibration {
    /// Feature name.
    pub feature: String,
    /// Quartiles (min, 25 %, 50 %, 75 %, max) on answerable questions.
    pub answerable: [f32; 5],
    /// Quartiles on unanswerable questions.
    pub unanswerable: [f32; 5],
    /// Probability that a random answerable question scores above a random unanswerable one.
    pub auc: f64,
    /// The highest threshold that keeps `keep` of the answerable questions.
    pub threshold: f32,
    /// Shares at that threshold.
    pub at_threshold: SweepPoint,
}

fn quartiles(v: &[f32]) -> [f32; 5] {
    if v.is_empty() {
        return [0.0; 5];
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    [at(0.0), at(0.25), at(0.5), at(0.75), at(1.0)]
}

/// Share of the answerable (`pos`) and unanswerable (`neg`) scores on either side of `t`.
pub fn sweep_point(pos: &[f32], neg: &[f32], t: f32) -> SweepPoint {
    let kept = pos.iter().filter(|x| **x >= t).count() as f64 / pos.len().max(1) as f64;
    let refused = neg.iter().filter(|x| **x < t).count() as f64 / neg.len().max(1) as f64;
    SweepPoint {
        threshold: t,
        answerable_kept: kept,
        unanswerable_refused: refused,
    }
}

/// Distributions, AUC and the threshold that keeps `keep` (e.g. 0.97) of `pos`.
pub fn calibrate(feature: &str, pos: &[f32], neg: &[f32], keep: f64) -> FeatureCalibration {
    let mut wins = 0.0;
    for p in pos {
        for n in neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    let auc = wins / (pos.len() * neg.len()).max(1) as f64;
    let mut sorted = pos.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    // Highest t with share(pos >= t) >= keep: the value at index floor((1-keep)·n).
    let idx =
        (((1.0 - keep) * sorted.len() as f64).floor() as usize).min(sorted.len().saturating_sub(1));
    let threshold = sorted.get(idx).copied().unwrap_or(0.0);
    FeatureCalibration {
        feature: feature.to_string(),
        answerable: quartiles(pos),
        unanswerable: quartiles(neg),
        auc,
        threshold,
        at_threshold: sweep_point(pos, neg, threshold),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_feature_makes_retrieval_relevant() {
        let p = RefusalPolicy {
            min_cosine: 0.8,
            min_coverage: 0.5,
            min_support: 0.5,
        };
        assert!(p.is_relevant(Relevance {
            cosine: 0.85,
            coverage: 0.0
        }));
        assert!(p.is_relevant(Relevance {
            cosine: 0.7,
            coverage: 0.6
        }));
        assert!(!p.is_relevant(Relevance {
            cosine: 0.7,
            coverage: 0.3
        }));
    }

    #[test]
    fn calibration_keeps_the_asked_share() {
        let pos: Vec<f32> = (0..100).map(|i| 0.5 + i as f32 / 200.0).collect();
        let neg: Vec<f32> = (0..100).map(|i| i as f32 / 200.0).collect();
        let c = calibrate("x", &pos, &neg, 0.97);
        assert!(c.at_threshold.answerable_kept >= 0.97);
        assert!(c.at_threshold.unanswerable_refused > 0.99);
        assert!(c.auc > 0.99);
    }
}
