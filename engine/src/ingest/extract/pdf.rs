//! PDF: text per page, page numbers kept; pdf-extract first, our lopdf decoder as fallback.
//!
//! pdf-extract gives good reading order for most PDFs, but it panics (or `todo!`s) on
//! fonts it does not know — notably the predefined CJK CMaps (`UniJIS-UCS2-H`,
//! `90ms-RKSJ-H`, ...) that office tools use with non-embedded Japanese fonts — and for
//! fonts without a Unicode map it emits raw glyph codes. So each page is extracted
//! separately: pdf-extract runs under `catch_unwind`; if it panics, errors, or its text
//! fails the [quality gate](crate::ingest::quality), the page is decoded again by
//! [`pdf_fallback`](super::pdf_fallback), which reads the content stream with `lopdf` and
//! decodes strings through the font's ToUnicode CMap or the predefined CMap's own encoding.
//! The better of the two is kept, and a warning says which pages needed the fallback.
//! After a few pdf-extract panics in one file, the rest of the file goes straight to the
//! fallback (each panic costs time and log noise).
//!
//! Encrypted PDFs that open with the empty user password (permissions-only "protection")
//! are decrypted and extracted; any other encrypted PDF is [`Fail::Encrypted`].

use lopdf::Document;

use super::{guarded, pdf_fallback, Ctx, Fail, RawDocument};
use crate::ingest::quality::{assess, PageQuality};

/// pdf-extract panics in one document after which it is no longer tried.
const MAX_PRIMARY_PANICS: usize = 3;

/// Extracts a PDF.
pub(crate) fn extract(bytes: &[u8], ctx: &Ctx) -> Result<RawDocument, Fail> {
    let doc = load(bytes)?;
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(Fail::Corrupt("the PDF has no readable page tree".into()));
    }
    let mut out = RawDocument {
        pages: Vec::with_capacity(pages.len()),
        extractor: "pdf-extract",
        warnings: Vec::new(),
    };
    let mut primary_panics = 0usize;
    let (mut used_primary, mut used_fallback) = (false, false);
    for (&number, &page_id) in &pages {
        ctx.check()?;
        let primary = if primary_panics < MAX_PRIMARY_PANICS {
            match guarded(|| primary_page(&doc, number)) {
                Ok(Ok(text)) => Some(text),
                Ok(Err(e)) => {
                    out.warnings
                        .push(format!("page {number}: pdf-extract failed: {e}"));
                    None
                }
                Err(panic) => {
                    primary_panics += 1;
                    out.warnings
                        .push(format!("page {number}: pdf-extract panicked: {panic}"));
                    None
                }
            }
        } else {
            None
        };
        let primary_quality = primary.as_deref().map(assess);
        if primary_quality == Some(PageQuality::Ok) {
            used_primary = true;
            out.pages.push((number, primary.unwrap_or_default()));
            continue;
        }
        let fallback = match guarded(|| pdf_fallback::page_text(&doc, page_id, ctx)) {
            Ok(Ok(text)) => Some(text),
            Ok(Err(Fail::TimedOut)) => return Err(Fail::TimedOut),
            Ok(Err(e)) => {
                out.warnings
                    .push(format!("page {number}: fallback decoder failed: {e:?}"));
                None
            }
            Err(panic) => {
                out.warnings
                    .push(format!("page {number}: fallback decoder panicked: {panic}"));
                None
            }
        };
        let fallback_quality = fallback.as_deref().map(assess);
        let rank = |q: &Option<PageQuality>| match q {
            Some(PageQuality::Ok) => 3,
            Some(PageQuality::Garbled { .. }) => 2,
            Some(PageQuality::Empty) => 1,
            None => 0,
        };
        if rank(&fallback_quality) > rank(&primary_quality) {
            used_fallback = true;
            if primary.is_some() {
                out.warnings.push(format!(
                    "page {number}: pdf-extract text was {}; used the lopdf decoder",
                    describe(&primary_quality)
                ));
            }
            out.pages.push((number, fallback.unwrap_or_default()));
        } else {
            used_primary |= primary.is_some();
            out.pages.push((number, primary.unwrap_or_default()));
        }
    }
    out.extractor = match (used_primary, used_fallback) {
        (_, false) => "pdf-extract",
        (false, true) => "pdf-lopdf",
        (true, true) => "pdf-extract+lopdf",
    };
    Ok(out)
}

fn describe(q: &Option<PageQuality>) -> String {
    match q {
        Some(PageQuality::Garbled { reason }) => format!("garbled ({reason})"),
        Some(PageQuality::Empty) => "empty".into(),
        _ => "unusable".into(),
    }
}

/// Parses the file and removes permission-only encryption.
fn load(bytes: &[u8]) -> Result<Document, Fail> {
    let mut doc = match guarded(|| Document::load_mem(bytes)) {
        Ok(Ok(doc)) => doc,
        Ok(Err(e)) => return Err(classify(e)),
        Err(panic) => return Err(Fail::Corrupt(format!("PDF parser crashed: {panic}"))),
    };
    if doc.is_encrypted() {
        match guarded(|| doc.decrypt("")) {
            Ok(Ok(())) => {}
            _ => return Err(Fail::Encrypted),
        }
    }
    Ok(doc)
}

fn classify(e: lopdf::Error) -> Fail {
    match e {
        lopdf::Error::Decryption(_) | lopdf::Error::InvalidPassword => Fail::Encrypted,
        e => Fail::Corrupt(format!("cannot parse the PDF: {e}")),
    }
}

/// One page through pdf-extract.
fn primary_page(doc: &Document, number: u32) -> Result<String, pdf_extract::OutputError> {
    let mut text = String::new();
    {
        let mut output = pdf_extract::PlainTextOutput::new(&mut text);
        pdf_extract::output_doc_page(doc, &mut output, number)?;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::Limits;

    /// The fallback decoder alone on real PDFs whose fonts have ToUnicode maps (LibreOffice
    /// TrueType subsets, xdvipdfmx Identity-H CID fonts): it must read them too.
    #[test]
    fn fallback_reads_to_unicode_fonts_of_real_pdfs() {
        let ctx = Ctx::new(&Limits::default());
        let dir = crate::paths::checkout_dir().join("tests/data/ingest");
        for (file, page, words) in [
            (
                "manual-libreoffice.pdf",
                2,
                &["年次有給休暇は、入社", "人事部へ提出すること。"][..],
            ),
            (
                "debian-edu-ja-excerpt.pdf",
                3,
                &["ファイルシステムのアクセス設定", "ホームディレクトリ"][..],
            ),
        ] {
            let doc = load(&std::fs::read(dir.join(file)).unwrap()).unwrap();
            let id = doc.get_pages()[&page];
            let start = std::time::Instant::now();
            let text = pdf_fallback::page_text(&doc, id, &ctx).unwrap();
            eprintln!("{file} p.{page}: fallback {:?}", start.elapsed());
            assert_eq!(assess(&text), PageQuality::Ok, "{text}");
            for w in words {
                assert!(text.contains(w), "{file}: missing {w:?} in\n{text}");
            }
        }
    }
}
