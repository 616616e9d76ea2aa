//! Feedback on answers (👍/👎 from the web UI), kept in the catalog's SQLite file.
//!
//! Each record keeps the question, the answer and the citations exactly as the
//! user saw them, so a reviewer can tell a retrieval miss from a model mistake
//! later, and approved answers can become training pairs for LoRA.
//!
//! ```no_run
//! # async fn f() -> Result<(), kura::catalog::CatalogError> {
//! use kura::catalog::{Catalog, feedback::{Feedback, Rating}};
//! let catalog = Catalog::open("/tmp/kura/catalog.sqlite".as_ref()).await?;
//! let id = catalog.record_feedback(&Feedback {
//!     rating: Rating::Up, question: "有給休暇は？".into(), answer: "3営業日前 [1]".into(),
//!     collections: vec!["samples".into()], citations: serde_json::json!([]), comment: None,
//! }).await?;
//! # Ok(()) }
//! ```

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{now, Catalog, CatalogError};

/// Thumbs up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    /// 👍 the answer helped.
    Up,
    /// 👎 it did not.
    Down,
}

impl Rating {
    fn as_str(self) -> &'static str {
        match self {
            Rating::Up => "up",
            Rating::Down => "down",
        }
    }
}

/// One piece of feedback as the UI sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// 👍 or 👎.
    pub rating: Rating,
    /// The question asked.
    pub question: String,
    /// The answer shown.
    pub answer: String,
    /// The collections searched (empty: all).
    #[serde(default)]
    pub collections: Vec<String>,
    /// The citations shown with the answer, as the API sent them.
    #[serde(default)]
    pub citations: serde_json::Value,
    /// An optional remark.
    #[serde(default)]
    pub comment: Option<String>,
}

/// A stored piece of feedback.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedbackRecord {
    /// Row id.
    pub id: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// What was sent.
    #[serde(flatten)]
    pub feedback: Feedback,
}

impl Catalog {
    /// Stores feedback; returns its id.
    pub async fn record_feedback(&self, f: &Feedback) -> Result<i64, CatalogError> {
        let citations = if f.citations.is_null() {
            "[]".to_owned()
        } else {
            f.citations.to_string()
        };
        let collections = serde_json::to_string(&f.collections).unwrap_or_else(|_| "[]".into());
        Ok(sqlx::query(
            "INSERT INTO feedback (created_at, rating, question, answer, collections, citations, comment) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(now())
        .bind(f.rating.as_str())
        .bind(&f.question)
        .bind(&f.answer)
        .bind(collections)
        .bind(citations)
        .bind(&f.comment)
        .fetch_one(&self.pool)
        .await?
        .get(0))
    }

    /// The most recent feedback first, at most `limit` records.
    pub async fn feedback(&self, limit: i64) -> Result<Vec<FeedbackRecord>, CatalogError> {
        let rows = sqlx::query(
            "SELECT id, created_at, rating, question, answer, collections, citations, comment \
             FROM feedback ORDER BY id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let rating: String = r.get(2);
                let collections: String = r.get(5);
                let citations: String = r.get(6);
                FeedbackRecord {
                    id: r.get(0),
                    created_at: r.get(1),
                    feedback: Feedback {
                        rating: if rating == "up" {
                            Rating::Up
                        } else {
                            Rating::Down
                        },
                        question: r.get(3),
                        answer: r.get(4),
                        collections: serde_json::from_str(&collections).unwrap_or_default(),
                        citations: serde_json::from_str(&citations)
                            .unwrap_or(serde_json::Value::Null),
                        comment: r.get(7),
                    },
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn feedback_is_stored_and_read_back_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("catalog.sqlite"))
            .await
            .unwrap();
        let up = Feedback {
            rating: Rating::Up,
            question: "有給休暇は何日前までに申請しますか？".into(),
            answer: "3営業日前までです [1]。".into(),
            collections: vec!["samples".into()],
            citations: serde_json::json!([{"n": 1, "doc": "就業規則.pdf", "page": 6}]),
            comment: None,
        };
        let down = Feedback {
            rating: Rating::Down,
            comment: Some("wrong page".into()),
            ..up.clone()
        };
        let a = catalog.record_feedback(&up).await.unwrap();
        let b = catalog.record_feedback(&down).await.unwrap();
        assert!(b > a);
        let all = catalog.feedback(10).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].feedback, down);
        assert_eq!(all[1].feedback, up);
        // Reopening keeps it (it is in the SQLite file, not in memory).
        drop(catalog);
        let again = Catalog::open(&dir.path().join("catalog.sqlite"))
            .await
            .unwrap();
        assert_eq!(again.feedback(1).await.unwrap()[0].feedback, down);
    }
}
