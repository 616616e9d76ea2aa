//! Builds the IPADIC dictionary that lindera embeds into Kura, without a network.
//!
//! `lindera-ipadic`'s build script downloads the MeCab IPADIC sources from the
//! internet, which is impossible on Kura's build machines and in CI. It has an
//! offline path: when `LINDERA_BUILD_DICTIONARY_CACHE_DIR/<version>-fmt<N>/lindera-ipadic/`
//! already holds a built dictionary whose `metadata.json` declares the current
//! format version, it embeds that and downloads nothing. This tool fills that
//! directory from Debian's `mecab-ipadic` package (the same IPADIC 2.7.0, in
//! EUC-JP), using lindera's own `DictionaryBuilder` and the `metadata.json` that
//! ships with the `lindera-ipadic` crate, so the result is byte-for-byte the
//! format lindera expects.
//!
//! Usage (the wrapper `installer/build-ipadic` finds every argument):
//!
//! ```text
//! ipadic-builder SOURCE_DIR METADATA_JSON CACHE_DIR IPADIC_CRATE_VERSION
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use lindera_dictionary::builder::DictionaryBuilder;
use lindera_dictionary::dictionary::metadata::{Metadata, DICTIONARY_FORMAT_VERSION};

/// Decodes a MeCab source file: UTF-8 if it is valid UTF-8, else EUC-JP
/// (Debian ships IPADIC in EUC-JP, one file re-encoded later as UTF-8).
fn decode_source(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => encoding_rs::EUC_JP.decode(bytes).0.into_owned(),
    }
}

/// Copies the MeCab sources into `dst`, re-encoded as UTF-8.
fn convert_sources(src: &Path, dst: &Path) -> Result<usize> {
    fs::create_dir_all(dst)?;
    let mut count = 0;
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        if ext != "csv" && ext != "def" {
            continue;
        }
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.file_name().expect("file has a name");
        fs::write(dst.join(name), decode_source(&bytes))?;
        count += 1;
    }
    Ok(count)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, metadata, cache, version] = args.as_slice() else {
        bail!("usage: ipadic-builder SOURCE_DIR METADATA_JSON CACHE_DIR IPADIC_CRATE_VERSION");
    };
    let cache = PathBuf::from(cache);
    if !cache.is_absolute() {
        bail!(
            "the cache directory must be an absolute path: {}",
            cache.display()
        );
    }
    let build_dir = cache.join(format!("{version}-fmt{DICTIONARY_FORMAT_VERSION}"));
    let output = build_dir.join("lindera-ipadic");
    if output.join("metadata.json").is_file() {
        println!("IPADIC dictionary already built: {}", output.display());
        return Ok(());
    }

    let utf8_sources = build_dir.join("mecab-ipadic-utf8");
    let n = convert_sources(Path::new(source), &utf8_sources)?;
    if n < 20 {
        bail!("{source} holds only {n} MeCab source files: is it mecab-ipadic's dic/ipadic?");
    }
    let metadata_json =
        fs::read_to_string(metadata).with_context(|| format!("reading {metadata}"))?;
    let metadata: Metadata = serde_json::from_str(&metadata_json)?;

    // Build into a temporary directory and rename, so an interrupted build never
    // leaves a half-written dictionary that lindera would trust.
    let tmp = build_dir.join("tmp-output-lindera-ipadic");
    let _ = fs::remove_dir_all(&tmp);
    DictionaryBuilder::new(metadata)
        .build_dictionary(&utf8_sources, &tmp)
        .map_err(|e| anyhow::anyhow!("building the dictionary: {e}"))?;
    fs::rename(&tmp, &output)?;
    fs::remove_dir_all(&utf8_sources)?;
    println!("IPADIC dictionary built: {}", output.display());
    Ok(())
}
