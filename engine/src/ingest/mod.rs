//! Ingest: turn a company's files into page-numbered, normalized text.
//!
//! Everything Kura answers is cited back to a document and a page, so the first step of the
//! pipeline (files → **extract** → normalize → chunk → catalog/index) must keep page numbers
//! and must never let one bad file stop an ingest of thousands. This module holds that first
//! step:
//!
//! - [`extract`](extract::extract) reads one file, detects its type by content (magic bytes)
//!   before extension, runs the matching extractor in isolation (a panic or a runaway parse
//!   is one failed file, not a dead server) and returns an [`ExtractedDocument`] or an
//!   [`ExtractError`] that tells the user what to do about the file;
//! - [`quality`] flags pages whose text is missing (scans) or mojibake (broken font maps,
//!   wrong text encodings), so that later stages can skip them and the UI can say so;
//! - [`normalize`] applies NFKC and tidies whitespace while keeping line structure;
//! - [`chunk`] cuts page text into cited passages and [`pipeline`] runs a whole
//!   incremental ingest into the catalog and indexes.
//!
//! ```no_run
//! use kura::ingest::{extract, Limits, PageQuality};
//! let doc = extract(std::path::Path::new("就業規則.pdf"), &Limits::default())?;
//! for page in &doc.pages {
//!     if page.quality == PageQuality::Ok {
//!         println!("p.{}: {}", page.number, page.text);
//!     }
//! }
//! # Ok::<(), kura::ingest::ExtractError>(())
//! ```

pub mod chunk;
pub mod extract;
pub mod normalize;
pub mod pipeline;
pub mod quality;
pub mod roots;

pub use extract::{
    extract, extract_bytes, extract_format, ExtractError, ExtractedDocument, Format, Limits, Page,
};
pub use quality::{assess, PageQuality};
