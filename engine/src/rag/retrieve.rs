//! Retrieval for an answer: hybrid search, then the numbered [`Source`]s with the
//! features the refusal policy reads.
//!
//! The fused RRF score says which chunks rank first but not whether any of them is
//! relevant at all — a question about the company canteen still gets a "best"
//! chunk. So each source also carries two absolute measures: the cosine between
//! the question's and the chunk's embeddings (`cosine`, works across languages),
//! and the share of the question's content units found in the chunk (`coverage`,
//! see [`super::overlap`]; hiragana-only bigrams such as `ます`/`すか` and `何`
//! are left out, as they say nothing about the topic). `kura eval rag
//! --calibrate` prints their distributions for answerable and unanswerable
//! questions, which is where [`super::RefusalPolicy`]'s thresholds come from.

use serde::Serialize;

use crate::catalog::Catalog;
use crate::embed::Embedder;
use crate::index::{FusionParams, IndexError, SearchIndex, SearchMode};
use crate::ingest::normalize::normalize_text;

use super::overlap::{containment, content_units, units};
use super::RagError;

/// A retrieved chunk, numbered as the prompt shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// 1-based number: the model cites it as `[n]`.
    pub n: usize,
    /// The chunk's id in the catalog.
    pub chunk_id: i64,
    /// The document's path.
    pub doc: String,
    /// The document's file name (shown to the model and the user).
    pub title: String,
    /// 1-based page.
    pub page: i64,
    /// The heading above the chunk, if any.
    pub heading: Option<String>,
    /// The chunk's text.
    pub text: String,
    /// Fused retrieval score (RRF).
    pub score: f32,
    /// Cosine between question and chunk embeddings.
    pub cosine: f32,
    /// Share of the question's content units found in the chunk.
    pub coverage: f32,
}

/// Content units of a question: [`units`] minus hiragana-only units and `何`
/// (question words and inflections carry no topic).
pub fn question_units(question: &str) -> Vec<String> {
    content_units(question)
        .into_iter()
        .filter(|u| !u.contains('何'))
        .collect()
}

/// The title shown for a document path: its file name.
pub fn title_of(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// Searches `collections` (only those: the caller's access list) for `query` and
/// returns the best `top_k` chunks as numbered sources with their features.
pub async fn retrieve(
    catalog: &Catalog,
    index: &SearchIndex,
    embedder: &Embedder,
    query: &str,
    collections: &[i64],
    top_k: usize,
    fusion: &FusionParams,
) -> Result<Vec<Source>, RagError> {
    if collections.is_empty() || top_k == 0 {
        return Ok(Vec::new());
    }
    let query = normalize_text(query);
    let found = index
        .search_query(
            SearchMode::Hybrid,
            &query,
            || {
                embedder
                    .embed_queries(&[query.as_str()])
                    .map(|mut v| v.remove(0))
                    .map_err(|e| e.to_string())
            },
            collections,
            top_k,
            fusion,
        )
        .map_err(|e| match e {
            IndexError::Embed(e) => RagError::Embed(e),
            e => RagError::Index(e),
        })?;
    tracing::debug!(timings = ?found.timings, "retrieved");
    let (hits, qv) = (found.hits, found.query_vector.unwrap_or_default());
    let ids: Vec<i64> = hits.iter().map(|h| h.0).collect();
    let chunks = catalog.chunks(&ids).await?;
    let vectors = catalog.embeddings(&ids).await?;
    let q_units = question_units(&query);
    let mut out = Vec::with_capacity(hits.len());
    for (id, score) in hits {
        let Some(c) = chunks.iter().find(|c| c.id == id) else {
            continue;
        };
        // Defence in depth: the index filters by collection; check again here.
        if !collections.contains(&c.collection_id) {
            continue;
        }
        let cosine = vectors
            .iter()
            .find(|v| v.0 == id)
            .map(|(_, _, v)| v.iter().zip(&qv).map(|(a, b)| a * b).sum::<f32>())
            .unwrap_or(0.0);
        let with_heading = match &c.heading {
            Some(h) if !c.text.starts_with(h.as_str()) => format!("{h}\n{}", c.text),
            _ => c.text.clone(),
        };
        let coverage = containment(&q_units, &units(&with_heading));
        out.push(Source {
            n: out.len() + 1,
            chunk_id: c.id,
            doc: c.path.clone(),
            title: title_of(&c.path),
            page: c.page,
            heading: c.heading.clone(),
            text: c.text.clone(),
            score,
            cosine,
            coverage,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_units_keep_the_topic() {
        let u = question_units("有給休暇は何日前までに申請しなければなりませんか？");
        assert!(u.contains(&"有給".to_string()));
        assert!(u.contains(&"申請".to_string()));
        assert!(
            !u.iter()
                .any(|x| x == "ませ" || x == "すか" || x.contains('何')),
            "{u:?}"
        );
    }

    #[test]
    fn titles_are_file_names() {
        assert_eq!(title_of("/data/manuals/就業規則.pdf"), "就業規則.pdf");
        assert_eq!(title_of("p00012"), "p00012");
    }
}
