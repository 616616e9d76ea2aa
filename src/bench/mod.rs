//! Benchmarks (`kura bench …`): numbers to compare, never pass/fail tests.

pub mod embed;
pub mod generate;
pub mod index;
pub mod ingest;
pub mod train;
