//! Lexical overlap between a sentence and a passage, the measure behind the
//! citation check, the relevance features and the evaluation.
//!
//! Japanese is written without spaces and a word splitter would have to agree
//! with the model's paraphrases, so text is compared as *units*: each run of
//! kana/kanji becomes its character bigrams (a lone character stays a unigram),
//! and each run of Latin letters or digits becomes one lower-cased word, minus a
//! short list of English function words that every passage contains. Numbers are
//! read with their thousands separators removed (`14,000` = `14000`), so a figure
//! in an answer can be looked up in a passage exactly.
//!
//! [`containment`] is the share of a sentence's units that occur in the passage:
//! 1.0 when every bigram and word of the claim is in the cited text, near 0 for
//! a claim the passage does not make. It is asymmetric on purpose: a short
//! answer sentence is judged against a long passage.
//!
//! ```
//! use kura::rag::overlap::{containment, content_units};
//! let passage = content_units("年次有給休暇を取得するときは、3営業日前までにKintaiNaviで申請する。");
//! assert!(containment(&content_units("有給休暇は3営業日前までに申請します"), &passage) > 0.7);
//! assert!(containment(&content_units("有給休暇は社長に電話で連絡します"), &passage) < 0.5);
//! ```

use std::collections::HashSet;

use unicode_normalization::UnicodeNormalization;

use super::lang::is_japanese_letter;

/// English words too common to say anything about support.
const STOPWORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "of",
    "to",
    "in",
    "on",
    "for",
    "at",
    "by",
    "with",
    "and",
    "or",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "as",
    "from",
    "must",
    "should",
    "can",
    "will",
    "do",
    "does",
    "you",
    "your",
    "i",
    "we",
    "they",
    "there",
    "per",
    "if",
    "not",
    "no",
    "which",
    "what",
    "who",
    "when",
    "how",
    "than",
    "then",
    "so",
    "has",
    "have",
    "had",
    "any",
    "all",
    "each",
    "may",
    "according",
    "document",
    "documents",
    "source",
    "sources",
];

/// The comparable units of `text` (see the module docs), in order, with repeats.
pub fn units(text: &str) -> Vec<String> {
    let norm: String = text.nfkc().flat_map(char::to_lowercase).collect();
    let mut out = Vec::new();
    let mut ja: Vec<char> = Vec::new();
    let mut word = String::new();
    let flush_ja = |ja: &mut Vec<char>, out: &mut Vec<String>| {
        if ja.len() == 1 {
            out.push(ja[0].to_string());
        } else {
            for w in ja.windows(2) {
                out.push(w.iter().collect());
            }
        }
        ja.clear();
    };
    let flush_word = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() && !STOPWORDS.contains(&word.as_str()) {
            out.push(std::mem::take(word));
        }
        word.clear();
    };
    let chars: Vec<char> = norm.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if is_japanese_letter(c) || c == 'ー' {
            flush_word(&mut word, &mut out);
            ja.push(c);
        } else if c.is_alphanumeric() {
            flush_ja(&mut ja, &mut out);
            word.push(c);
        } else if c == ',' && word.chars().all(|d| d.is_ascii_digit()) && !word.is_empty() {
            // 14,000: a thousands separator inside a number, not a break.
            if !chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                flush_word(&mut word, &mut out);
            }
        } else {
            flush_ja(&mut ja, &mut out);
            flush_word(&mut word, &mut out);
        }
    }
    flush_ja(&mut ja, &mut out);
    flush_word(&mut word, &mut out);
    out
}

/// [`units`] without the hiragana-only ones (`です`, `ます`, `には`): inflections
/// and particles occur in every Japanese passage and say nothing about a claim.
pub fn content_units(text: &str) -> Vec<String> {
    units(text)
        .into_iter()
        .filter(|u| !u.chars().all(|c| ('\u{3040}'..='\u{309f}').contains(&c)))
        .collect()
}

/// The numbers written in `text` (digit runs, thousands separators removed).
pub fn numbers(text: &str) -> Vec<String> {
    let norm: String = text.nfkc().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = norm.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_digit() {
            cur.push(c);
        } else if c == ','
            && !cur.is_empty()
            && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
        {
            continue;
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Share of the distinct units of `claim` that occur in `passage` (0 when the
/// claim has none).
pub fn containment(claim: &[String], passage: &[String]) -> f32 {
    let claim: HashSet<&String> = claim.iter().collect();
    if claim.is_empty() {
        return 0.0;
    }
    let passage: HashSet<&String> = passage.iter().collect();
    claim.iter().filter(|u| passage.contains(*u)).count() as f32 / claim.len() as f32
}

/// Character-level F1 between a prediction and a gold answer, the JSQuAD metric
/// (after NFKC, lower-casing and dropping whitespace).
pub fn char_f1(prediction: &str, gold: &str) -> f32 {
    let clean = |s: &str| -> Vec<char> {
        s.nfkc()
            .flat_map(char::to_lowercase)
            .filter(|c| !c.is_whitespace())
            .collect()
    };
    let (p, g) = (clean(prediction), clean(gold));
    if p.is_empty() || g.is_empty() {
        return if p == g { 1.0 } else { 0.0 };
    }
    let mut counts = std::collections::HashMap::new();
    for c in &g {
        *counts.entry(*c).or_insert(0i32) += 1;
    }
    let mut same = 0;
    for c in &p {
        if let Some(n) = counts.get_mut(c) {
            if *n > 0 {
                *n -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f32 / p.len() as f32;
    let recall = same as f32 / g.len() as f32;
    2.0 * precision * recall / (precision + recall)
}

/// `text` for "contains" comparisons: NFKC, lower case, no whitespace.
pub fn squeeze(text: &str) -> String {
    text.nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| !c.is_whitespace())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn japanese_becomes_bigrams_and_latin_words() {
        assert_eq!(units("有給休暇"), vec!["有給", "給休", "休暇"]);
        assert_eq!(
            units("KintaiNaviで申請"),
            vec!["kintainavi", "で申", "申請"]
        );
        assert_eq!(
            units("The hotel cap is JPY 14,000."),
            vec!["hotel", "cap", "jpy", "14000"]
        );
        assert_eq!(units("１２３ｱｲｳ"), vec!["123", "アイ", "イウ"]);
    }

    #[test]
    fn numbers_ignore_separators() {
        assert_eq!(
            numbers("JPY 14,000 per night, 3 nights"),
            vec!["14000", "3"]
        );
        assert_eq!(numbers("第２０条"), vec!["20"]);
    }

    #[test]
    fn containment_is_share_of_the_claim() {
        let p = units("通勤手当は月額50,000円を上限として支給する。");
        assert_eq!(containment(&units("通勤手当"), &p), 1.0);
        assert!(containment(&units("住宅手当は支給しない"), &p) < 0.5);
        assert_eq!(containment(&[], &p), 0.0);
    }

    #[test]
    fn char_f1_matches_the_squad_definition() {
        assert_eq!(char_f1("3営業日前", "3営業日前"), 1.0);
        assert!((char_f1("3日", "3営業日前") - 2.0 * 1.0 * 0.4 / 1.4).abs() < 1e-6);
        assert_eq!(char_f1("abc", "xyz"), 0.0);
    }
}
