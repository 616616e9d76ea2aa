//! Chunking: cutting page text into passages that follow the document's structure.
//!
//! A passage is what retrieval returns and what an answer cites, so it must be a
//! meaningful unit (an article of the work rules, a table row, a paragraph), small
//! enough for the embedding model (sized in *its* tokens), and traceable to the
//! exact characters of one page so the UI can highlight it.
//!
//! The page is read as blocks — headings (`第3条`, `1.2`, `#`), list items, table
//! rows (tab-separated), paragraphs — and blocks are split into sentences
//! (`。！？` and `.!?`) only when a block alone is too long. Blocks are packed
//! greedily up to `max_tokens`; a heading always starts a new chunk, and each new
//! chunk repeats the last `overlap_tokens` of the previous one. Chunks never cross
//! pages, and every chunk's text is exactly `page[char_start..char_end]`.
//!
//! ```
//! use kura::ingest::chunk::{chunk_page, ChunkParams};
//! let page = "第1条(目的)\nこの規則は従業員の就業に関する事項を定める。\n第2条(適用)\nこの規則は全従業員に適用する。";
//! let count = |s: &str| s.chars().count(); // a stand-in for the model's tokenizer
//! let chunks = chunk_page(page, &ChunkParams { max_tokens: 40, overlap_tokens: 0 }, &count);
//! assert_eq!(chunks.len(), 2);
//! assert!(chunks[1].text.starts_with("第2条"));
//! ```

/// Chunk sizes, in tokens of the embedding model.
#[derive(Debug, Clone, Copy)]
pub struct ChunkParams {
    /// Upper bound of a chunk.
    pub max_tokens: usize,
    /// Tokens repeated from the end of the previous chunk.
    pub overlap_tokens: usize,
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams {
            max_tokens: 256,
            overlap_tokens: 32,
        }
    }
}

/// A passage of one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageChunk {
    /// First character (index in the page's chars).
    pub char_start: usize,
    /// One past the last character.
    pub char_end: usize,
    /// The nearest heading at or above the chunk's start.
    pub heading: Option<String>,
    /// `page[char_start..char_end]`.
    pub text: String,
    /// Its size in tokens.
    pub tokens: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Heading,
    Item,
    Row,
    Paragraph,
}

/// A span of characters of the page.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    kind: Kind,
    /// First unit of its block.
    block_start: bool,
}

fn is_heading(line: &str) -> bool {
    let t = line.trim();
    if t.is_empty() || t.chars().count() > 40 {
        return false;
    }
    if t.starts_with('#') {
        return true;
    }
    let ends_sentence = t.ends_with(['。', '.', '、', ',', ':', '：']);
    // 第1章 / 第12条 / 第3節
    if let Some(rest) = t.strip_prefix('第') {
        let digits: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || "一二三四五六七八九十百".contains(*c))
            .collect();
        if !digits.is_empty() {
            let after = rest[digits.len()..].chars().next();
            if matches!(after, Some('章' | '条' | '節' | '部')) {
                return true;
            }
        }
    }
    // 1. / 1.2 / 2.3.1 followed by a short title
    let numbered: String = t
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    if !numbered.is_empty()
        && numbered.chars().next().is_some_and(|c| c.is_ascii_digit())
        && numbered.contains('.')
    {
        return !ends_sentence && t.chars().count() <= 30;
    }
    false
}

fn is_item(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with([
        '・', '-', '*', '•', '●', '○', '■', '□', '◆', '①', '②', '③', '④', '⑤', '⑥', '⑦', '⑧', '⑨',
        '⑩',
    ]) || t.starts_with('(') && t.chars().nth(2).is_some_and(|c| c == ')')
        || t.starts_with('(') && t.chars().nth(1).is_some_and(|c| c.is_ascii_digit())
}

fn sentence_end(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '!' | '?' | '.')
}

/// Splits `chars[start..end]` into sentences (keeping the terminator).
fn sentences(chars: &[char], start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut s = start;
    let mut i = start;
    while i < end {
        let c = chars[i];
        // An ASCII '.' ends a sentence only before whitespace (not in 1.5 or e.g).
        let ends =
            sentence_end(c) && (c != '.' || chars.get(i + 1).is_none_or(|n| n.is_whitespace()));
        if ends || c == '\n' {
            // include closing brackets / quotes that follow
            let mut j = i + 1;
            while j < end && matches!(chars[j], '」' | '』' | ')' | '"' | '\'') {
                j += 1;
            }
            if j > s {
                out.push((s, j));
            }
            s = j;
            i = j;
            continue;
        }
        i += 1;
    }
    if s < end {
        out.push((s, end));
    }
    out
}

fn text_of(chars: &[char], start: usize, end: usize) -> String {
    chars[start..end].iter().collect()
}

/// Cuts one page into chunks.
pub fn chunk_page(
    page: &str,
    params: &ChunkParams,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Vec<PageChunk> {
    let chars: Vec<char> = page.chars().collect();
    let max = params.max_tokens.max(8);

    // 1. Lines → blocks (a paragraph is consecutive plain lines).
    let mut blocks: Vec<(usize, usize, Kind)> = Vec::new();
    let mut line_start = 0;
    let mut para: Option<(usize, usize)> = None;
    let flush = |para: &mut Option<(usize, usize)>, blocks: &mut Vec<(usize, usize, Kind)>| {
        if let Some((s, e)) = para.take() {
            blocks.push((s, e, Kind::Paragraph));
        }
    };
    for i in 0..=chars.len() {
        if i < chars.len() && chars[i] != '\n' {
            continue;
        }
        let (s, e) = (line_start, i);
        line_start = i + 1;
        let line = text_of(&chars, s, e);
        if line.trim().is_empty() {
            flush(&mut para, &mut blocks);
            continue;
        }
        let kind = if is_heading(&line) {
            Kind::Heading
        } else if line.contains('\t') {
            Kind::Row
        } else if is_item(&line) {
            Kind::Item
        } else {
            Kind::Paragraph
        };
        if kind == Kind::Paragraph {
            para = Some(match para {
                Some((ps, _)) => (ps, e),
                None => (s, e),
            });
        } else {
            flush(&mut para, &mut blocks);
            blocks.push((s, e, kind));
        }
    }
    flush(&mut para, &mut blocks);

    // 2. Blocks → units (sentences, or hard splits, when a block is too long).
    let mut units: Vec<Unit> = Vec::new();
    for (s, e, kind) in blocks {
        if count_tokens(&text_of(&chars, s, e)) <= max {
            units.push(Unit {
                start: s,
                end: e,
                kind,
                block_start: true,
            });
            continue;
        }
        let mut first = true;
        for (ss, se) in sentences(&chars, s, e) {
            if text_of(&chars, ss, se).trim().is_empty() {
                continue;
            }
            // A single over-long sentence is cut into pieces that fit.
            let mut a = ss;
            while a < se {
                let mut b = se;
                while b > a + 1 && count_tokens(&text_of(&chars, a, b)) > max {
                    b = a + (b - a) * 3 / 4;
                }
                units.push(Unit {
                    start: a,
                    end: b,
                    kind,
                    block_start: first,
                });
                first = false;
                a = b;
            }
        }
    }

    // 3. Pack units into chunks.
    let mut chunks = Vec::new();
    let mut heading: Option<String> = None;
    let mut i = 0;
    while i < units.len() {
        let start_unit = i;
        if units[i].kind == Kind::Heading {
            heading = Some(
                text_of(&chars, units[i].start, units[i].end)
                    .trim()
                    .to_owned(),
            );
        }
        let chunk_heading = heading.clone();
        let mut end_unit = i;
        let mut tokens = count_tokens(&text_of(&chars, units[i].start, units[i].end));
        while end_unit + 1 < units.len() {
            let next = units[end_unit + 1];
            if next.kind == Kind::Heading && next.block_start {
                break;
            }
            let t = count_tokens(&text_of(&chars, units[start_unit].start, next.end));
            if t > max {
                break;
            }
            tokens = t;
            end_unit += 1;
        }
        let (cs, ce) = (units[start_unit].start, units[end_unit].end);
        chunks.push(PageChunk {
            char_start: cs,
            char_end: ce,
            heading: chunk_heading,
            text: text_of(&chars, cs, ce),
            tokens,
        });
        // Next chunk: step back over trailing units worth `overlap_tokens`, unless
        // the next unit starts a new section.
        let mut next = end_unit + 1;
        if params.overlap_tokens > 0 && next < units.len() && units[next].kind != Kind::Heading {
            let mut back = end_unit;
            while back > start_unit
                && count_tokens(&text_of(&chars, units[back].start, units[end_unit].end))
                    <= params.overlap_tokens
            {
                back -= 1;
            }
            if back < end_unit && back + 1 > start_unit {
                next = back + 1;
            }
        }
        i = next.max(start_unit + 1);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> usize {
        s.chars().count()
    }

    #[test]
    fn every_chunk_is_an_exact_span_of_the_page() {
        let page = "# 就業規則\n第1条(目的)\nこの規則は、株式会社くら精機の従業員の労働条件を定める。従業員はこの規則を守る。\n\
                    ・年次有給休暇は5営業日前までに申請する。\n・慶弔休暇は別に定める。\n休暇\t日数\n年次有給休暇\t10日\n";
        for max in [12, 30, 80, 500] {
            let chunks = chunk_page(
                page,
                &ChunkParams {
                    max_tokens: max,
                    overlap_tokens: 5,
                },
                &chars,
            );
            let all: Vec<char> = page.chars().collect();
            for c in &chunks {
                assert_eq!(
                    c.text,
                    all[c.char_start..c.char_end].iter().collect::<String>()
                );
                assert!(c.tokens <= max.max(8), "{} > {max}: {:?}", c.tokens, c.text);
            }
            let covered: String = chunks.iter().map(|c| c.text.as_str()).collect();
            assert!(covered.contains("5営業日前"), "max {max}: text lost");
        }
    }

    #[test]
    fn headings_start_chunks_and_are_remembered() {
        let page = "第1条(目的)\nこの規則は就業に関する事項を定める。\n第2条(適用)\nこの規則は全従業員に適用する。\n";
        let chunks = chunk_page(
            page,
            &ChunkParams {
                max_tokens: 200,
                overlap_tokens: 0,
            },
            &chars,
        );
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].heading.as_deref(), Some("第1条(目的)"));
        assert_eq!(chunks[1].heading.as_deref(), Some("第2条(適用)"));
    }

    #[test]
    fn long_paragraphs_split_at_sentence_ends() {
        let sentence = "従業員は業務上の秘密を保持しなければならない。";
        let page = sentence.repeat(10);
        let chunks = chunk_page(
            &page,
            &ChunkParams {
                max_tokens: 60,
                overlap_tokens: 0,
            },
            &chars,
        );
        assert!(chunks.len() >= 4);
        for c in &chunks {
            assert!(c.text.ends_with('。'), "cut mid-sentence: {:?}", c.text);
        }
    }

    #[test]
    fn english_sentences_split_on_periods_not_decimals() {
        let text: Vec<char> =
            "Spindle speed is 4,000 rpm. Use oil ISO VG 32 every 1.5 months. Done"
                .chars()
                .collect();
        let s = sentences(&text, 0, text.len());
        assert_eq!(s.len(), 3, "{s:?}");
    }

    #[test]
    fn overlap_repeats_the_previous_tail() {
        let page = "一文目です。二文目です。三文目です。四文目です。五文目です。六文目です。";
        let chunks = chunk_page(
            page,
            &ChunkParams {
                max_tokens: 20,
                overlap_tokens: 8,
            },
            &chars,
        );
        assert!(chunks.len() >= 2);
        assert!(
            chunks[1].char_start < chunks[0].char_end,
            "no overlap: {chunks:?}"
        );
    }
}
