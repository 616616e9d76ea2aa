//! Kura (蔵): a private AI appliance that runs on one workstation with no network.
//!
//! The engine is this library: every product action lives here. The front ends are
//! crates of their own — the `kura` command, the HTTP server (`kura-server`) and the
//! desktop app — and only parse input, call the engine and format its output, so
//! this crate links no argument parser, progress bars or web framework. Data flows
//! ingest → catalog → index → rag → llm, and train → adapters → llm; see
//! `ARCHITECTURE.md` for the map.

pub mod adapters;
pub mod alloc;
pub mod bench;
pub mod catalog;
pub mod embed;
pub mod eval;
pub mod index;
pub mod ingest;
pub mod jobs;
pub mod library;
pub mod llm;
pub(crate) mod matmul;
pub mod models;
pub mod paths;
pub mod pool;
pub mod rag;
pub mod train;

// What every front end starts from, at the crate root.
pub use adapters::AdapterRegistry;
pub use catalog::Catalog;
pub use embed::Embedder;
pub use index::SearchIndex;
pub use jobs::{JobQueue, JobRunner};
pub use library::Library;
pub use llm::{DeviceChoice, Llm};
pub use models::Registry;
pub use paths::Paths;
pub use pool::ModelPool;
