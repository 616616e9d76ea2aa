//! Per-page quality gate: is this page's text usable, missing, or mojibake?
//!
//! Extraction can "succeed" and still return garbage: a PDF font without a usable Unicode
//! map yields private-use code points, CJK compatibility ideographs or raw glyph ids; a
//! text file decoded with the wrong legacy encoding yields U+FFFD, isolated half-width
//! katakana (EUC-JP read as Shift_JIS), `縺ゅ≠` (UTF-8 read as Shift_JIS) or `ã\u{81}\u{82}`
//! (UTF-8 read as Latin-1). Indexing such text poisons search and answers, so every page is
//! assessed **on the raw extracted text, before NFKC** (NFKC would fold half-width kana and
//! compatibility ideographs and hide the evidence), and the result travels with the page.
//!
//! The thresholds are ratios over the page's non-whitespace characters with a small minimum
//! count, so one odd symbol on a long page passes while a page that is mostly noise fails.
//!
//! ```
//! use kura::ingest::{assess, PageQuality};
//! assert_eq!(assess("年次有給休暇は、入社6か月後に10日を付与する。"), PageQuality::Ok);
//! assert_eq!(assess("  \n "), PageQuality::Empty);
//! assert!(matches!(assess("\u{e001}\u{e002}\u{e003}\u{e004}"), PageQuality::Garbled { .. }));
//! ```

/// How usable a page's extracted text is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageQuality {
    /// Plausible text.
    Ok,
    /// No text at all: an image-only (scanned) page, or a blank one. OCR is not done here.
    Empty,
    /// The text is present but looks like mojibake; `reason` says which signal fired.
    Garbled {
        /// Human-readable reason, e.g. "42% private-use code points (broken font map)".
        reason: String,
    },
}

/// Counts of suspicious characters on one page.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Non-whitespace characters.
    total: usize,
    replacement: usize,
    private_use: usize,
    compat_ideographs: usize,
    controls: usize,
    /// Half-width katakana whose neighbours are not half-width katakana.
    isolated_halfwidth_kana: usize,
    /// `縺`, `繧`, `繝`: Shift_JIS readings of the UTF-8 lead bytes of kana.
    utf8_as_sjis: usize,
    /// Latin-1/CP1252 readings of UTF-8 multi-byte sequences (`ã\u{81}\u{82}`, `Ã©`).
    latin1_mojibake: usize,
    /// Code points from blocks that do not occur in Japanese/English business documents.
    rare: usize,
}

/// Minimum number of offending characters before a ratio can flag a page.
const MIN_COUNT: usize = 3;

/// Assesses one page of raw extracted text (before normalization).
pub fn assess(text: &str) -> PageQuality {
    let c = count(text);
    if c.total == 0 {
        return PageQuality::Empty;
    }
    let n = c.total as f64;
    let ratio = |k: usize| k as f64 / n;
    let checks: [(usize, f64, &str); 8] = [
        (
            c.replacement,
            0.02,
            "U+FFFD replacement characters (undecodable bytes)",
        ),
        (
            c.private_use,
            0.05,
            "private-use code points (font without a Unicode map)",
        ),
        (
            c.compat_ideographs,
            0.03,
            "CJK compatibility ideographs (broken font map)",
        ),
        (
            c.controls,
            0.02,
            "control characters (raw glyph ids or binary data)",
        ),
        (
            c.isolated_halfwidth_kana,
            0.10,
            "isolated half-width katakana (EUC-JP or UTF-8 read as Shift_JIS)",
        ),
        (
            c.utf8_as_sjis,
            0.05,
            "縺/繧/繝 sequences (UTF-8 read as Shift_JIS)",
        ),
        (
            c.latin1_mojibake,
            0.05,
            "Latin-1 mojibake of UTF-8 (e.g. \"ã\\u{81}\\u{82}\")",
        ),
        (
            c.rare,
            0.20,
            "characters from unexpected scripts or symbol blocks",
        ),
    ];
    for (k, threshold, what) in checks {
        if k >= MIN_COUNT.min(c.total) && ratio(k) > threshold {
            return PageQuality::Garbled {
                reason: format!("{:.0}% {what}", ratio(k) * 100.0),
            };
        }
    }
    let bad = c.replacement
        + c.private_use
        + c.compat_ideographs
        + c.controls
        + c.isolated_halfwidth_kana
        + c.utf8_as_sjis
        + c.latin1_mojibake
        + c.rare;
    if bad >= 5 && ratio(bad) > 0.15 {
        return PageQuality::Garbled {
            reason: format!(
                "{:.0}% suspicious characters of mixed kinds",
                ratio(bad) * 100.0
            ),
        };
    }
    PageQuality::Ok
}

fn count(text: &str) -> Counts {
    let mut c = Counts::default();
    let chars: Vec<char> = text.chars().filter(|ch| !ch.is_whitespace()).collect();
    c.total = chars.len();
    for (i, &ch) in chars.iter().enumerate() {
        let u = ch as u32;
        match u {
            0xFFFD => c.replacement += 1,
            0xE000..=0xF8FF | 0xF0000..=0x10FFFF => c.private_use += 1,
            0xF900..=0xFAFF | 0x2F800..=0x2FA1F => c.compat_ideographs += 1,
            _ if ch.is_control() => c.controls += 1,
            0xFF61..=0xFF9F => {
                let prev = i.checked_sub(1).map(|j| chars[j]);
                let next = chars.get(i + 1).copied();
                if !prev.is_some_and(is_halfwidth_kana) && !next.is_some_and(is_halfwidth_kana) {
                    c.isolated_halfwidth_kana += 1;
                }
            }
            0x7E3A | 0x7E67 | 0x7E5D => c.utf8_as_sjis += 1,
            // UTF-8 lead byte read as Latin-1, followed by a continuation byte read as
            // Latin-1 (U+0080..U+00BF) or as CP1252 punctuation.
            0xC2..=0xC3 | 0xE2..=0xEF
                if chars.get(i + 1).is_some_and(|&n| is_latin1_continuation(n)) =>
            {
                c.latin1_mojibake += 2;
            }
            _ if !is_expected(u) => c.rare += 1,
            _ => {}
        }
    }
    c
}

fn is_halfwidth_kana(ch: char) -> bool {
    ('\u{ff61}'..='\u{ff9f}').contains(&ch)
}

fn is_latin1_continuation(ch: char) -> bool {
    matches!(ch as u32, 0x80..=0xBF) || "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ".contains(ch)
}

/// Blocks that plausibly occur in Japanese and English business documents.
fn is_expected(u: u32) -> bool {
    matches!(u,
        0x20..=0x7E            // ASCII
        | 0xA0..=0x24F         // Latin-1 supplement, Latin Extended-A/B
        | 0x2B0..=0x36F        // spacing modifiers, combining marks
        | 0x370..=0x4FF        // Greek, Cyrillic (both in JIS X 0208)
        | 0x1E00..=0x1EFF      // Latin Extended Additional
        | 0x2000..=0x2BFF      // punctuation, symbols, arrows, math, box drawing, shapes
        | 0x2E80..=0x2FDF      // CJK radicals
        | 0x3000..=0x33FF      // CJK symbols, kana, enclosed CJK, CJK compatibility (㎡)
        | 0x3400..=0x4DBF      // CJK Extension A
        | 0x4E00..=0x9FFF      // CJK Unified Ideographs
        | 0xFE30..=0xFE4F      // CJK compatibility forms (vertical punctuation)
        | 0xFF00..=0xFFEF      // half-width and full-width forms
        | 0x1F000..=0x1FAFF    // emoji and pictographs
        | 0x20000..=0x3134F    // CJK Extensions B–G
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn garbled(text: &str) -> bool {
        matches!(assess(text), PageQuality::Garbled { .. })
    }

    #[test]
    fn real_japanese_and_english_pass() {
        for text in [
            "第1章 総則\nこの規程は、株式会社蔵の従業員の勤務時間および休暇について定める。",
            "半角カナ：ｺﾝﾋﾟｭｰﾀ を含む行、①② ㎡ ＡＢＣ　全角も可。",
            "Security policy: passwords must have 12 characters. Café naïve — “quotes” ±5°C",
            "部署\t内線\n人事部\t1234\n情報システム部\t5678",
            "Скорость ΔT = 3 α β γ ★ → ※",
            "A",
        ] {
            assert_eq!(assess(text), PageQuality::Ok, "{text}");
        }
    }

    #[test]
    fn empty_pages() {
        assert_eq!(assess(""), PageQuality::Empty);
        assert_eq!(assess(" \n\t\u{3000}\n"), PageQuality::Empty);
    }

    #[test]
    fn replacement_characters_are_flagged() {
        assert!(garbled("勤務時間\u{fffd}\u{fffd}\u{fffd}について\u{fffd}"));
        // One stray U+FFFD on a long page is tolerated.
        let long = format!("{}\u{fffd}", "年次有給休暇は入社後に付与する。".repeat(10));
        assert!(!garbled(&long));
    }

    #[test]
    fn private_use_and_compat_ideographs_from_broken_font_maps() {
        assert!(garbled("\u{e0a1}\u{e0b2}\u{e0c3}\u{e0d4}\u{e0e5} 規程"));
        assert!(garbled("\u{f9a8}\u{f9b1}\u{fa12}\u{f91d}の\u{f9ff}"));
    }

    #[test]
    fn raw_cids_as_code_points_are_flagged() {
        // Identity-H codes without a ToUnicode map, misread as code points: controls,
        // Armenian, Hebrew, Devanagari...
        assert!(garbled(
            "\u{3}\u{11}\u{531}\u{5d0}\u{905}\u{e15}\u{10a0}\u{1100}\u{7}\u{1a}"
        ));
    }

    #[test]
    fn eucjp_read_as_shift_jis_is_flagged() {
        let bytes = encoding_rs::EUC_JP
            .encode("年次有給休暇は入社6か月後に付与する")
            .0;
        let (misread, _, _) = encoding_rs::SHIFT_JIS.decode(&bytes);
        assert!(garbled(&misread), "{misread}");
    }

    #[test]
    fn utf8_read_as_shift_jis_is_flagged() {
        let (misread, _, _) =
            encoding_rs::SHIFT_JIS.decode("ありがとうございます。よろしくお願いします".as_bytes());
        assert!(garbled(&misread), "{misread}");
    }

    #[test]
    fn utf8_read_as_latin1_is_flagged() {
        let misread: String = "あいうえおかきくけこ".bytes().map(char::from).collect();
        assert!(misread.starts_with("ã\u{81}\u{82}"));
        assert!(garbled(&misread));
        let (cp1252, _, _) = encoding_rs::WINDOWS_1252.decode("勤務時間について".as_bytes());
        assert!(garbled(&cp1252), "{cp1252}");
    }
}
