//! Plain text in an unknown encoding.
//!
//! Japanese company files arrive as UTF-8 (with or without BOM), UTF-16 (Windows "Unicode"
//! text, with or without BOM), Shift_JIS/CP932 or EUC-JP, and nothing in the file says which.
//! Guessing wrong produces mojibake that looks like text to a search index, so the encoding
//! is never assumed: a BOM decides if present; otherwise every candidate decoder is run
//! *strictly* (any malformed sequence disqualifies it) and the survivors are scored by how
//! plausible the decoded text is as Japanese/English prose (kana, kanji, ASCII, punctuation
//! versus control characters, half-width katakana salad, unexpected scripts). Western
//! files in Latin-1/Windows-1252 (English or European pages from overseas offices) are the
//! last candidate, slightly handicapped, since every byte decodes in it: it wins only when
//! no Japanese or Unicode decoding survives. Bytes that no decoder turns into plausible
//! text are refused as binary.

use encoding_rs::{Encoding, EUC_JP, SHIFT_JIS, UTF_16BE, UTF_16LE, UTF_8, WINDOWS_1252};

use super::{Ctx, Fail, RawDocument};

/// Extracts a plain-text file (the whole file is page 1).
pub(crate) fn extract(bytes: &[u8], _ctx: &Ctx) -> Result<RawDocument, Fail> {
    let (text, encoding) = decode(bytes)?;
    Ok(RawDocument::single(text, extractor_name(encoding)))
}

fn extractor_name(encoding: &'static Encoding) -> &'static str {
    if encoding == UTF_8 {
        "text/utf-8"
    } else if encoding == SHIFT_JIS {
        "text/shift_jis"
    } else if encoding == EUC_JP {
        "text/euc-jp"
    } else if encoding == UTF_16LE {
        "text/utf-16le"
    } else if encoding == UTF_16BE {
        "text/utf-16be"
    } else if encoding == WINDOWS_1252 {
        "text/windows-1252"
    } else {
        "text"
    }
}

/// Decodes `bytes` as text, detecting the encoding; refuses binary data.
pub(crate) fn decode(bytes: &[u8]) -> Result<(String, &'static Encoding), Fail> {
    if let Some((encoding, bom_len)) = Encoding::for_bom(bytes) {
        let (text, had_errors) = encoding.decode_without_bom_handling(&bytes[bom_len..]);
        if had_errors && plausibility(&text) < 0.8 {
            return Err(Fail::Binary("bytes after a text BOM do not decode".into()));
        }
        return Ok((text.into_owned(), encoding));
    }
    guess(bytes)
}

/// Decodes with an explicitly declared encoding (HTML meta charset), falling back to
/// detection when the declaration is clearly wrong.
pub(crate) fn decode_declared(
    bytes: &[u8],
    declared: &'static Encoding,
) -> Result<(String, &'static Encoding), Fail> {
    if let Some(text) = declared.decode_without_bom_handling_and_without_replacement(bytes) {
        return Ok((text.into_owned(), declared));
    }
    match guess(bytes) {
        Ok(found) => Ok(found),
        Err(_) => Ok((
            declared.decode_without_bom_handling(bytes).0.into_owned(),
            declared,
        )),
    }
}

fn guess(bytes: &[u8]) -> Result<(String, &'static Encoding), Fail> {
    let zeros = bytes.iter().filter(|&&b| b == 0).count();
    let mut best: Option<(f64, String, &'static Encoding)> = None;
    for encoding in [UTF_8, SHIFT_JIS, EUC_JP, UTF_16LE, UTF_16BE, WINDOWS_1252] {
        let is_utf16 = encoding == UTF_16LE || encoding == UTF_16BE;
        if is_utf16 && !bytes.len().is_multiple_of(2) {
            continue;
        }
        let Some(text) = encoding.decode_without_bom_handling_and_without_replacement(bytes) else {
            continue;
        };
        let mut score = plausibility(&text);
        if encoding == UTF_8 && zeros == 0 {
            // Strictly valid UTF-8 with non-ASCII content is very unlikely by accident.
            score += 0.05;
        }
        if encoding == WINDOWS_1252 {
            // Any byte decodes in it: only a fallback when nothing stricter fits.
            score -= 0.05;
        }
        if is_utf16 && zeros == 0 && !text.chars().any(|c| c == '\n') {
            // UTF-16 text without a single newline or ASCII char is suspicious.
            score -= 0.05;
        }
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, text.into_owned(), encoding));
        }
    }
    match best {
        Some((score, text, encoding)) if score >= 0.85 => Ok((text, encoding)),
        _ => Err(Fail::Binary(
            "no text encoding (UTF-8, UTF-16, Shift_JIS, EUC-JP, Windows-1252) decodes it as text"
                .into(),
        )),
    }
}

/// Fraction of characters that are plausible in Japanese/English documents, with
/// penalties for control characters and isolated half-width katakana.
fn plausibility(text: &str) -> f64 {
    let mut total = 0usize;
    let mut good = 0f64;
    let mut prev_halfwidth = false;
    let chars: Vec<char> = text.chars().take(200_000).collect();
    for (i, &c) in chars.iter().enumerate() {
        total += 1;
        let u = c as u32;
        let halfwidth = (0xFF61..=0xFF9F).contains(&u);
        let next_halfwidth = chars
            .get(i + 1)
            .is_some_and(|&n| (0xFF61..=0xFF9F).contains(&(n as u32)));
        good += match u {
            0x09 | 0x0A | 0x0D | 0x0C => 1.0,
            0x20..=0x7E => 1.0,
            0x3000..=0x30FF | 0x4E00..=0x9FFF | 0xFF01..=0xFF60 => 1.0,
            _ if halfwidth => {
                if prev_halfwidth || next_halfwidth {
                    0.9
                } else {
                    -1.0
                }
            }
            _ if c.is_control() => -4.0,
            0xA0..=0x17F | 0x370..=0x4FF | 0x2000..=0x2BFF | 0x3400..=0x4DBF => 0.8,
            0xE000..=0xFAFF => -1.0, // private use, CJK compatibility ideographs
            0x1F300..=0x1FAFF | 0x20000..=0x2FFFF => 0.5,
            _ => 0.0,
        };
        prev_halfwidth = halfwidth;
    }
    if total == 0 {
        return 0.0;
    }
    good / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str =
        "お知らせ：年末年始の休業について\n12月29日から1月3日まで休業いたします。\n";

    fn roundtrip(encoding: &'static Encoding) -> &'static Encoding {
        let (bytes, _, _) = encoding.encode(SAMPLE);
        let (text, found) = decode(&bytes).unwrap();
        assert_eq!(text, SAMPLE);
        found
    }

    #[test]
    fn detects_legacy_japanese_encodings() {
        assert_eq!(roundtrip(UTF_8), UTF_8);
        assert_eq!(roundtrip(SHIFT_JIS), SHIFT_JIS);
        assert_eq!(roundtrip(EUC_JP), EUC_JP);
    }

    #[test]
    fn detects_utf16_without_bom() {
        for (encoding, bytes) in [
            (
                UTF_16LE,
                SAMPLE
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect::<Vec<_>>(),
            ),
            (
                UTF_16BE,
                SAMPLE.encode_utf16().flat_map(u16::to_be_bytes).collect(),
            ),
        ] {
            let (text, found) = decode(&bytes).unwrap();
            assert_eq!(found, encoding);
            assert_eq!(text, SAMPLE);
        }
    }

    #[test]
    fn bom_decides() {
        let mut bytes = vec![0xEF, 0xBB, 0xBF];
        bytes.extend_from_slice(SAMPLE.as_bytes());
        assert_eq!(decode(&bytes).unwrap(), (SAMPLE.to_string(), UTF_8));
    }

    #[test]
    fn short_shift_jis_is_not_mistaken_for_utf8() {
        let (bytes, _, _) = SHIFT_JIS.encode("規程");
        assert_eq!(decode(&bytes).unwrap().0, "規程");
    }

    #[test]
    fn latin1_is_read_as_western_text_and_japanese_still_wins_where_it_decodes() {
        let (latin1, _, _) = WINDOWS_1252.encode("Café crème, résumé — naïve façade. Größe: 5 €\n");
        let (text, enc) = decode(&latin1).unwrap();
        assert_eq!(enc, WINDOWS_1252);
        assert_eq!(text, "Café crème, résumé — naïve façade. Größe: 5 €\n");
        let (sjis, _, _) = SHIFT_JIS.encode("年次有給休暇は3営業日前までに申請する。\n");
        assert_eq!(decode(&sjis).unwrap().1, SHIFT_JIS);
        let (euc, _, _) = EUC_JP.encode("就業規則 第21条(年次有給休暇)\n");
        assert_eq!(decode(&euc).unwrap().1, EUC_JP);
    }

    #[test]
    fn binary_is_refused() {
        let bytes: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert!(matches!(decode(&bytes), Err(Fail::Binary(_))));
    }
}
