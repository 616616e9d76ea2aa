//! Fuzz the pptx extractor: any input must give Ok or Err, never a panic, hang or abort.
#![no_main]

use kura::ingest::{extract_format, ExtractError, Format, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        timeout: std::time::Duration::from_secs(10),
        ..Limits::default()
    };
    // Panics are caught inside `extract_format`; one that reaches the top is a bug in
    // Kura's code (third-party panics are contained per page), so make it a crash.
    if let Err(e @ ExtractError::Panicked { .. }) = extract_format(Format::Pptx, data, &limits) {
        panic!("{e}");
    }
});
