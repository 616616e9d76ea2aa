//! Tokenizers of the embedding models, with offsets back into the caller's text.
//!
//! The e5 container carries its own SentencePiece Unigram vocabulary and normalization
//! map rather than a `tokenizer.json`. An embedding is only comparable with those in an
//! index if the text was cut into *exactly* the same pieces, so [`UnigramTokenizer`]
//! reproduces the reference engine's pipeline step by step — per-code-point mapping,
//! collapsing runs of spaces, the `▁` metaspace, and a Viterbi search with the same
//! unknown-character fallback and the same tie-breaking — and is checked id for id
//! against it (`tests/embed_reference.rs`). MiniLM uses the `tokenizers` crate with its
//! own `tokenizer.json` (WordPiece).
//!
//! Every token carries the byte span of the original text it came from, so the chunker
//! can cut documents at token boundaries in this model's tokens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::e5s1::{NormalizationMap, Vocabulary};
use super::error::{EmbedError, Result};

/// One token of a text: its vocabulary id and the part of the input it stands for.
///
/// `start..end` are **byte** offsets into the text that was tokenized, always on `char`
/// boundaries, so `&text[token.start..token.end]` is valid. A token that stands for no
/// input (the metaspace the tokenizer prepends to a text) has `start == end`. Tokens come
/// in text order and their spans never go backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Vocabulary id.
    pub id: u32,
    /// First byte of the input covered by this token.
    pub start: usize,
    /// One past the last byte of the input covered by this token.
    pub end: usize,
}

/// SentencePiece's whitespace marker U+2581 ("▁").
const METASPACE: u32 = 0x2581;
const SPACE: u32 = 0x20;

/// SentencePiece Unigram tokenizer built from an E5S1 container's vocabulary and
/// normalization map.
pub(crate) struct UnigramTokenizer {
    piece_ids: HashMap<Vec<u8>, u32>,
    scores: Vec<f32>,
    unk: u32,
    /// Score of an unknown single character: 10 below the least likely piece.
    unk_score: f32,
    max_piece_bytes: usize,
    normalization: NormalizationMap,
}

/// A normalized character: its code point and the input bytes it came from.
struct NormChar {
    cp: u32,
    start: usize,
    end: usize,
}

impl UnigramTokenizer {
    pub fn new(vocab: &Vocabulary, normalization: NormalizationMap) -> Self {
        let mut piece_ids = HashMap::with_capacity(vocab.pieces.len());
        let mut max_piece_bytes = 1;
        for (id, piece) in vocab.pieces.iter().enumerate() {
            max_piece_bytes = max_piece_bytes.max(piece.len());
            if !piece.is_empty() {
                // On duplicates the lowest id wins, as in the reference.
                piece_ids.entry(piece.clone()).or_insert(id as u32);
            }
        }
        let min_score = vocab.scores.iter().copied().fold(1e30f32, f32::min);
        Self {
            piece_ids,
            scores: vocab.scores.clone(),
            unk: vocab.unk,
            unk_score: min_score - 10.0,
            max_piece_bytes,
            normalization,
        }
    }

    fn normalized(&self, cp: u32) -> Option<&[u32]> {
        let entries = &self.normalization.entries;
        entries
            .binary_search_by_key(&cp, |(c, _)| *c)
            .ok()
            .map(|i| entries[i].1.as_slice())
    }

    /// Tokenizes `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Vec<Token> {
        // 1. Per-code-point normalization, then collapse runs of spaces.
        let mut chars: Vec<NormChar> = Vec::with_capacity(text.len() + 1);
        for (start, ch) in text.char_indices() {
            let end = start + ch.len_utf8();
            let mut push = |cp: u32| {
                if cp == SPACE && chars.last().is_some_and(|c| c.cp == SPACE) {
                    return;
                }
                chars.push(NormChar { cp, start, end });
            };
            match self.normalized(ch as u32) {
                Some(out) => out.iter().for_each(|&cp| push(cp)),
                None => push(ch as u32),
            }
        }
        // 2. Metaspace: a leading `▁` unless the text already starts with a space; every
        //    space becomes `▁`.
        if chars.first().is_none_or(|c| c.cp != SPACE) {
            chars.insert(
                0,
                NormChar {
                    cp: METASPACE,
                    start: 0,
                    end: 0,
                },
            );
        }
        let mut bytes = Vec::with_capacity(chars.len() * 3);
        let mut char_start = Vec::with_capacity(chars.len() + 1);
        for c in &chars {
            char_start.push(bytes.len());
            encode_utf8(if c.cp == SPACE { METASPACE } else { c.cp }, &mut bytes);
        }
        char_start.push(bytes.len());

        // 3. Viterbi over the pieces. Ties keep the earlier candidate, and an unknown
        //    character costs `unk_score` on its own, exactly as the reference does.
        let n = chars.len();
        let mut best = vec![-1e30f32; n + 1];
        let mut back: Vec<(u32, usize)> = vec![(self.unk, 0); n + 1];
        best[0] = 0.0;
        for i in 0..n {
            if best[i] <= -1e29 {
                continue;
            }
            let from = char_start[i];
            for e in i + 1..=n {
                let len = char_start[e] - from;
                if len > self.max_piece_bytes {
                    break;
                }
                if let Some(&id) = self.piece_ids.get(&bytes[from..char_start[e]]) {
                    if id != self.unk {
                        let score = best[i] + self.scores[id as usize];
                        if score > best[e] {
                            best[e] = score;
                            back[e] = (id, i);
                        }
                    }
                }
            }
            let score = best[i] + self.unk_score;
            if score > best[i + 1] {
                best[i + 1] = score;
                back[i + 1] = (self.unk, i);
            }
        }
        let mut tokens = Vec::new();
        let mut e = n;
        while e > 0 {
            let (id, i) = back[e];
            tokens.push(Token {
                id,
                start: chars[i].start,
                end: chars[e - 1].end.max(chars[i].start),
            });
            e = i;
        }
        tokens.reverse();
        tokens
    }
}

/// UTF-8 encoding of any code point below 2^21, as the reference writes it (the
/// normalization map is data, so its outputs are not guaranteed to be valid `char`s).
fn encode_utf8(cp: u32, out: &mut Vec<u8>) {
    if cp < 0x80 {
        out.push(cp as u8);
    } else if cp < 0x800 {
        out.extend([0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8]);
    } else if cp < 0x10000 {
        out.extend([
            0xE0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]);
    } else {
        out.extend([
            0xF0 | ((cp >> 18) & 0x07) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]);
    }
}

/// The tokenizer of a loaded model, with the special ids the encoder wraps texts in.
pub(crate) enum TextTokenizer {
    /// e5: SentencePiece Unigram from the container.
    Unigram(Box<UnigramTokenizer>),
    /// MiniLM: WordPiece from `tokenizer.json`.
    WordPiece {
        tokenizer: Box<tokenizers::Tokenizer>,
        path: PathBuf,
    },
}

impl TextTokenizer {
    /// Loads a `tokenizer.json`, with its padding and truncation switched off (the
    /// embedder pads and truncates itself).
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(path).map_err(|e| EmbedError::tokenizer(path, e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| EmbedError::tokenizer(path, e))?;
        Ok(Self::WordPiece {
            tokenizer: Box::new(tokenizer),
            path: path.to_path_buf(),
        })
    }

    /// Tokens of `text` without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<Token>> {
        match self {
            Self::Unigram(t) => Ok(t.encode(text)),
            Self::WordPiece { tokenizer, path } => {
                let enc = tokenizer
                    .encode(text, false)
                    .map_err(|e| EmbedError::tokenizer(path, e))?;
                Ok(enc
                    .get_ids()
                    .iter()
                    .zip(enc.get_offsets())
                    .map(|(&id, &(start, end))| Token { id, start, end })
                    .collect())
            }
        }
    }

    /// The id of a special token of `tokenizer.json`, e.g. `[CLS]`.
    pub fn special_id(&self, token: &str) -> Option<u32> {
        match self {
            Self::Unigram(_) => None,
            Self::WordPiece { tokenizer, .. } => tokenizer.token_to_id(token),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer(pieces: &[(&str, f32)], norm: Vec<(u32, Vec<u32>)>) -> UnigramTokenizer {
        let mut all = vec![("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)];
        all.extend_from_slice(pieces);
        let vocab = Vocabulary {
            pieces: all.iter().map(|(p, _)| p.as_bytes().to_vec()).collect(),
            scores: all.iter().map(|(_, s)| *s).collect(),
            bos: 0,
            pad: 1,
            eos: 2,
            unk: 3,
        };
        UnigramTokenizer::new(&vocab, NormalizationMap { entries: norm })
    }

    #[test]
    fn viterbi_prefers_likely_segmentation_and_keeps_offsets() {
        let t = tokenizer(
            &[
                ("▁", -2.0),
                ("▁東京", -3.0),
                ("東", -4.0),
                ("京", -4.0),
                ("は", -2.0),
            ],
            vec![],
        );
        let text = "東京は";
        let toks = t.encode(text);
        assert_eq!(toks.iter().map(|t| t.id).collect::<Vec<_>>(), vec![5, 8]);
        assert_eq!((toks[0].start, toks[0].end), (0, 6));
        assert_eq!(&text[toks[1].start..toks[1].end], "は");
    }

    #[test]
    fn unknown_characters_and_spaces() {
        // U+3000 → space, U+0001 removed, runs of spaces collapsed.
        let t = tokenizer(
            &[("▁", -2.0), ("▁a", -1.0), ("b", -1.0)],
            vec![(0x01, vec![]), (0x3000, vec![0x20])],
        );
        let text = "a\u{3000}\u{1} \u{1}  b☃";
        let toks = t.encode(text);
        let ids: Vec<u32> = toks.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![5, 4, 6, 3]);
        assert_eq!(&text[toks[3].start..toks[3].end], "☃");
        assert!(toks.windows(2).all(|w| w[0].start <= w[1].start));
        // A text that starts with a space gets no extra metaspace.
        assert_eq!(t.encode(" a").iter().map(|t| t.id).collect::<Vec<_>>(), [5]);
        assert_eq!(t.encode("").iter().map(|t| t.id).collect::<Vec<_>>(), [4]);
    }
}
