//! Citation parsing and checking: every `[n]` in an answer must name a source that
//! was in the prompt, and every sentence that states something must be backed by
//! the text of the source it cites.
//!
//! The check, sentence by sentence (sentences end at 。！？!?, a word-final `.` or a
//! line break; markers written just after the full stop, `…です。[1]`, belong to the
//! sentence before):
//!
//! 1. **Numbers in range.** `[n]` with n = 0 or n > number of sources is removed
//!    from the text and reported in [`CheckedAnswer::removed`] — a 1.5B model
//!    given four sources does write `[5]`.
//! 2. **Support.** A sentence with a number or at least [`MIN_CLAIM_UNITS`]
//!    content units (see [`super::overlap::content_units`]) is a claim. It is supported when (a) at least
//!    `min_support` of its units occur in the cited sources' text, and (b) every
//!    number it writes occurs in those sources or in the question — a changed
//!    figure (`5日` for `3日`) is the typical small-model error that unit overlap
//!    alone would let through.
//! 3. **Repair or flag.** A claim whose citations do not back it, or that cites
//!    nothing, is checked against every source; when one backs it, that source
//!    is attached as an *inferred* citation (the marker is inserted, and the
//!    citation says `inferred: true`). Otherwise the sentence is flagged
//!    unsupported and its citations are marked `supported: false`.
//!
//! The answer is *grounded* when it is not a refusal, has at least one claim, and
//! every claim is supported. When no claim at all is supported, the answerer
//! replaces the answer with the refusal (see [`super::refusal`]).
//!
//! ```
//! use kura::rag::citation::{check, parse_markers};
//! assert_eq!(parse_markers("14日です[1][2]。詳細は【3】")[0].numbers, vec![1]);
//! ```

use serde::Serialize;

use super::lang::is_refusal;
use super::overlap::{containment, content_units, numbers, units};
use super::prompt::sentences;
use super::retrieve::Source;

/// Sentences with fewer distinct content units than this (and no number) are not
/// claims ("以上です。").
pub const MIN_CLAIM_UNITS: usize = 3;

/// A citation marker found in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Byte offset of the opening bracket.
    pub start: usize,
    /// Byte offset after the closing bracket.
    pub end: usize,
    /// The source numbers it names.
    pub numbers: Vec<usize>,
}

/// Finds `[1]`, `[1, 2]`, `[1-3]`, `【1】`, `［１］`, `[資料1]`, `[Source 2]` markers.
pub fn parse_markers(text: &str) -> Vec<Marker> {
    let mut out = Vec::new();
    let mut iter = text.char_indices().peekable();
    while let Some((start, c)) = iter.next() {
        let close = match c {
            '[' => ']',
            '【' => '】',
            '［' => '］',
            _ => continue,
        };
        let rest = &text[start + c.len_utf8()..];
        let Some(len) = rest
            .char_indices()
            .take(24)
            .find(|(_, d)| *d == close)
            .map(|(i, _)| i)
        else {
            continue;
        };
        let inner = &rest[..len];
        if let Some(nums) = marker_numbers(inner) {
            let end = start + c.len_utf8() + len + close.len_utf8();
            out.push(Marker {
                start,
                end,
                numbers: nums,
            });
            while iter.peek().is_some_and(|(i, _)| *i < end) {
                iter.next();
            }
        }
    }
    out
}

fn marker_numbers(inner: &str) -> Option<Vec<usize>> {
    let norm: String = unicode_normalization::UnicodeNormalization::nfkc(inner).collect();
    let mut s = norm.trim().to_lowercase();
    for prefix in [
        "資料", "出典", "文書", "source", "sources", "doc", "document", "id", "#",
    ] {
        if let Some(r) = s.strip_prefix(prefix) {
            s = r.trim_start_matches([' ', ':', '=']).to_string();
            break;
        }
    }
    let mut nums = Vec::new();
    for part in s.split([',', '、', ';', ' ']).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once(['-', '–', '~', '〜']) {
            let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if b < a || b - a > 10 {
                return None;
            }
            nums.extend(a..=b);
        } else {
            nums.push(part.trim().parse().ok()?);
        }
    }
    (!nums.is_empty()).then_some(nums)
}

/// One sentence of the answer and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct SentenceCheck {
    /// The sentence without citation markers.
    pub text: String,
    /// The source numbers it ends up citing (valid ones, inferred included).
    pub cited: Vec<usize>,
    /// Share of its units found in the cited sources.
    pub support: f32,
    /// Whether it is a claim (long enough to check).
    pub is_claim: bool,
    /// Whether the check passed (always true for non-claims).
    pub supported: bool,
    /// Whether the citation was inferred by Kura rather than written by the model.
    pub inferred: bool,
}

/// A source cited by the answer, with the passage that backs it.
#[derive(Debug, Clone, Serialize)]
pub struct Citation {
    /// The number used in the answer.
    pub n: usize,
    /// The document's path.
    pub doc: String,
    /// 1-based page.
    pub page: i64,
    /// The chunk.
    pub chunk_id: i64,
    /// The sentence of the source that best matches what the answer says.
    pub quote: String,
    /// Whether at least one sentence citing it is backed by its text.
    pub supported: bool,
    /// Whether Kura attached it (the model wrote no or a wrong marker).
    pub inferred: bool,
}

/// An answer after the citation check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckedAnswer {
    /// The answer with out-of-range markers removed and inferred ones inserted.
    pub text: String,
    /// Per-sentence verdicts.
    pub sentences: Vec<SentenceCheck>,
    /// Cited sources, in order of number.
    pub citations: Vec<Citation>,
    /// Out-of-range numbers removed from the text.
    pub removed: Vec<usize>,
    /// Claims not backed by any source.
    pub unsupported: Vec<String>,
    /// Whether the model refused.
    pub refused: bool,
    /// Not a refusal, at least one claim, every claim supported.
    pub grounded: bool,
}

impl CheckedAnswer {
    /// Whether at least one claim is supported.
    pub fn any_supported(&self) -> bool {
        self.sentences.iter().any(|s| s.is_claim && s.supported)
    }
}

fn source_text(s: &Source) -> String {
    match &s.heading {
        Some(h) if !s.text.starts_with(h.as_str()) => format!("{h}\n{}", s.text),
        _ => s.text.clone(),
    }
}

/// Byte ranges of the sentences of `text`; markers right after a full stop stay
/// with the sentence before.
fn sentence_ranges(text: &str, markers: &[Marker]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        if markers.iter().any(|m| m.start <= pos && pos < m.end) {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).map(|x| x.1);
        let stop = matches!(c, '。' | '！' | '？' | '!' | '?')
            || (c == '.' && next.is_none_or(|n| n.is_whitespace() || n == '[' || n == '【'));
        if c == '\n' {
            if pos > start {
                out.push((start, pos));
            }
            start = pos + 1;
        } else if stop {
            let mut end = pos + c.len_utf8();
            // Swallow markers that follow (spaces allowed).
            loop {
                let rest = &text[end..];
                let skip = rest.len() - rest.trim_start_matches([' ', '\u{3000}']).len();
                match markers.iter().find(|m| m.start == end + skip) {
                    Some(m) => end = m.end,
                    None => break,
                }
            }
            out.push((start, end));
            start = end;
            while i < chars.len() && chars[i].0 < end {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    if start < text.len() {
        out.push((start, text.len()));
    }
    out.into_iter()
        .filter(|(s, e)| !text[*s..*e].trim().is_empty())
        .collect()
}

/// Whether every number of the claim occurs in the passage or the question.
/// Ordinals written `第N` (article, clause, chapter numbers) are exempt: they name
/// parts of a document rather than state a fact, and models cite them loosely.
fn numbers_backed(claim: &str, passage: &str, question: &str) -> bool {
    let known: Vec<String> = numbers(passage)
        .into_iter()
        .chain(numbers(question))
        .collect();
    numbers(&strip_ordinals(claim))
        .iter()
        .all(|n| known.contains(n))
}

/// `claim` without `第N` ordinals.
fn strip_ordinals(claim: &str) -> String {
    let norm: String = unicode_normalization::UnicodeNormalization::nfkc(claim).collect();
    let mut out = String::with_capacity(norm.len());
    let mut skipping = false;
    for c in norm.chars() {
        if c == '第' {
            skipping = true;
            out.push(c);
            continue;
        }
        if skipping && (c.is_ascii_digit() || c == ',') {
            continue;
        }
        skipping = false;
        out.push(c);
    }
    out
}

/// Checks `answer` against the `sources` it was given (see the module docs).
pub fn check(answer: &str, question: &str, sources: &[Source], min_support: f32) -> CheckedAnswer {
    let markers = parse_markers(answer);
    let texts: Vec<String> = sources.iter().map(source_text).collect();
    let source_units: Vec<Vec<String>> = texts.iter().map(|t| content_units(t)).collect();
    let refused = is_refusal(answer);
    let mut removed = Vec::new();
    let mut sentences_out = Vec::new();
    // Text edits: (byte range to replace, replacement).
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for (s, e) in sentence_ranges(answer, &markers) {
        let inside: Vec<&Marker> = markers
            .iter()
            .filter(|m| m.start >= s && m.end <= e)
            .collect();
        let mut claim = String::new();
        let mut pos = s;
        for m in &inside {
            claim.push_str(&answer[pos..m.start]);
            pos = m.end;
        }
        claim.push_str(&answer[pos..e]);
        let claim = claim.trim().to_string();
        let mut cited: Vec<usize> = Vec::new();
        for m in &inside {
            let keep: Vec<usize> = m
                .numbers
                .iter()
                .copied()
                .filter(|n| (1..=sources.len()).contains(n))
                .collect();
            for n in &m.numbers {
                if !keep.contains(n) {
                    removed.push(*n);
                }
            }
            if keep.len() != m.numbers.len() {
                let replacement = if keep.is_empty() {
                    String::new()
                } else {
                    format!(
                        "[{}]",
                        keep.iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                edits.push((m.start, m.end, replacement));
            }
            for n in keep {
                if !cited.contains(&n) {
                    cited.push(n);
                }
            }
        }
        let claim_units = content_units(&claim);
        let distinct: std::collections::HashSet<&String> = claim_units.iter().collect();
        let is_claim = (distinct.len() >= MIN_CLAIM_UNITS
            || !numbers(&strip_ordinals(&claim)).is_empty())
            && !is_refusal(&claim);
        let mut check = SentenceCheck {
            text: claim.clone(),
            cited: cited.clone(),
            support: 0.0,
            is_claim,
            supported: true,
            inferred: false,
        };
        if is_claim {
            let backs = |idx: &[usize]| -> (f32, bool) {
                let mut u = Vec::new();
                let mut t = String::new();
                for n in idx {
                    u.extend(source_units[n - 1].iter().cloned());
                    t.push_str(&texts[n - 1]);
                    t.push('\n');
                }
                let sup = containment(&claim_units, &u);
                (
                    sup,
                    sup >= min_support && numbers_backed(&claim, &t, question),
                )
            };
            let (sup, ok) = if cited.is_empty() {
                (0.0, false)
            } else {
                backs(&cited)
            };
            check.support = sup;
            check.supported = ok;
            if !ok {
                // Does another source back it? Then cite that one instead.
                let best = (1..=sources.len())
                    .map(|n| (n, backs(&[n])))
                    .filter(|(_, (_, ok))| *ok)
                    .max_by(|a, b| a.1 .0.total_cmp(&b.1 .0));
                if let Some((n, (sup, _))) = best {
                    check.support = sup;
                    check.supported = true;
                    check.inferred = true;
                    check.cited = vec![n];
                    // Drop the model's wrong markers in this sentence, insert the right one
                    // before the sentence's full stop.
                    for m in &inside {
                        edits.retain(|x| x.0 != m.start);
                        edits.push((m.start, m.end, String::new()));
                    }
                    let body = answer[s..e].trim_end();
                    let mut at = s + body.len();
                    for m in inside.iter().rev() {
                        if m.end == at {
                            at = m.start;
                        }
                    }
                    let before = answer[s..at].trim_end();
                    let last = before.chars().last();
                    let insert_at = match last {
                        Some(c @ ('。' | '.' | '！' | '？' | '!' | '?')) => {
                            s + before.len() - c.len_utf8()
                        }
                        _ => s + before.len(),
                    };
                    edits.push((insert_at, insert_at, format!("[{n}]")));
                }
            }
        }
        sentences_out.push(check);
    }
    // Apply edits from the back.
    edits.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    let mut text = answer.to_string();
    for (s, e, r) in edits {
        text.replace_range(s..e, &r);
    }
    let text = text.replace(" 。", "。").trim().to_string();

    let mut citations: Vec<Citation> = Vec::new();
    let mut numbers_cited: Vec<usize> = sentences_out
        .iter()
        .flat_map(|s| s.cited.iter().copied())
        .collect();
    numbers_cited.sort_unstable();
    numbers_cited.dedup();
    for n in numbers_cited {
        let citing: Vec<&SentenceCheck> = sentences_out
            .iter()
            .filter(|s| s.cited.contains(&n))
            .collect();
        let claim_units: Vec<String> = citing.iter().flat_map(|s| units(&s.text)).collect();
        let src = &sources[n - 1];
        citations.push(Citation {
            n,
            doc: src.doc.clone(),
            page: src.page,
            chunk_id: src.chunk_id,
            quote: quote(&texts[n - 1], &claim_units),
            supported: citing.iter().any(|s| s.supported && s.is_claim),
            inferred: citing.iter().all(|s| s.inferred),
        });
    }
    // Citations of unsupported claims are marked, not silently kept as evidence.
    let unsupported: Vec<String> = sentences_out
        .iter()
        .filter(|s| s.is_claim && !s.supported)
        .map(|s| s.text.clone())
        .collect();
    removed.sort_unstable();
    removed.dedup();
    let claims = sentences_out.iter().filter(|s| s.is_claim).count();
    let grounded = !refused && claims > 0 && unsupported.is_empty();
    CheckedAnswer {
        text,
        sentences: sentences_out,
        citations,
        removed,
        unsupported,
        refused,
        grounded,
    }
}

/// The sentence of `source` that shares the most units with the claims citing
/// it (continued across line breaks to its full stop, with its neighbour when
/// it is very short), at most 200 characters.
pub fn quote(source: &str, claim_units: &[String]) -> String {
    let sents = sentences(source);
    if sents.is_empty() {
        return String::new();
    }
    let best = (0..sents.len())
        .max_by(|&a, &b| {
            let sa = containment(claim_units, &units(&sents[a]));
            let sb = containment(claim_units, &units(&sents[b]));
            sa.total_cmp(&sb).then(b.cmp(&a))
        })
        .unwrap_or(0);
    let mut q = sents[best].clone();
    // PDF text breaks lines inside sentences: continue to the sentence's end, and
    // add the next sentence when this one is very short.
    let ends = |t: &str| t.ends_with(['。', '.', '！', '？', '!', '?']);
    let mut next = best + 1;
    let mut appended_short = false;
    loop {
        let open = !ends(&q);
        let short = q.chars().count() < 30 && !appended_short;
        if !(open || short) || q.chars().count() >= 200 {
            break;
        }
        if !open {
            appended_short = true;
        }
        let Some(more) = sents.get(next) else { break };
        let joiner = match (q.chars().last(), more.chars().next()) {
            (Some(a), Some(b))
                if super::lang::is_japanese_letter(a) || super::lang::is_japanese_letter(b) =>
            {
                ""
            }
            _ => " ",
        };
        q.push_str(joiner);
        q.push_str(more);
        next += 1;
    }
    if q.chars().count() > 200 {
        q = q.chars().take(199).collect::<String>() + "…";
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(n: usize, page: i64, text: &str) -> Source {
        Source {
            n,
            chunk_id: 100 + n as i64,
            doc: format!("/m/doc{n}.pdf"),
            title: format!("doc{n}.pdf"),
            page,
            heading: None,
            text: text.into(),
            score: 0.0,
            cosine: 0.0,
            coverage: 0.0,
        }
    }

    fn four() -> Vec<Source> {
        vec![
            src(1, 6, "第20条 年次有給休暇を取得しようとする者は、3営業日前までにKintaiNaviで申請しなければならない。"),
            src(2, 5, "時間外労働は当日の16時までに申請し、所属長の承認を得る。"),
            src(3, 8, "賃金は毎月末日に締め切り、翌月25日に支払う。"),
            src(4, 9, "通勤手当は月額50,000円を上限とする。"),
        ]
    }

    #[test]
    fn markers_in_many_spellings() {
        let m = parse_markers(
            "a[1] b[2, 3] c【4】 d［５］ e[資料2] f[Source 1] g[1-2] h[x] i[12345678]",
        );
        let nums: Vec<Vec<usize>> = m.iter().map(|m| m.numbers.clone()).collect();
        assert_eq!(
            nums,
            vec![
                vec![1],
                vec![2, 3],
                vec![4],
                vec![5],
                vec![2],
                vec![1],
                vec![1, 2],
                vec![12345678]
            ]
        );
    }

    #[test]
    fn out_of_range_numbers_are_removed_and_reported() {
        let answer = "有給休暇は3営業日前までにKintaiNaviで申請します[5]。賃金は翌月25日に支払われます[3][0]。";
        let c = check(answer, "有給休暇はいつ申請?", &four(), 0.5);
        assert_eq!(c.removed, vec![0, 5]);
        assert!(
            !c.text.contains("[5]") && !c.text.contains("[0]"),
            "{}",
            c.text
        );
        assert!(c.text.contains("[3]"), "{}", c.text);
        // The first claim lost its only marker but source 1 backs it: inferred.
        assert!(c.text.contains("申請します[1]。"), "{}", c.text);
        let ns: Vec<usize> = c.citations.iter().map(|c| c.n).collect();
        assert_eq!(ns, vec![1, 3]);
        assert!(c.citations[0].inferred && !c.citations[1].inferred);
        assert!(c.citations.iter().all(|c| c.n <= 4));
        assert!(c.grounded, "{c:?}");
    }

    #[test]
    fn unsupported_sentence_is_flagged() {
        let answer = "有給休暇は3営業日前までに申請します[1]。なお、申請が遅れた場合は社長の許可で取得できます[1]。";
        let c = check(answer, "有給休暇はいつ申請?", &four(), 0.5);
        assert_eq!(c.unsupported.len(), 1, "{c:?}");
        assert!(c.unsupported[0].contains("社長の許可"));
        assert!(!c.grounded);
        assert!(c.any_supported());
        assert!(c.citations[0].supported, "one claim citing [1] is backed");
    }

    #[test]
    fn a_changed_number_is_not_supported() {
        let c = check(
            "有給休暇は5営業日前までにKintaiNaviで申請します[1]。",
            "有給休暇は何日前?",
            &four(),
            0.5,
        );
        assert!(!c.sentences[0].supported, "{c:?}");
        assert!(!c.grounded);
    }

    #[test]
    fn article_numbers_do_not_count_as_figures() {
        let c = check(
            "第21条の第1項により、有給休暇は3営業日前までにKintaiNaviで申請します。",
            "有給休暇は?",
            &four(),
            0.5,
        );
        assert!(c.sentences[0].supported, "{c:?}");
        assert_eq!(c.sentences[0].cited, vec![1]);
    }

    #[test]
    fn marker_after_the_full_stop_belongs_to_the_sentence_before() {
        let c = check(
            "通勤手当の上限は月額50,000円です。[4] 以上です。",
            "通勤手当の上限は?",
            &four(),
            0.5,
        );
        assert_eq!(c.sentences[0].cited, vec![4]);
        assert!(c.sentences[0].supported);
        assert!(!c.sentences[1].is_claim);
        assert!(c.grounded);
        assert!(
            c.citations[0].quote.contains("50,000円"),
            "{:?}",
            c.citations
        );
    }

    #[test]
    fn english_answer_with_wrong_citation_is_repaired() {
        let s = vec![
            src(
                1,
                2,
                "Hotel caps per night: Tokyo JPY 14,000; Osaka JPY 12,000.",
            ),
            src(
                2,
                4,
                "Claims must be submitted within 30 days of returning.",
            ),
        ];
        let c = check(
            "The nightly hotel cap in Tokyo is JPY 14,000 [2].",
            "What is the hotel cap for Tokyo?",
            &s,
            0.5,
        );
        assert_eq!(c.sentences[0].cited, vec![1], "{c:?}");
        assert!(c.citations[0].inferred);
        assert!(
            c.text.contains("[1]") && !c.text.contains("[2]"),
            "{}",
            c.text
        );
    }

    #[test]
    fn quotes_run_across_pdf_line_breaks_to_the_full_stop() {
        let text = "第21条\n年次有給休暇を取得しようとする従業員は、3営業日前までに所属\n長に申請しなければならない。ただし書き。";
        let q = quote(text, &content_units("3営業日前までに申請"));
        assert_eq!(q, "年次有給休暇を取得しようとする従業員は、3営業日前までに所属長に申請しなければならない。");
    }

    #[test]
    fn refusal_is_not_grounded() {
        let c = check(
            "資料に記載が見つかりませんでした。",
            "株価は?",
            &four(),
            0.5,
        );
        assert!(c.refused && !c.grounded);
        assert!(c.citations.is_empty());
    }
}
