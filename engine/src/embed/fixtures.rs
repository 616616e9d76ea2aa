//! Test support: tiny random-weight E5S1 containers.
//!
//! The real multilingual-e5 container is 72 MB and takes a while to load; most tests of
//! loading, batching, tokenizing, chunking or indexing only need *a* model of the right
//! format. [`write_tiny_e5s1`] writes one in milliseconds, byte-compatible with the real
//! layout (same header, Unigram vocabulary with Japanese pieces, normalization map,
//! f32 and Q4_0 tensors), so everything downstream of [`Embedder::load`] can be tested
//! without model files. Its vectors mean nothing, but they are deterministic per seed.
//!
//! [`Embedder::load`]: super::Embedder::load

use std::path::Path;

use super::e5s1::{TensorType, MAGIC, Q4_0_BLOCK, Q4_0_BLOCK_BYTES, VERSION};

/// Hidden size (and embedding dimension) of the tiny model.
pub const TINY_HIDDEN: usize = 32;
/// Window of the tiny model, special tokens included.
pub const TINY_MAX_POSITIONS: usize = 64;
const TINY_LAYERS: usize = 2;
const TINY_HEADS: usize = 2;
const TINY_FFN: usize = 64;
const TINY_TYPE_VOCAB: usize = 2;
/// Extra embedding rows beyond the vocabulary, as in the real file.
const TINY_SPARE_ROWS: usize = 3;

/// Pieces after the four specials; their scores fall with their position.
const TINY_PIECES: &[&str] = &[
    "▁",
    ",",
    ".",
    "。",
    "、",
    ":",
    "▁passage",
    "▁query",
    "▁the",
    "▁a",
    "▁cat",
    "▁dog",
    "▁is",
    "▁東京",
    "東京",
    "東",
    "京",
    "は",
    "日本",
    "の",
    "首都",
    "です",
    "▁日本",
    "大阪",
    "ます",
    "▁ABC",
    "A",
    "B",
    "C",
    "a",
    "b",
    "c",
    "d",
    "e",
    "g",
    "h",
    "i",
    "k",
    "n",
    "o",
    "p",
    "q",
    "r",
    "s",
    "t",
    "u",
    "y",
    "1",
    "2",
    "3",
];

/// Writes a tiny random-weight E5S1 container to `path` (2 layers, hidden 32, 2 heads,
/// window 64, a 54-piece vocabulary with English and Japanese pieces). The same `seed`
/// always gives the same bytes.
pub fn write_tiny_e5s1(path: &Path, seed: u64) -> std::io::Result<()> {
    std::fs::write(path, tiny_e5s1_bytes(seed))
}

/// The bytes [`write_tiny_e5s1`] writes.
pub fn tiny_e5s1_bytes(seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed ^ 0x9E37_79B9_7F4A_7C15);
    let (h, ff) = (TINY_HIDDEN, TINY_FFN);

    let mut pieces: Vec<(String, f32)> = ["<s>", "<pad>", "</s>", "<unk>"]
        .iter()
        .map(|p| (p.to_string(), 0.0))
        .collect();
    pieces.extend(
        TINY_PIECES
            .iter()
            .enumerate()
            .map(|(i, p)| (p.to_string(), -2.0 - 0.25 * i as f32)),
    );
    let vocab_rows = pieces.len() + TINY_SPARE_ROWS;

    // Tensors: (name, type, f32 values or Q4_0 bytes).
    let mut tensors: Vec<(String, TensorType, Vec<u8>)> = Vec::new();
    let mut f32s = |name: &str, values: Vec<f32>| {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name.to_owned(), TensorType::F32, bytes));
    };
    let mut q4 = Vec::new();
    f32s("emb.pos", rng.values(TINY_MAX_POSITIONS * h, 0.0, 0.1));
    f32s("emb.type", rng.values(TINY_TYPE_VOCAB * h, 0.0, 0.1));
    f32s("emb.ln.w", rng.values(h, 1.0, 0.1));
    f32s("emb.ln.b", rng.values(h, 0.0, 0.05));
    q4.push(("emb.word".to_owned(), rng.q4_0(vocab_rows * h)));
    for l in 0..TINY_LAYERS {
        for (name, rows, cols) in [
            ("q", h, h),
            ("k", h, h),
            ("v", h, h),
            ("ao", h, h),
            ("fi", ff, h),
            ("fo", h, ff),
        ] {
            q4.push((format!("l{l}.{name}.w"), rng.q4_0(rows * cols)));
            f32s(&format!("l{l}.{name}.b"), rng.values(rows, 0.0, 0.05));
        }
        for norm in ["aln", "oln"] {
            f32s(&format!("l{l}.{norm}.w"), rng.values(h, 1.0, 0.1));
            f32s(&format!("l{l}.{norm}.b"), rng.values(h, 0.0, 0.05));
        }
    }
    tensors.extend(q4.into_iter().map(|(n, b)| (n, TensorType::Q4_0, b)));

    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend(VERSION.to_le_bytes());
    for v in [
        h,
        TINY_LAYERS,
        TINY_HEADS,
        ff,
        vocab_rows,
        TINY_MAX_POSITIONS,
        TINY_TYPE_VOCAB,
    ] {
        out.extend((v as i32).to_le_bytes());
    }
    out.extend(1e-12f32.to_le_bytes());
    out.extend((Q4_0_BLOCK as i32).to_le_bytes());

    // Vocabulary: count, bos, eos, pad, unk, blob length, offsets, scores, blob.
    let blob: Vec<u8> = pieces.iter().flat_map(|(p, _)| p.bytes()).collect();
    for v in [pieces.len() as i32, 0, 2, 1, 3] {
        out.extend(v.to_le_bytes());
    }
    out.extend((blob.len() as u64).to_le_bytes());
    let mut offset = 0u32;
    out.extend(offset.to_le_bytes());
    for (p, _) in &pieces {
        offset += p.len() as u32;
        out.extend(offset.to_le_bytes());
    }
    for (_, s) in &pieces {
        out.extend(s.to_le_bytes());
    }
    out.extend_from_slice(&blob);

    // Normalization: control characters dropped, tab/newline/ideographic space to a
    // space, full-width Latin capitals and digits to ASCII.
    let mut norm: Vec<(u32, Vec<u32>)> =
        vec![(0x01, vec![]), (0x09, vec![0x20]), (0x0A, vec![0x20])];
    norm.extend((0xFF10..=0xFF19).map(|c| (c, vec![c - 0xFF10 + 0x30])));
    norm.extend((0xFF21..=0xFF3A).map(|c| (c, vec![c - 0xFF21 + 0x41])));
    norm.insert(3, (0x3000, vec![0x20]));
    norm.sort_by_key(|(c, _)| *c);
    let table: Vec<u8> = norm
        .iter()
        .flat_map(|(c, outs)| {
            let mut e = c.to_le_bytes().to_vec();
            e.push(outs.len() as u8);
            e.extend(outs.iter().flat_map(|o| o.to_le_bytes()));
            e
        })
        .collect();
    out.extend((norm.len() as i32).to_le_bytes());
    out.extend((table.len() as u32).to_le_bytes());
    out.extend_from_slice(&table);

    // Directory, then the tensor data at 64-byte aligned offsets.
    let dir_len: usize = 4 + tensors
        .iter()
        .map(|(n, ..)| 2 + n.len() + 1 + 4 + 8 + 8)
        .sum::<usize>();
    let mut data_at = (out.len() + dir_len).next_multiple_of(64);
    let mut placed = Vec::with_capacity(tensors.len());
    out.extend((tensors.len() as i32).to_le_bytes());
    for (name, ty, bytes) in &tensors {
        let elements = match ty {
            TensorType::F32 => bytes.len() / 4,
            TensorType::Q4_0 => bytes.len() / Q4_0_BLOCK_BYTES * Q4_0_BLOCK,
        };
        out.extend((name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(ty.code());
        out.extend((elements as u32).to_le_bytes());
        out.extend((data_at as u64).to_le_bytes());
        out.extend((bytes.len() as u64).to_le_bytes());
        placed.push(data_at);
        data_at = (data_at + bytes.len()).next_multiple_of(64);
    }
    for ((_, _, bytes), at) in tensors.iter().zip(placed) {
        out.resize(at, 0);
        out.extend_from_slice(bytes);
    }
    out
}

/// A small deterministic generator (SplitMix64), so fixtures do not depend on the
/// `rand` crate's algorithms staying the same.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `center ± spread`.
    fn values(&mut self, n: usize, center: f32, spread: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
                center + spread * (2.0 * u - 1.0)
            })
            .collect()
    }

    /// `n` random Q4_0 values: scales 1/16 or 1/32 (exact in f16), random nibbles.
    fn q4_0(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n / Q4_0_BLOCK * Q4_0_BLOCK_BYTES);
        for _ in 0..n / Q4_0_BLOCK {
            let r = self.next();
            let scale: u16 = if r & 1 == 0 { 0x2C00 } else { 0x2800 };
            out.extend(scale.to_le_bytes());
            let (a, b) = (self.next(), self.next());
            out.extend(a.to_le_bytes());
            out.extend(b.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes() {
        assert_eq!(tiny_e5s1_bytes(5), tiny_e5s1_bytes(5));
        assert_ne!(tiny_e5s1_bytes(5), tiny_e5s1_bytes(6));
    }

    #[test]
    fn container_parses() {
        let file = super::super::e5s1::E5s1File::parse(Path::new("tiny.e5s1"), tiny_e5s1_bytes(1))
            .unwrap();
        assert_eq!(file.header.hidden, TINY_HIDDEN);
        assert_eq!(file.vocab.pieces.len(), 4 + TINY_PIECES.len());
        assert_eq!(file.normalization.entries.len(), 4 + 10 + 26);
    }
}
