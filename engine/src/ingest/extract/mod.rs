//! Text extraction, one file per format, behind one function: [`extract`].
//!
//! Why it is shaped like this:
//!
//! - **Type by content first.** Users rename files; a PDF called `report.bin` is still a
//!   PDF and an executable called `notes.txt` must not be indexed as text. [`Format`] is
//!   detected from magic bytes (and, for ZIP containers, from the part names inside) before
//!   the extension is consulted.
//! - **Isolation.** Parsers of hostile formats panic (pdf-extract has dozens of
//!   `panic!`/`todo!` sites and panics on common Japanese PDFs), loop, or recurse deeply.
//!   Every extractor runs on its own worker thread with a large stack, under
//!   [`std::panic::catch_unwind`], with a cooperative deadline checked between pages, rows
//!   and XML events, and a wall-clock wait of [`Limits::timeout`]: a panic becomes
//!   [`ExtractError::Panicked`], a runaway parse [`ExtractError::TimedOut`], and the ingest
//!   goes on with the next file.
//! - **Bombs are refused before inflating.** DOCX/XLSX/PPTX are ZIP files; their declared
//!   sizes, entry count and compression ratios are checked against [`Limits`] before any
//!   entry is decompressed, and reads are capped so lying headers cannot get past either.
//! - **Pages are kept.** Citations point at pages: PDFs keep their page numbers, PPTX has a
//!   page per slide, XLSX a page per sheet, DOCX splits at explicit page breaks; everything
//!   else is page 1.
//! - **Quality travels with the text.** Each page is assessed by [`quality`](super::quality)
//!   on the raw text and then NFKC-normalized (see [`normalize`](super::normalize)).
//! - **Errors a user can act on.** [`ExtractError`] names the file and says what to do, in
//!   English with a Japanese hint.

mod detect;
mod docx;
mod html;
mod markdown;
mod ooxml;
mod pdf;
mod pdf_fallback;
mod pptx;
mod text;
mod xlsx;

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::normalize::{normalize_pdf_text, normalize_text};
use super::quality::{assess, PageQuality};

pub use detect::Format;

/// Text of one document, page by page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedDocument {
    /// Pages in order; numbers start at 1.
    pub pages: Vec<Page>,
    /// Which extractor produced the text, e.g. `"pdf-extract"`, `"pdf-lopdf"`,
    /// `"pdf-extract+lopdf"` (mixed per page), `"docx"`, `"text/shift_jis"`.
    pub extractor: &'static str,
    /// Things the user may want to know that did not stop extraction (a page that needed
    /// the fallback PDF decoder, a sheet that could not be read, ...).
    pub warnings: Vec<String>,
}

impl ExtractedDocument {
    /// All page texts joined by blank lines (handy for tests and previews).
    pub fn full_text(&self) -> String {
        let texts: Vec<&str> = self.pages.iter().map(|p| p.text.as_str()).collect();
        texts.join("\n\n")
    }
}

/// One page (PDF page, slide, sheet, or the whole of a non-paginated document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// 1-based page number as a reader would cite it.
    pub number: u32,
    /// NFKC-normalized text with line structure kept (table cells are tab-separated).
    pub text: String,
    /// Whether the text is usable (assessed before normalization).
    pub quality: PageQuality,
}

/// Resource limits for one extraction.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest file accepted, in bytes.
    pub max_file_bytes: u64,
    /// Largest total uncompressed size of the parts of a ZIP-based document.
    pub max_uncompressed_bytes: u64,
    /// Most entries a ZIP-based document may have.
    pub max_zip_entries: usize,
    /// Highest uncompressed/compressed ratio allowed for a ZIP entry larger than 1 MiB.
    pub max_compression_ratio: u64,
    /// Wall-clock budget for one file; extraction past it fails with
    /// [`ExtractError::TimedOut`].
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 256 << 20,
            max_uncompressed_bytes: 512 << 20,
            max_zip_entries: 20_000,
            max_compression_ratio: 200,
            timeout: Duration::from_secs(120),
        }
    }
}

/// Why a file could not be extracted. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The file could not be read from disk.
    #[error("{path}: cannot read the file: {source} (ファイルを読み込めません)")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has no bytes.
    #[error("{path}: the file is empty (空のファイルです)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file exceeds [`Limits::max_file_bytes`].
    #[error("{path}: the file is {size} bytes, over the limit of {limit} bytes; split it or raise the limit (ファイルが大きすぎます)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The format is recognised but not supported.
    #[error("{path}: unsupported file type: {what} (対応していない形式です)")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What it is and what to do, e.g. "legacy Word .doc; save it as .docx".
        what: String,
    },
    /// The file is binary data, not a document (e.g. an executable renamed `.txt`).
    #[error("{path}: this is binary data ({what}), not a text document (テキストではないバイナリファイルです)")]
    Binary {
        /// The file.
        path: PathBuf,
        /// What the bytes look like.
        what: String,
    },
    /// The document is password-protected.
    #[error("{path}: the document is encrypted (password-protected); remove the password and add it again (パスワード保護を解除してから登録してください)")]
    Encrypted {
        /// The file.
        path: PathBuf,
    },
    /// The file is damaged or truncated.
    #[error("{path}: the file is corrupt or truncated: {detail}; re-export or re-download it (ファイルが壊れています)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// A ZIP-based document (DOCX/XLSX/PPTX) would inflate beyond [`Limits`].
    #[error(
        "{path}: refused as a possible zip bomb: {detail} (圧縮爆弾の可能性があるため処理しません)"
    )]
    ZipBomb {
        /// The file.
        path: PathBuf,
        /// Which limit was hit.
        detail: String,
    },
    /// The extractor panicked; the message is the panic's.
    #[error("{path}: the extractor crashed on this file: {message}; please report it with the file (抽出処理が異常終了しました)")]
    Panicked {
        /// The file.
        path: PathBuf,
        /// The panic message.
        message: String,
    },
    /// Extraction took longer than [`Limits::timeout`].
    #[error("{path}: extraction took longer than {seconds} s and was abandoned (処理がタイムアウトしました)")]
    TimedOut {
        /// The file.
        path: PathBuf,
        /// The timeout in seconds.
        seconds: u64,
    },
}

impl ExtractError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ExtractError::Io { path, .. }
            | ExtractError::Empty { path }
            | ExtractError::TooLarge { path, .. }
            | ExtractError::Unsupported { path, .. }
            | ExtractError::Binary { path, .. }
            | ExtractError::Encrypted { path }
            | ExtractError::Corrupt { path, .. }
            | ExtractError::ZipBomb { path, .. }
            | ExtractError::Panicked { path, .. }
            | ExtractError::TimedOut { path, .. } => path,
        }
    }
}

/// Failure inside an extractor, before the path is attached.
#[derive(Debug)]
pub(crate) enum Fail {
    Empty,
    Unsupported(String),
    Binary(String),
    Encrypted,
    Corrupt(String),
    ZipBomb(String),
    Panicked(String),
    TimedOut,
}

impl Fail {
    fn at(self, path: &Path, limits: &Limits) -> ExtractError {
        let path = path.to_path_buf();
        match self {
            Fail::Empty => ExtractError::Empty { path },
            Fail::Unsupported(what) => ExtractError::Unsupported { path, what },
            Fail::Binary(what) => ExtractError::Binary { path, what },
            Fail::Encrypted => ExtractError::Encrypted { path },
            Fail::Corrupt(detail) => ExtractError::Corrupt { path, detail },
            Fail::ZipBomb(detail) => ExtractError::ZipBomb { path, detail },
            Fail::Panicked(message) => ExtractError::Panicked { path, message },
            Fail::TimedOut => ExtractError::TimedOut {
                path,
                seconds: limits.timeout.as_secs(),
            },
        }
    }
}

/// What an extractor returns: raw (un-normalized) page texts.
#[derive(Debug)]
pub(crate) struct RawDocument {
    /// `(page number, raw text)`.
    pub pages: Vec<(u32, String)>,
    pub extractor: &'static str,
    pub warnings: Vec<String>,
}

impl RawDocument {
    /// A non-paginated document: everything is page 1.
    fn single(text: String, extractor: &'static str) -> Self {
        RawDocument {
            pages: vec![(1, text)],
            extractor,
            warnings: Vec::new(),
        }
    }
}

/// Limits and deadline handed to extractors, which call [`Ctx::check`] in their loops.
pub(crate) struct Ctx {
    pub limits: Limits,
    deadline: Instant,
}

impl Ctx {
    fn new(limits: &Limits) -> Self {
        Ctx {
            limits: limits.clone(),
            deadline: Instant::now() + limits.timeout,
        }
    }

    /// Fails once the deadline has passed.
    pub fn check(&self) -> Result<(), Fail> {
        if Instant::now() > self.deadline {
            Err(Fail::TimedOut)
        } else {
            Ok(())
        }
    }
}

/// Extracts the text of the file at `path`, page by page.
///
/// The type is detected from the content first and the extension second; see the module
/// docs for the isolation and limits that apply.
pub fn extract(path: &Path, limits: &Limits) -> Result<ExtractedDocument, ExtractError> {
    let io = |source| ExtractError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > limits.max_file_bytes {
        return Err(ExtractError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: limits.max_file_bytes,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    extract_owned(bytes, path, None, limits)
}

/// Extracts text from bytes already in memory; `name` supplies the extension hint and the
/// path used in errors.
pub fn extract_bytes(
    bytes: &[u8],
    name: &Path,
    limits: &Limits,
) -> Result<ExtractedDocument, ExtractError> {
    extract_owned(bytes.to_vec(), name, None, limits)
}

/// Extracts `bytes` as the given format, skipping detection (except for the empty-file
/// check). This is the entry point of the fuzz targets: whatever the bytes, it returns
/// `Ok` or `Err`, never panics.
pub fn extract_format(
    format: Format,
    bytes: &[u8],
    limits: &Limits,
) -> Result<ExtractedDocument, ExtractError> {
    let name = PathBuf::from(format!("<memory>.{}", format.extension()));
    extract_owned(bytes.to_vec(), &name, Some(format), limits)
}

fn extract_owned(
    bytes: Vec<u8>,
    path: &Path,
    forced: Option<Format>,
    limits: &Limits,
) -> Result<ExtractedDocument, ExtractError> {
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(ExtractError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit: limits.max_file_bytes,
        });
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let ctx = Ctx::new(limits);
    let result = run_isolated(limits.timeout, move || {
        if bytes.is_empty() {
            return Err(Fail::Empty);
        }
        let format = match forced {
            Some(format) => format,
            None => detect::detect(&bytes, ext.as_deref())?,
        };
        let raw = run_format(format, &bytes, &ctx)?;
        Ok(finish(raw, format == Format::Pdf))
    });
    result.map_err(|fail| fail.at(path, limits))
}

fn run_format(format: Format, bytes: &[u8], ctx: &Ctx) -> Result<RawDocument, Fail> {
    match format {
        Format::Pdf => pdf::extract(bytes, ctx),
        Format::Docx => docx::extract(bytes, ctx),
        Format::Xlsx => xlsx::extract(bytes, ctx),
        Format::Pptx => pptx::extract(bytes, ctx),
        Format::Html => html::extract(bytes, ctx),
        Format::Markdown => markdown::extract(bytes, ctx),
        Format::Text => text::extract(bytes, ctx),
    }
}

/// Assesses raw page texts, then normalizes them.
fn finish(raw: RawDocument, is_pdf: bool) -> ExtractedDocument {
    let mut warnings = raw.warnings;
    let pages = raw
        .pages
        .into_iter()
        .map(|(number, text)| {
            let quality = assess(&text);
            if let PageQuality::Garbled { reason } = &quality {
                warnings.push(format!("page {number}: text looks garbled: {reason}"));
            }
            Page {
                number,
                text: if is_pdf {
                    normalize_pdf_text(&text)
                } else {
                    normalize_text(&text)
                },
                quality,
            }
        })
        .collect::<Vec<_>>();
    if !pages.is_empty() && pages.iter().all(|p| p.quality == PageQuality::Empty) {
        warnings.push(
            "no text found: the document may be scanned images (OCR is not supported) \
             / テキストが見つかりません（画像のみの可能性）"
                .to_string(),
        );
    }
    ExtractedDocument {
        pages,
        extractor: raw.extractor,
        warnings,
    }
}

/// Stack for extraction workers: deeply nested PDF objects and XML recurse in parsers,
/// and a stack overflow aborts the process (it is not a panic).
const WORKER_STACK: usize = 64 << 20;

/// Runs `job` on a worker thread under `catch_unwind`, waiting at most `timeout` (plus a
/// grace second for the cooperative deadline to fire inside the job). A job that overruns
/// is abandoned: it stops at its next deadline check, and its thread then exits.
fn run_isolated<T, F>(timeout: Duration, job: F) -> Result<T, Fail>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Fail> + Send + 'static,
{
    quiet_extractor_panics();
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(EXTRACT_THREAD.into())
        .stack_size(WORKER_STACK)
        .spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(job));
            let _ = tx.send(outcome);
        });
    if let Err(e) = spawned {
        return Err(Fail::Panicked(format!(
            "could not start a worker thread: {e}"
        )));
    }
    match rx.recv_timeout(timeout + Duration::from_secs(1)) {
        Ok(Ok(result)) => result,
        Ok(Err(payload)) => Err(Fail::Panicked(panic_message(payload.as_ref()))),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Fail::TimedOut),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(Fail::Panicked("the extraction worker died".into()))
        }
    }
}

/// Name of the extraction worker threads.
const EXTRACT_THREAD: &str = "kura-extract";

/// A panic inside an extractor (pdf-extract has dozens of `panic!` sites) is caught and
/// becomes one failed file with its reason; the default hook would also print a panic
/// message and backtrace to the terminal, which reads like a crash. This hook keeps
/// those to the debug log on extraction threads and leaves every other panic as it was.
fn quiet_extractor_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(EXTRACT_THREAD) {
                tracing::debug!(
                    "extractor panicked (caught, the file is reported as failed): {info}"
                );
            } else {
                previous(info);
            }
        }));
    });
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Runs `f` under `catch_unwind` in the current thread, turning a panic into its message.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()))
}
