//! Text normalization applied to every extracted page.
//!
//! Japanese documents mix full-width and half-width forms of the same characters
//! (`ＡＢＣ１２３`, `ｶﾀｶﾅ`, `㈱`); search and embeddings must see one form, so all text is
//! NFKC-normalized. Line structure matters downstream (headings, list items, table rows
//! and sentence splitting are line-based), so lines are kept: only line endings, control
//! characters, trailing blanks and runs of blank lines are tidied.
//!
//! PDF text extraction also inserts spaces into Japanese where the layout wrapped a
//! line or changed font (`次の表の とおり`, `3 営業日前`); [`normalize_pdf_text`]
//! removes those. Authored text (DOCX, HTML, Markdown, plain text) keeps its spaces:
//! there `kura-client を起動する` or `人事部 内線1234` is what the author wrote.
//!
//! ```
//! use kura::ingest::normalize::{normalize_pdf_text, normalize_text};
//! assert_eq!(normalize_text("ｶﾀｶﾅ　１２３\r\n\r\n\r\n㈱蔵  \n"), "カタカナ 123\n\n(株)蔵");
//! assert_eq!(normalize_pdf_text("次の表の とおり 3 営業日前"), "次の表のとおり3営業日前");
//! ```

use unicode_normalization::UnicodeNormalization;

/// NFKC-normalizes `text`, unifies line endings to `\n`, drops control and zero-width
/// characters (keeping tabs, which separate table cells), trims trailing whitespace on each
/// line, collapses three or more consecutive line breaks into one blank line and trims
/// blank lines at both ends.
pub fn normalize_text(text: &str) -> String {
    normalize(text, false)
}

/// [`normalize_text`], then drops the spaces PDF extraction puts into Japanese text
/// (between two CJK characters, and between CJK and a digit or Latin letter).
pub fn normalize_pdf_text(text: &str) -> String {
    normalize(text, true)
}

fn normalize(text: &str, join_cjk: bool) -> String {
    let unified = text.replace("\r\n", "\n").replace(['\r', '\u{c}'], "\n");
    let nfkc: String = unified.nfkc().collect();
    let mut out = String::with_capacity(nfkc.len());
    let mut blank_run = 0usize;
    for line in nfkc.split('\n') {
        let cleaned: String = line
            .chars()
            .filter(|&c| c == '\t' || !(c.is_control() || is_invisible(c)))
            .collect();
        let cleaned = cleaned.trim_end();
        if cleaned.trim().is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
            if blank_run > 0 {
                out.push('\n');
            }
        }
        blank_run = 0;
        if join_cjk {
            out.push_str(&join_cjk_spaces(cleaned));
        } else {
            out.push_str(cleaned);
        }
    }
    out
}

/// Whether `c` is written without spaces around it in Japanese (kana, kanji,
/// CJK punctuation).
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3000..=0x303f | 0x3040..=0x309f | 0x30a0..=0x30ff | 0x3400..=0x4dbf
        | 0x4e00..=0x9fff | 0xf900..=0xfaff | 0xff00..=0xffef)
}

/// Drops spaces that PDF text extraction inserts around Japanese: between two
/// CJK characters (a wrapped line: `次の表の とおり`) and between CJK and a
/// digit or Latin letter (`3 営業日前`, `KintaiNavi で`). Japanese is written
/// without them, and keyword search and answer matching depend on that.
/// Spaces between two Latin words are kept.
fn join_cjk_spaces(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == ' ' && !out.is_empty() {
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let prev = out.chars().next_back().expect("not empty");
            if let Some(&next) = chars.get(j) {
                let joinable =
                    |a: char, b: char| is_cjk(a) && (is_cjk(b) || b.is_ascii_alphanumeric());
                if joinable(prev, next) || joinable(next, prev) {
                    i = j;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Zero-width and byte-order-mark characters that carry no text.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{ad}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfkc_folds_width_variants_and_keeps_lines() {
        assert_eq!(
            normalize_text("第１章　総則\nｺﾝﾋﾟｭｰﾀ①\n"),
            "第1章 総則\nコンピュータ1"
        );
    }

    #[test]
    fn spaces_pdf_extraction_puts_into_japanese_are_removed() {
        assert_eq!(
            normalize_pdf_text(
                "原則として 3 営業日前までに KintaiNavi で申請する。次の表の とおり"
            ),
            "原則として3営業日前までにKintaiNaviで申請する。次の表のとおり"
        );
        assert_eq!(
            normalize_pdf_text("Use oil ISO VG 32 every 1.5 months"),
            "Use oil ISO VG 32 every 1.5 months"
        );
    }

    #[test]
    fn authored_spaces_in_japanese_are_kept() {
        assert_eq!(
            normalize_text("2. kura-client を起動する\n人事部 内線1234"),
            "2. kura-client を起動する\n人事部 内線1234"
        );
    }

    #[test]
    fn blank_lines_collapse_and_controls_vanish() {
        assert_eq!(
            normalize_text("\n\na\u{0}b\u{feff}\n\n\n\nc\t d \n\n"),
            "ab\n\nc\t d"
        );
    }

    #[test]
    fn tabs_between_cells_survive() {
        assert_eq!(
            normalize_text("部署\t内線\n人事部\t1234"),
            "部署\t内線\n人事部\t1234"
        );
    }
}
