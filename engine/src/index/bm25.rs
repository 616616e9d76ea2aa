//! BM25 keyword search over chunks, in tantivy, with Japanese morphology.
//!
//! Two text fields index every chunk:
//! - `ja`: lindera with the IPADIC dictionary (embedded in the binary), lower-cased,
//!   with particles and auxiliaries dropped. It finds words, not substrings.
//! - `gram`: overlapping character bigrams. IPADIC keeps compounds such as
//!   `羽田空港` or `有給休暇申請` as one token, so a query for `羽田` would miss
//!   them in `ja`; the bigram field finds parts of compounds and product codes.
//!
//! A user dictionary (`userdict.csv` in the index folder: `surface,part of speech,reading`
//! per line, lindera's simple IPADIC format) teaches the morphological analyser company
//! terms and product codes (`くら精機`, `KeihiNavi`) so they become one token. The index
//! records the sha256 of the dictionary it was built with (`userdict.sha256`); when the
//! file changes, the next sync re-tokenizes every chunk from the catalog, so old and new
//! chunks are never analysed differently.
//!
//! Queries are analysed by the same analysers and become a boolean OR of term
//! queries (never parsed as query syntax, so user text cannot break them),
//! combined with a required filter on the collections the caller may read —
//! access control happens inside the index, before scoring.

use std::path::{Path, PathBuf};

use lindera::dictionary::{load_dictionary, load_user_dictionary_from_csv};
use lindera::mode::Mode;
use lindera::segmenter::Segmenter;
use lindera_tantivy::tokenizer::LinderaTokenizer;
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery, TermSetQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{LowerCaser, NgramTokenizer, StopWordFilter, TextAnalyzer, TokenStream};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::IndexError;

/// Japanese function words that carry no search meaning (particles, auxiliaries,
/// question endings). IDF would down-weight them anyway; dropping them keeps
/// question phrasing from matching every chunk.
const JA_STOP_WORDS: &[&str] = &[
    "は",
    "が",
    "を",
    "に",
    "で",
    "と",
    "の",
    "へ",
    "や",
    "も",
    "か",
    "な",
    "ね",
    "よ",
    "から",
    "まで",
    "より",
    "です",
    "ます",
    "でし",
    "まし",
    "た",
    "だ",
    "て",
    "ない",
    "する",
    "し",
    "さ",
    "れ",
    "られ",
    "ある",
    "いる",
    "こと",
    "もの",
    "ため",
    "など",
    "何",
    "どう",
    "どの",
    "どこ",
    "いつ",
    "誰",
    "ください",
    "場合",
    "とき",
    "について",
    "教え",
    "?",
    "?",
    "。",
    "、",
];

const JA: &str = "kura_ja";
const GRAM: &str = "kura_gram";

/// The BM25 index.
pub struct Bm25Index {
    index: Index,
    reader: IndexReader,
    writer: Option<IndexWriter>,
    chunk_id: Field,
    collection: Field,
    ja: Field,
    gram: Field,
    /// sha256 of the user dictionary in effect ("" when there is none).
    user_dict_hash: String,
    /// Where the hash the index was built with is recorded.
    stamp_path: PathBuf,
}

/// The user dictionary file in an index folder.
pub const USER_DICTIONARY: &str = "userdict.csv";

/// sha256 of the user dictionary file, or "" when it does not exist.
fn user_dict_hash(path: &Path) -> Result<String, IndexError> {
    use sha2::{Digest, Sha256};
    match std::fs::read(path) {
        Ok(bytes) => Ok(hex::encode(Sha256::digest(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(IndexError::io(path, e)),
    }
}

/// Weight of the bigram field relative to the morphological field.
const GRAM_BOOST: f32 = 0.6;

fn analyzers(user_dict: Option<&Path>) -> Result<(TextAnalyzer, TextAnalyzer), IndexError> {
    let dictionary = load_dictionary("embedded://ipadic").map_err(|e| {
        IndexError::Tokenizer(format!("loading the embedded IPADIC dictionary: {e}"))
    })?;
    let user = match user_dict {
        Some(path) if path.is_file() => Some(
            load_user_dictionary_from_csv(&dictionary.metadata, path).map_err(|e| {
                IndexError::Tokenizer(format!(
                    "{}: not a valid user dictionary (one `surface,part of speech,reading` per line / \
                     ユーザー辞書の形式が正しくありません): {e}",
                    path.display()
                ))
            })?,
        ),
        _ => None,
    };
    let segmenter = Segmenter::new(Mode::Normal, dictionary, user);
    let ja = TextAnalyzer::builder(LinderaTokenizer::from_segmenter(segmenter))
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(
            JA_STOP_WORDS.iter().map(|s| s.to_string()),
        ))
        .build();
    let gram = TextAnalyzer::builder(
        NgramTokenizer::new(2, 2, false).map_err(|e| IndexError::Tokenizer(e.to_string()))?,
    )
    .filter(LowerCaser)
    .build();
    Ok((ja, gram))
}

fn schema() -> Schema {
    let mut b = Schema::builder();
    b.add_u64_field(
        "chunk_id",
        NumericOptions::default()
            .set_indexed()
            .set_fast()
            .set_stored(),
    );
    b.add_u64_field(
        "collection",
        NumericOptions::default().set_indexed().set_fast(),
    );
    for (name, tokenizer) in [("ja", JA), ("gram", GRAM)] {
        b.add_text_field(
            name,
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(tokenizer)
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        );
    }
    b.build()
}

impl Bm25Index {
    /// Opens (or creates) the index in `dir`, with the user dictionary `user_dict`
    /// when that file exists.
    pub fn open(dir: &Path, user_dict: Option<&Path>) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        let directory = MmapDirectory::open(dir).map_err(|e| IndexError::Bm25(e.to_string()))?;
        let index = Index::open_or_create(directory, schema())?;
        let user_dict_hash = match user_dict {
            Some(p) => user_dict_hash(p)?,
            None => String::new(),
        };
        let (ja, gram) = analyzers(user_dict)?;
        index.tokenizers().register(JA, ja);
        index.tokenizers().register(GRAM, gram);
        let s = index.schema();
        let field = |n: &str| s.get_field(n).map_err(|e| IndexError::Bm25(e.to_string()));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Bm25Index {
            chunk_id: field("chunk_id")?,
            collection: field("collection")?,
            ja: field("ja")?,
            gram: field("gram")?,
            index,
            reader,
            writer: None,
            user_dict_hash,
            stamp_path: dir.join("userdict.sha256"),
        })
    }

    /// Whether the index was built with another user dictionary than the one in
    /// effect now (then every chunk must be analysed again: see [`rebuild_start`](Self::rebuild_start)).
    pub fn needs_retokenizing(&self) -> bool {
        let built_with = std::fs::read_to_string(&self.stamp_path).unwrap_or_default();
        built_with.trim() != self.user_dict_hash
    }

    /// Deletes every document (effective at the next commit), to re-add all chunks.
    pub fn rebuild_start(&mut self) -> Result<(), IndexError> {
        self.writer()?.delete_all_documents()?;
        Ok(())
    }

    /// Records that the committed index was analysed with the current user dictionary.
    pub fn mark_tokenized(&self) -> Result<(), IndexError> {
        std::fs::write(&self.stamp_path, &self.user_dict_hash)
            .map_err(|e| IndexError::io(&self.stamp_path, e))
    }

    /// The tokens the morphological field makes of `text` (for `kura dict tokenize`).
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let Some(mut a) = self.index.tokenizers().get(JA) else {
            return Vec::new();
        };
        let mut stream = a.token_stream(text);
        let mut out = Vec::new();
        while let Some(t) = stream.next() {
            out.push(t.text.clone());
        }
        out
    }

    /// The index-log sequence number of the last commit (0 for a new index).
    pub fn committed_seq(&self) -> Result<i64, IndexError> {
        let metas = self.index.load_metas()?;
        Ok(metas.payload.and_then(|p| p.parse().ok()).unwrap_or(0))
    }

    fn writer(&mut self) -> Result<&mut IndexWriter, IndexError> {
        if self.writer.is_none() {
            self.writer = Some(self.index.writer(64_000_000)?);
        }
        Ok(self.writer.as_mut().expect("just set"))
    }

    /// Adds a chunk (visible after [`commit`](Self::commit)).
    pub fn add(&mut self, chunk_id: i64, collection_id: i64, text: &str) -> Result<(), IndexError> {
        let (c, k, ja, gram) = (self.chunk_id, self.collection, self.ja, self.gram);
        self.writer()?.add_document(doc!(
            c => chunk_id as u64,
            k => collection_id as u64,
            ja => text,
            gram => text,
        ))?;
        Ok(())
    }

    /// Removes a chunk (effective after [`commit`](Self::commit)).
    pub fn remove(&mut self, chunk_id: i64) -> Result<(), IndexError> {
        let term = Term::from_field_u64(self.chunk_id, chunk_id as u64);
        self.writer()?.delete_term(term);
        Ok(())
    }

    /// Makes the changes durable, recording the index-log position they reach.
    pub fn commit(&mut self, seq: i64) -> Result<(), IndexError> {
        let writer = self.writer()?;
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&seq.to_string());
        prepared.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// Every chunk id in the index (for consistency checks).
    pub fn chunk_ids(&self) -> Result<Vec<i64>, IndexError> {
        let searcher = self.reader.searcher();
        let mut ids = Vec::new();
        for segment in searcher.segment_readers() {
            let col = segment
                .fast_fields()
                .u64("chunk_id")
                .map_err(|e| IndexError::Bm25(e.to_string()))?;
            let alive = segment.alive_bitset();
            for doc in 0..segment.max_doc() {
                if alive.map(|a| a.is_alive(doc)).unwrap_or(true) {
                    if let Some(v) = col.first(doc) {
                        ids.push(v as i64);
                    }
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn terms(&self, field: Field, analyzer: &str, text: &str) -> Vec<Term> {
        let Some(mut a) = self.index.tokenizers().get(analyzer) else {
            return Vec::new();
        };
        let mut stream = a.token_stream(text);
        let mut out = Vec::new();
        while let Some(t) = stream.next() {
            let term = Term::from_field_text(field, &t.text);
            if !out.contains(&term) {
                out.push(term);
            }
        }
        out
    }

    /// The `k` best chunks for a query, among the given collections only.
    /// Returns (chunk id, BM25 score), best first.
    pub fn search(
        &self,
        query: &str,
        collections: &[i64],
        k: usize,
    ) -> Result<Vec<(i64, f32)>, IndexError> {
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for term in self.terms(self.ja, JA, query) {
            should.push((
                Occur::Should,
                Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
            ));
        }
        for term in self.terms(self.gram, GRAM, query) {
            let q = TermQuery::new(term, IndexRecordOption::WithFreqs);
            should.push((
                Occur::Should,
                Box::new(BoostQuery::new(Box::new(q), GRAM_BOOST)),
            ));
        }
        if should.is_empty() || collections.is_empty() {
            return Ok(Vec::new());
        }
        let filter = TermSetQuery::new(
            collections
                .iter()
                .map(|c| Term::from_field_u64(self.collection, *c as u64)),
        );
        let query = BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(BooleanQuery::new(should)) as Box<dyn Query>,
            ),
            (
                Occur::Must,
                Box::new(BoostQuery::new(Box::new(filter), 0.0)),
            ),
        ]);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(k).order_by_score())?;
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr)?;
            if let Some(id) = doc.get_first(self.chunk_id).and_then(|v| v.as_u64()) {
                out.push((id as i64, score));
            }
        }
        Ok(out)
    }

    /// How many postings a query's terms have in all (the sum of their document
    /// frequencies): what a search has to walk, and so a measure of how realistic a
    /// benchmark corpus is.
    pub fn query_postings(&self, query: &str) -> Result<u64, IndexError> {
        let searcher = self.reader.searcher();
        let mut total = 0;
        for term in self
            .terms(self.ja, JA, query)
            .into_iter()
            .chain(self.terms(self.gram, GRAM, query))
        {
            total += searcher.doc_freq(&term)?;
        }
        Ok(total)
    }

    /// Number of live chunks.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether the index holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
