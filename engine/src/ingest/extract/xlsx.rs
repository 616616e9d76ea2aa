//! XLSX (Excel 2007+): one page per sheet, rows as tab-separated lines.
//!
//! Company "manuals" in Excel are mostly tables (contact lists, expense limits, checklists),
//! so each sheet becomes a page headed by its name, and each non-empty row a line with
//! cells in their column positions separated by tabs. Shared strings are resolved;
//! phonetic guides (`rPh`, the furigana Excel stores for Japanese cells) are skipped so
//! that readings do not get glued onto the text. Values are shown as stored (dates are
//! serial numbers; number formats are not applied).

use super::ooxml::{attr, prefixed_attr, walk, Package, XmlEvent};
use super::{Ctx, Fail, RawDocument};

/// Extracts an XLSX package.
pub(crate) fn extract(bytes: &[u8], ctx: &Ctx) -> Result<RawDocument, Fail> {
    let mut pkg = Package::open(bytes, ctx)?;
    let workbook = pkg.require("xl/workbook.xml")?;
    let rels = pkg.relationships("xl/workbook.xml", ctx)?;
    let mut sheets: Vec<(String, String)> = Vec::new();
    walk(&workbook, ctx, |ev| {
        if let XmlEvent::Open {
            name: "sheet",
            attrs,
        } = ev
        {
            let name = attr(attrs, "name").unwrap_or("Sheet").to_string();
            if let Some(target) = prefixed_attr(attrs, "id").and_then(|id| rels.get(id)) {
                sheets.push((name, target.clone()));
            }
        }
    })?;
    let shared = match pkg.read("xl/sharedStrings.xml")? {
        Some(xml) => shared_strings(&xml, ctx)?,
        None => Vec::new(),
    };
    let mut doc = RawDocument {
        pages: Vec::new(),
        extractor: "xlsx",
        warnings: Vec::new(),
    };
    for (i, (name, part)) in sheets.into_iter().enumerate() {
        ctx.check()?;
        let number = i as u32 + 1;
        let text = match pkg.read(&part)? {
            Some(xml) => sheet_text(&name, &xml, &shared, ctx)?,
            None => {
                doc.warnings
                    .push(format!("sheet {number} ({name}): part {part} is missing"));
                name.clone()
            }
        };
        doc.pages.push((number, text));
    }
    if doc.pages.is_empty() {
        return Err(Fail::Corrupt("the workbook lists no sheets".into()));
    }
    Ok(doc)
}

/// The shared string table: one entry per `si`, text of its `t` runs minus phonetics.
fn shared_strings(xml: &str, ctx: &Ctx) -> Result<Vec<String>, Fail> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_t = false;
    let mut in_phonetic = 0usize;
    walk(xml, ctx, |ev| match ev {
        XmlEvent::Open { name, .. } => match name {
            "si" => current.clear(),
            "rPh" | "phoneticPr" => in_phonetic += 1,
            "t" => in_t = true,
            _ => {}
        },
        XmlEvent::Close { name } => match name {
            "si" => out.push(std::mem::take(&mut current)),
            "rPh" | "phoneticPr" => in_phonetic = in_phonetic.saturating_sub(1),
            "t" => in_t = false,
            _ => {}
        },
        XmlEvent::Text(t) => {
            if in_t && in_phonetic == 0 {
                current.push_str(t);
            }
        }
    })?;
    Ok(out)
}

/// Column index (0-based) of a cell reference like `AB12`.
fn column_of(reference: &str) -> Option<usize> {
    let mut col = 0usize;
    let mut any = false;
    for c in reference.chars().take_while(char::is_ascii_alphabetic) {
        col = col
            .checked_mul(26)?
            .checked_add((c.to_ascii_uppercase() as u8 - b'A') as usize + 1)?;
        any = true;
    }
    (any && col <= 16_384).then(|| col - 1)
}

/// One sheet as text: its name, then one tab-separated line per non-empty row.
fn sheet_text(name: &str, xml: &str, shared: &[String], ctx: &Ctx) -> Result<String, Fail> {
    let mut out = format!("{name}\n");
    let mut row: Vec<String> = Vec::new();
    let mut cell_type = String::new();
    let mut cell_col: Option<usize> = None;
    let mut value = String::new();
    let mut in_value = false;
    let mut in_phonetic = 0usize;
    walk(xml, ctx, |ev| match ev {
        XmlEvent::Open { name, attrs } => match name {
            "row" => row.clear(),
            "c" => {
                cell_type = attr(attrs, "t").unwrap_or("n").to_string();
                cell_col = attr(attrs, "r").and_then(column_of);
                value.clear();
            }
            "v" | "t" => in_value = true,
            "rPh" => in_phonetic += 1,
            _ => {}
        },
        XmlEvent::Close { name } => match name {
            "v" | "t" => in_value = false,
            "rPh" => in_phonetic = in_phonetic.saturating_sub(1),
            "c" => {
                let text = match cell_type.as_str() {
                    "s" => value
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| shared.get(i).cloned())
                        .unwrap_or_default(),
                    "b" => if value.trim() == "1" { "TRUE" } else { "FALSE" }.to_string(),
                    _ => value.clone(),
                };
                let col = cell_col.unwrap_or(row.len());
                if col >= row.len() {
                    row.resize(col + 1, String::new());
                }
                // Cell text on one line: in-cell line breaks become spaces.
                row[col] = text.replace(['\r', '\n', '\t'], " ");
            }
            "row" => {
                while row.last().is_some_and(|c| c.trim().is_empty()) {
                    row.pop();
                }
                if !row.is_empty() {
                    out.push_str(&row.join("\t"));
                    out.push('\n');
                }
                row.clear();
            }
            _ => {}
        },
        XmlEvent::Text(t) => {
            if in_value && in_phonetic == 0 {
                value.push_str(t);
            }
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_references_map_to_columns() {
        assert_eq!(column_of("A1"), Some(0));
        assert_eq!(column_of("C7"), Some(2));
        assert_eq!(column_of("AA10"), Some(26));
        assert_eq!(column_of("12"), None);
    }
}
