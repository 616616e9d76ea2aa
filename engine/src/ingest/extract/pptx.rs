//! PPTX (PowerPoint 2007+): one page per slide, in presentation order.
//!
//! Slides are cited by number, so slide order comes from `ppt/presentation.xml`
//! (`sldIdLst`), not from part names (`slide10.xml` sorts before `slide2.xml`, and slides
//! get reordered). Paragraphs are lines, table cells tabs; speaker notes, which often hold
//! the actual explanation, follow the slide text under a `[ノート]` line.

use super::ooxml::{prefixed_attr, walk, Package, XmlEvent};
use super::{Ctx, Fail, RawDocument};

/// Extracts a PPTX package.
pub(crate) fn extract(bytes: &[u8], ctx: &Ctx) -> Result<RawDocument, Fail> {
    let mut pkg = Package::open(bytes, ctx)?;
    let presentation = pkg.require("ppt/presentation.xml")?;
    let rels = pkg.relationships("ppt/presentation.xml", ctx)?;
    let mut slides: Vec<String> = Vec::new();
    walk(&presentation, ctx, |ev| {
        if let XmlEvent::Open {
            name: "sldId",
            attrs,
        } = ev
        {
            if let Some(target) = prefixed_attr(attrs, "id").and_then(|id| rels.get(id)) {
                slides.push(target.clone());
            }
        }
    })?;
    let mut doc = RawDocument {
        pages: Vec::new(),
        extractor: "pptx",
        warnings: Vec::new(),
    };
    for (i, part) in slides.iter().enumerate() {
        ctx.check()?;
        let number = i as u32 + 1;
        let Some(xml) = pkg.read(part)? else {
            doc.warnings
                .push(format!("slide {number}: part {part} is missing"));
            doc.pages.push((number, String::new()));
            continue;
        };
        let mut text = drawing_text(&xml, ctx)?;
        let notes = pkg
            .relationships(part, ctx)?
            .into_values()
            .find(|t| t.contains("notesSlide"));
        if let Some(notes_part) = notes {
            if let Some(notes_xml) = pkg.read(&notes_part)? {
                let notes_text = drawing_text(&notes_xml, ctx)?;
                // Notes pages repeat the slide number placeholder; keep real notes only.
                if notes_text.trim().chars().any(|c| !c.is_ascii_digit()) {
                    text.push_str("[ノート]\n");
                    text.push_str(&notes_text);
                }
            }
        }
        doc.pages.push((number, text));
    }
    Ok(doc)
}

/// Text of DrawingML paragraphs (`a:p`/`a:t`), tables as tab-separated rows.
fn drawing_text(xml: &str, ctx: &Ctx) -> Result<String, Fail> {
    let mut out = String::new();
    let mut in_t = false;
    walk(xml, ctx, |ev| match ev {
        XmlEvent::Open { name, .. } => match name {
            "t" => in_t = true,
            "br" => out.push('\n'),
            _ => {}
        },
        XmlEvent::Close { name } => match name {
            "t" => in_t = false,
            "p" => out.push('\n'),
            "tc" => {
                while out.ends_with('\n') {
                    out.pop();
                }
                out.push('\t');
            }
            "tr" => {
                if out.ends_with('\t') {
                    out.pop();
                }
                out.push('\n');
            }
            _ => {}
        },
        XmlEvent::Text(t) => {
            if in_t {
                out.push_str(t);
            }
        }
    })?;
    Ok(out)
}
