//! Kura (蔵): a private AI appliance that runs on one workstation with no network.
//!
//! The engine is this library; the `kura` binary (`src/main.rs` → [`cli`]), the HTTP
//! server and the desktop shell only wire its modules together. Data flows
//! ingest → catalog → index → rag → llm, and train → adapters → llm; see
//! `ARCHITECTURE.md` for the map.

pub mod adapters;
pub mod alloc;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod embed;
pub mod eval;
pub mod index;
pub mod ingest;
pub mod jobs;
pub mod llm;
pub mod matmul;
pub mod models;
pub mod paths;
pub mod rag;
pub mod server;
pub mod train;
