//! DOCX (Word 2007+): paragraphs as lines, table cells as tabs, pages at explicit breaks.
//!
//! Word does not store pagination; only page breaks the author inserted (`<w:br
//! w:type="page"/>`, "page break before" on a paragraph) are known, so those split pages
//! and a document without them is page 1. Deleted revisions (`w:delText`), field codes
//! (`w:instrText`) and furigana (`w:rt` inside `w:ruby`) are not visible body text and are
//! skipped.

use super::ooxml::{attr, walk, Package, XmlEvent};
use super::{Ctx, Fail, RawDocument};

/// Extracts a DOCX package.
pub(crate) fn extract(bytes: &[u8], ctx: &Ctx) -> Result<RawDocument, Fail> {
    let mut pkg = Package::open(bytes, ctx)?;
    let main = main_part(&mut pkg, ctx)?;
    let xml = pkg.require(&main)?;
    let pages = document_pages(&xml, ctx)?;
    Ok(RawDocument {
        pages: pages
            .into_iter()
            .enumerate()
            .map(|(i, t)| (i as u32 + 1, t))
            .collect(),
        extractor: "docx",
        warnings: Vec::new(),
    })
}

/// The main document part named by the package relationships (usually `word/document.xml`).
fn main_part(pkg: &mut Package<'_>, ctx: &Ctx) -> Result<String, Fail> {
    let rels = pkg.relationships("", ctx)?;
    // The officeDocument relationship id is not fixed; pick the target under word/.
    let from_rels = rels
        .values()
        .find(|t| t.starts_with("word/") && t.ends_with(".xml"))
        .cloned();
    Ok(match from_rels {
        Some(t) if pkg.has(&t) => t,
        _ => "word/document.xml".to_string(),
    })
}

/// Splits `word/document.xml` into pages of text.
fn document_pages(xml: &str, ctx: &Ctx) -> Result<Vec<String>, Fail> {
    let mut pages = vec![String::new()];
    let mut in_text = false;
    let mut skip_depth = 0usize;
    let mut in_ppr = false;
    walk(xml, ctx, |ev| match ev {
        XmlEvent::Open { name, attrs } => match name {
            "delText" | "instrText" | "rt" | "fldData" => skip_depth += 1,
            "t" if skip_depth == 0 => in_text = true,
            "pPr" => in_ppr = true,
            "pageBreakBefore" if in_ppr => {
                let on = attr(attrs, "val").is_none_or(|v| v != "0" && v != "false");
                if on {
                    let page = pages.last_mut().expect("at least one page");
                    if !page.trim().is_empty() {
                        pages.push(String::new());
                    }
                }
            }
            "br" => {
                if attr(attrs, "type") == Some("page") {
                    pages.push(String::new());
                } else {
                    push(&mut pages, "\n");
                }
            }
            "cr" => push(&mut pages, "\n"),
            "tab" if !in_ppr => push(&mut pages, "\t"),
            _ => {}
        },
        XmlEvent::Close { name } => match name {
            "delText" | "instrText" | "rt" | "fldData" => skip_depth = skip_depth.saturating_sub(1),
            "t" => in_text = false,
            "pPr" => in_ppr = false,
            "p" => push(&mut pages, "\n"),
            "tc" => {
                let page = pages.last_mut().expect("at least one page");
                while page.ends_with('\n') {
                    page.pop();
                }
                page.push('\t');
            }
            "tr" => {
                let page = pages.last_mut().expect("at least one page");
                if page.ends_with('\t') {
                    page.pop();
                }
                page.push('\n');
            }
            _ => {}
        },
        XmlEvent::Text(t) => {
            if in_text && skip_depth == 0 {
                push(&mut pages, t);
            }
        }
    })?;
    while pages.len() > 1 && pages.last().is_some_and(|p| p.trim().is_empty()) {
        pages.pop();
    }
    Ok(pages)
}

fn push(pages: &mut [String], s: &str) {
    if let Some(page) = pages.last_mut() {
        page.push_str(s);
    }
}
