//! The catalog: one SQLite file that is the source of truth for what is indexed.
//!
//! Collections, documents (path, content hash, size, mtime, pages, extractor,
//! status, error), per-page quality, chunks (page and character span, text,
//! embedding) and ingest runs live here. The search indexes (BM25 in tantivy,
//! vectors in hnsw) are *derived* from it: every change to the set of chunks is
//! appended to `index_log` in the same transaction as the change itself, and each
//! index replays the log from the last sequence number it committed. So a process
//! killed at any moment leaves SQLite consistent (transactions), and the indexes
//! catch up the next time they are opened; nothing indexed before is lost.
//!
//! ```no_run
//! # async fn f() -> Result<(), kura::catalog::CatalogError> {
//! let catalog = kura::catalog::Catalog::open("/tmp/kura/catalog.sqlite".as_ref()).await?;
//! let samples = catalog.collection("samples").await?;
//! println!("{} documents", catalog.documents(samples.id).await?.len());
//! # Ok(()) }
//! ```

pub mod feedback;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

/// What can go wrong with the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The SQLite file could not be opened or migrated.
    #[error("catalog {path}: {source}")]
    Open {
        /// The SQLite file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },
    /// A query failed.
    #[error("catalog query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A migration failed.
    #[error("catalog migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No collection of that name.
    #[error("no collection named '{0}' / コレクション '{0}' はありません")]
    NoCollection(String),
}

impl CatalogError {
    /// Whether SQLite stopped because its disk (or its size limit) is full.
    pub fn is_disk_full(&self) -> bool {
        let e = match self {
            CatalogError::Query(e) | CatalogError::Open { source: e, .. } => e,
            CatalogError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => e,
            _ => return false,
        };
        match e {
            // SQLITE_FULL (13), also as an extended code.
            sqlx::Error::Database(db) => {
                db.code()
                    .is_some_and(|c| c.parse::<i32>().is_ok_and(|n| n & 0xff == 13))
                    || db.message().contains("disk is full")
            }
            sqlx::Error::Io(io) => io.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}

/// A named set of documents; the unit of access control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Collection {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
}

/// A collection with counts, for `kura status`.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionSummary {
    /// The collection.
    #[serde(flatten)]
    pub collection: Collection,
    /// Documents indexed.
    pub documents: i64,
    /// Documents that failed.
    pub failed: i64,
    /// Chunks indexed.
    pub chunks: i64,
}

/// A document as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentRecord {
    /// Row id.
    pub id: i64,
    /// Its collection.
    pub collection_id: i64,
    /// Absolute path when ingested.
    pub path: String,
    /// sha256 of the file's bytes.
    pub content_hash: String,
    /// Size in bytes.
    pub size: i64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Pages extracted.
    pub page_count: i64,
    /// Which extractor read it.
    pub extractor: Option<String>,
    /// `indexed` or `failed`.
    pub status: String,
    /// Why it failed (or why its newest version could not be read).
    pub error: Option<String>,
}

/// A page's quality verdict, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct PageRecord {
    /// 1-based page number.
    pub number: i64,
    /// `ok`, `empty` or `garbled`.
    pub quality: String,
    /// Why it is not ok.
    pub reason: Option<String>,
    /// Characters extracted.
    pub chars: i64,
}

/// A chunk ready to be stored.
#[derive(Debug, Clone)]
pub struct NewChunk {
    /// 1-based page it starts on.
    pub page: i64,
    /// Character span in the page text.
    pub char_start: i64,
    /// End of the span (exclusive).
    pub char_end: i64,
    /// The nearest heading above it, if any.
    pub heading: Option<String>,
    /// The text.
    pub text: String,
    /// Tokens of the embedding model.
    pub tokens: i64,
    /// L2-normalised embedding.
    pub embedding: Vec<f32>,
}

/// A document ready to be stored.
#[derive(Debug, Clone)]
pub struct NewDocument {
    /// Absolute path.
    pub path: String,
    /// sha256 of the bytes.
    pub content_hash: String,
    /// Size in bytes.
    pub size: i64,
    /// Modification time (seconds).
    pub mtime: i64,
    /// Which extractor read it.
    pub extractor: String,
    /// Pages with their quality.
    pub pages: Vec<PageRecord>,
}

/// A stored chunk with the document it came from.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkRecord {
    /// Row id (stable: also the id in both indexes).
    pub id: i64,
    /// Its document.
    pub document_id: i64,
    /// Its collection.
    pub collection_id: i64,
    /// The document's path.
    pub path: String,
    /// 1-based page.
    pub page: i64,
    /// Character span in the page text.
    pub char_start: i64,
    /// End of the span.
    pub char_end: i64,
    /// Heading above it.
    pub heading: Option<String>,
    /// The text.
    pub text: String,
}

/// One entry of the index log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEntry {
    /// Sequence number.
    pub seq: i64,
    /// Added (true) or removed (false).
    pub add: bool,
    /// The chunk.
    pub chunk_id: i64,
}

/// The catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    pool: SqlitePool,
    path: PathBuf,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Encodes an embedding as little-endian f32 bytes.
pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes little-endian f32 bytes.
pub fn decode_vector(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

impl Catalog {
    /// Opens (creating if needed) the catalog file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, CatalogError> {
        Self::open_with_page_limit(path, None).await
    }

    /// [`Catalog::open`] with the file capped at `max_pages` SQLite pages (4 KiB
    /// each): past it SQLite answers exactly as on a full disk, which is how a full
    /// disk is tested without filling one.
    pub async fn open_with_page_limit(
        path: &Path,
        max_pages: Option<u64>,
    ) -> Result<Self, CatalogError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|source| CatalogError::Open {
                path: path.to_owned(),
                source,
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(30));
        let opts = match max_pages {
            Some(n) => opts.pragma("max_page_count", n.to_string()),
            None => opts,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| CatalogError::Open {
                path: path.to_owned(),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Catalog {
            pool,
            path: path.to_owned(),
        })
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The collection of this name, created if it does not exist.
    pub async fn collection(&self, name: &str) -> Result<Collection, CatalogError> {
        sqlx::query("INSERT OR IGNORE INTO collections (name, created_at) VALUES (?, ?)")
            .bind(name)
            .bind(now())
            .execute(&self.pool)
            .await?;
        self.find_collection(name)
            .await?
            .ok_or_else(|| CatalogError::NoCollection(name.to_owned()))
    }

    /// Records `path` (symlinks resolved) as a folder the administrator ingested into
    /// a collection at the shell: see [`crate::ingest::roots`].
    pub async fn add_source_root(
        &self,
        collection_id: i64,
        path: &str,
    ) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT OR IGNORE INTO source_roots (collection_id, path, added_at) VALUES (?, ?, ?)",
        )
        .bind(collection_id)
        .bind(path)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The folders recorded by [`Catalog::add_source_root`] for a collection.
    pub async fn source_roots(&self, collection_id: i64) -> Result<Vec<String>, CatalogError> {
        let rows =
            sqlx::query("SELECT path FROM source_roots WHERE collection_id = ? ORDER BY path")
                .bind(collection_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// The collection of this name, if it exists.
    pub async fn find_collection(&self, name: &str) -> Result<Option<Collection>, CatalogError> {
        let row = sqlx::query("SELECT id, name FROM collections WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| Collection {
            id: r.get(0),
            name: r.get(1),
        }))
    }

    /// The collections named, all of which must exist.
    pub async fn collections_named(
        &self,
        names: &[String],
    ) -> Result<Vec<Collection>, CatalogError> {
        let mut out = Vec::new();
        for n in names {
            out.push(
                self.find_collection(n)
                    .await?
                    .ok_or_else(|| CatalogError::NoCollection(n.clone()))?,
            );
        }
        Ok(out)
    }

    /// Every collection with its counts.
    pub async fn summaries(&self) -> Result<Vec<CollectionSummary>, CatalogError> {
        let rows = sqlx::query(
            "SELECT c.id, c.name,
                (SELECT COUNT(*) FROM documents d WHERE d.collection_id = c.id AND d.status = 'indexed'),
                (SELECT COUNT(*) FROM documents d WHERE d.collection_id = c.id AND d.status = 'failed'),
                (SELECT COUNT(*) FROM chunks k WHERE k.collection_id = c.id)
             FROM collections c ORDER BY c.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| CollectionSummary {
                collection: Collection {
                    id: r.get(0),
                    name: r.get(1),
                },
                documents: r.get(2),
                failed: r.get(3),
                chunks: r.get(4),
            })
            .collect())
    }

    fn document_from_row(r: sqlx::sqlite::SqliteRow) -> DocumentRecord {
        DocumentRecord {
            id: r.get("id"),
            collection_id: r.get("collection_id"),
            path: r.get("path"),
            content_hash: r.get("content_hash"),
            size: r.get("size"),
            mtime: r.get("mtime"),
            page_count: r.get("page_count"),
            extractor: r.get("extractor"),
            status: r.get("status"),
            error: r.get("error"),
        }
    }

    /// Every document of a collection, by path.
    pub async fn documents(&self, collection_id: i64) -> Result<Vec<DocumentRecord>, CatalogError> {
        let rows = sqlx::query("SELECT * FROM documents WHERE collection_id = ? ORDER BY path")
            .bind(collection_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Self::document_from_row).collect())
    }

    /// The document with this id, if there is one.
    pub async fn document(&self, id: i64) -> Result<Option<DocumentRecord>, CatalogError> {
        let row = sqlx::query("SELECT * FROM documents WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Self::document_from_row))
    }

    /// The pages of a document that are not ok (garbled or empty).
    pub async fn problem_pages(&self, document_id: i64) -> Result<Vec<PageRecord>, CatalogError> {
        let rows = sqlx::query(
            "SELECT number, quality, reason, chars FROM pages WHERE document_id = ? AND quality != 'ok' ORDER BY number",
        )
        .bind(document_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| PageRecord {
                number: r.get(0),
                quality: r.get(1),
                reason: r.get(2),
                chars: r.get(3),
            })
            .collect())
    }

    /// Stores a document with its pages and chunks, replacing any earlier version
    /// of the same path, in one transaction (logged for the indexes).
    pub async fn replace_document(
        &self,
        collection_id: i64,
        doc: &NewDocument,
        chunks: &[NewChunk],
    ) -> Result<i64, CatalogError> {
        let mut tx = self.pool.begin().await?;
        if let Some(old) =
            sqlx::query("SELECT id FROM documents WHERE collection_id = ? AND path = ?")
                .bind(collection_id)
                .bind(&doc.path)
                .fetch_optional(&mut *tx)
                .await?
        {
            let old_id: i64 = old.get(0);
            Self::remove_in(&mut tx, old_id).await?;
        }
        let id: i64 = sqlx::query(
            "INSERT INTO documents (collection_id, path, content_hash, size, mtime, page_count, extractor, status, error, ingested_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'indexed', NULL, ?) RETURNING id",
        )
        .bind(collection_id)
        .bind(&doc.path)
        .bind(&doc.content_hash)
        .bind(doc.size)
        .bind(doc.mtime)
        .bind(doc.pages.len() as i64)
        .bind(&doc.extractor)
        .bind(now())
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        for p in &doc.pages {
            sqlx::query("INSERT INTO pages (document_id, number, quality, reason, chars) VALUES (?, ?, ?, ?, ?)")
                .bind(id)
                .bind(p.number)
                .bind(&p.quality)
                .bind(&p.reason)
                .bind(p.chars)
                .execute(&mut *tx)
                .await?;
        }
        for (ordinal, c) in chunks.iter().enumerate() {
            let chunk_id: i64 = sqlx::query(
                "INSERT INTO chunks (document_id, collection_id, ordinal, page, char_start, char_end, heading, text, tokens, embedding)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(id)
            .bind(collection_id)
            .bind(ordinal as i64)
            .bind(c.page)
            .bind(c.char_start)
            .bind(c.char_end)
            .bind(&c.heading)
            .bind(&c.text)
            .bind(c.tokens)
            .bind(encode_vector(&c.embedding))
            .fetch_one(&mut *tx)
            .await?
            .get(0);
            sqlx::query("INSERT INTO index_log (op, chunk_id) VALUES ('add', ?)")
                .bind(chunk_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Records that a file could not be read. An earlier indexed version of the
    /// same path keeps its chunks (nothing indexed is lost); only the error is noted.
    pub async fn record_failure(
        &self,
        collection_id: i64,
        path: &str,
        content_hash: &str,
        size: i64,
        mtime: i64,
        error: &str,
    ) -> Result<(), CatalogError> {
        let existing =
            sqlx::query("SELECT id, status FROM documents WHERE collection_id = ? AND path = ?")
                .bind(collection_id)
                .bind(path)
                .fetch_optional(&self.pool)
                .await?;
        match existing {
            Some(r) if r.get::<String, _>(1) == "indexed" => {
                sqlx::query("UPDATE documents SET error = ? WHERE id = ?")
                    .bind(error)
                    .bind(r.get::<i64, _>(0))
                    .execute(&self.pool)
                    .await?;
            }
            _ => {
                sqlx::query(
                    "INSERT INTO documents (collection_id, path, content_hash, size, mtime, status, error, ingested_at)
                     VALUES (?, ?, ?, ?, ?, 'failed', ?, ?)
                     ON CONFLICT (collection_id, path) DO UPDATE SET
                       content_hash = excluded.content_hash, size = excluded.size, mtime = excluded.mtime,
                       status = 'failed', error = excluded.error, ingested_at = excluded.ingested_at",
                )
                .bind(collection_id)
                .bind(path)
                .bind(content_hash)
                .bind(size)
                .bind(mtime)
                .bind(error)
                .bind(now())
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    async fn remove_in(
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        document_id: i64,
    ) -> Result<(), CatalogError> {
        sqlx::query("INSERT INTO index_log (op, chunk_id) SELECT 'remove', id FROM chunks WHERE document_id = ?")
            .bind(document_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM documents WHERE id = ?")
            .bind(document_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Removes a document and its chunks (logged for the indexes).
    pub async fn remove_document(&self, document_id: i64) -> Result<(), CatalogError> {
        let mut tx = self.pool.begin().await?;
        Self::remove_in(&mut tx, document_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The index log after `seq`, in order.
    pub async fn log_since(&self, seq: i64) -> Result<Vec<LogEntry>, CatalogError> {
        let rows =
            sqlx::query("SELECT seq, op, chunk_id FROM index_log WHERE seq > ? ORDER BY seq")
                .bind(seq)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|r| LogEntry {
                seq: r.get(0),
                add: r.get::<String, _>(1) == "add",
                chunk_id: r.get(2),
            })
            .collect())
    }

    /// The last sequence number of the index log (0 when empty).
    pub async fn last_seq(&self) -> Result<i64, CatalogError> {
        Ok(sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM index_log")
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    /// Chunks by id, with their document paths; ids that no longer exist are skipped.
    pub async fn chunks(&self, ids: &[i64]) -> Result<Vec<ChunkRecord>, CatalogError> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(500) {
            let marks = vec!["?"; batch.len()].join(",");
            let sql = format!(
                "SELECT k.id, k.document_id, k.collection_id, d.path, k.page, k.char_start, k.char_end, k.heading, k.text
                 FROM chunks k JOIN documents d ON d.id = k.document_id WHERE k.id IN ({marks})"
            );
            // Only `?` placeholders are interpolated; values are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in batch {
                q = q.bind(id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(ChunkRecord {
                    id: r.get(0),
                    document_id: r.get(1),
                    collection_id: r.get(2),
                    path: r.get(3),
                    page: r.get(4),
                    char_start: r.get(5),
                    char_end: r.get(6),
                    heading: r.get(7),
                    text: r.get(8),
                });
            }
        }
        let pos: std::collections::HashMap<i64, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        out.sort_by_key(|c| pos.get(&c.id).copied().unwrap_or(usize::MAX));
        Ok(out)
    }

    /// Every chunk of one page of a document, in reading order (to show the page
    /// around a cited chunk).
    pub async fn chunks_on_page(
        &self,
        document_id: i64,
        page: i64,
    ) -> Result<Vec<ChunkRecord>, CatalogError> {
        let rows = sqlx::query(
            "SELECT k.id FROM chunks k WHERE k.document_id = ? AND k.page = ? ORDER BY k.char_start, k.id",
        )
        .bind(document_id)
        .bind(page)
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        self.chunks(&ids).await
    }

    /// Pages that are garbled or empty, counted per collection id.
    pub async fn problem_page_counts(
        &self,
    ) -> Result<std::collections::HashMap<i64, i64>, CatalogError> {
        let rows = sqlx::query(
            "SELECT d.collection_id, COUNT(*) FROM pages p JOIN documents d ON d.id = p.document_id
             WHERE p.quality != 'ok' GROUP BY d.collection_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Embeddings (with collection ids) of chunks by id; missing ids are skipped.
    pub async fn embeddings(&self, ids: &[i64]) -> Result<Vec<(i64, i64, Vec<f32>)>, CatalogError> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(500) {
            let marks = vec!["?"; batch.len()].join(",");
            let sql =
                format!("SELECT id, collection_id, embedding FROM chunks WHERE id IN ({marks})");
            // Only `?` placeholders are interpolated; values are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in batch {
                q = q.bind(id);
            }
            for r in q.fetch_all(&self.pool).await? {
                let bytes: Vec<u8> = r.get(2);
                out.push((r.get(0), r.get(1), decode_vector(&bytes)));
            }
        }
        Ok(out)
    }

    /// The chunk ids of one collection, in document and reading order.
    pub async fn collection_chunk_ids(&self, collection_id: i64) -> Result<Vec<i64>, CatalogError> {
        Ok(sqlx::query(
            "SELECT id FROM chunks WHERE collection_id = ? ORDER BY document_id, page, char_start, id",
        )
        .bind(collection_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect())
    }

    /// Every chunk id currently stored (for consistency checks).
    pub async fn all_chunk_ids(&self) -> Result<Vec<i64>, CatalogError> {
        Ok(sqlx::query("SELECT id FROM chunks ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Starts an ingest run; returns its id.
    pub async fn start_run(&self, collection_id: i64) -> Result<i64, CatalogError> {
        sqlx::query("UPDATE ingest_runs SET status = 'interrupted' WHERE status = 'running' AND collection_id = ?")
            .bind(collection_id)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query("INSERT INTO ingest_runs (collection_id, started_at, status) VALUES (?, ?, 'running') RETURNING id")
            .bind(collection_id)
            .bind(now())
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    /// Finishes an ingest run with its counts.
    pub async fn finish_run(&self, run_id: i64, counts: [i64; 5]) -> Result<(), CatalogError> {
        sqlx::query(
            "UPDATE ingest_runs SET finished_at = ?, added = ?, updated = ?, unchanged = ?, removed = ?, failed = ?, status = 'done' WHERE id = ?",
        )
        .bind(now())
        .bind(counts[0])
        .bind(counts[1])
        .bind(counts[2])
        .bind(counts[3])
        .bind(counts[4])
        .bind(run_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The underlying pool, for modules that keep their own tables.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}
