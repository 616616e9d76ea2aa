//! Ingestion: extraction, normalisation, chunking.

pub mod chunk;

use unicode_normalization::UnicodeNormalization;

/// Normalises text the way every document and query is normalised: NFKC
/// (full-width Latin and digits become ASCII, half-width katakana become
/// full-width), so that `ＫＲ－２００` and `KR-200` are the same word.
pub fn normalize(text: &str) -> String {
    text.nfkc().collect()
}
