//! Text normalization applied to every extracted page.
//!
//! Japanese documents mix full-width and half-width forms of the same characters
//! (`ＡＢＣ１２３`, `ｶﾀｶﾅ`, `㈱`); search and embeddings must see one form, so all text is
//! NFKC-normalized. Line structure matters downstream (headings, list items, table rows
//! and sentence splitting are line-based), so lines are kept: only line endings, control
//! characters, trailing blanks and runs of blank lines are tidied.
//!
//! ```
//! use kura::ingest::normalize::normalize_text;
//! assert_eq!(normalize_text("ｶﾀｶﾅ　１２３\r\n\r\n\r\n㈱蔵  \n"), "カタカナ 123\n\n(株)蔵");
//! ```

use unicode_normalization::UnicodeNormalization;

/// NFKC-normalizes `text`, unifies line endings to `\n`, drops control and zero-width
/// characters (keeping tabs, which separate table cells), trims trailing whitespace on each
/// line, collapses three or more consecutive line breaks into one blank line and trims
/// blank lines at both ends.
pub fn normalize_text(text: &str) -> String {
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
        out.push_str(cleaned);
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
