//! Benchmarks (`kura bench …`): numbers to compare, never pass/fail tests.

pub mod embed;
pub mod index;
pub mod ingest;
