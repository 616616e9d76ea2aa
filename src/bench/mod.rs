//! Benchmarks (`kura bench …`): numbers to compare, never pass/fail tests.

pub mod generate;
pub mod index;
