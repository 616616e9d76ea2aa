//! Shared plumbing for the Office Open XML formats (DOCX, XLSX, PPTX).
//!
//! They are ZIP packages of XML parts, which makes them the natural carrier of zip bombs: a
//! few kilobytes that claim, or really inflate to, gigabytes. [`Package::open`] checks the
//! central directory — entry count, total declared uncompressed size, per-entry ratio —
//! against [`Limits`](super::Limits) **before anything is inflated**, and
//! [`Package::read`] caps every read at the declared size and the remaining budget, so a
//! header that lies is caught while inflating too. Parts are then walked with `quick-xml`
//! as a flat stream of [`XmlEvent`]s.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};

use super::{Ctx, Fail};

/// Entries above this size must respect the compression-ratio limit; smaller ones may be
/// arbitrarily compressible (a repetitive styles part is harmless at 100 KiB).
const RATIO_CHECK_FLOOR: u64 = 1 << 20;

/// A ZIP package opened within the limits.
pub(crate) struct Package<'a> {
    archive: zip::ZipArchive<Cursor<&'a [u8]>>,
    /// Bytes that may still be inflated.
    budget: u64,
}

impl<'a> Package<'a> {
    /// Opens the package and checks its central directory against the limits.
    pub fn open(bytes: &'a [u8], ctx: &Ctx) -> Result<Self, Fail> {
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| Fail::Corrupt(format!("damaged ZIP package: {e}")))?;
        let limits = &ctx.limits;
        if archive.len() > limits.max_zip_entries {
            return Err(Fail::ZipBomb(format!(
                "{} entries, more than the limit of {}",
                archive.len(),
                limits.max_zip_entries
            )));
        }
        let mut total: u64 = 0;
        for i in 0..archive.len() {
            let entry = archive
                .by_index_raw(i)
                .map_err(|e| Fail::Corrupt(format!("damaged ZIP entry {i}: {e}")))?;
            let size = entry.size();
            let packed = entry.compressed_size().max(1);
            if size > RATIO_CHECK_FLOOR && size / packed > limits.max_compression_ratio {
                return Err(Fail::ZipBomb(format!(
                    "entry {:?} claims {size} bytes from {packed} (ratio {} > {})",
                    entry.name(),
                    size / packed,
                    limits.max_compression_ratio
                )));
            }
            total = total.saturating_add(size);
            if total > limits.max_uncompressed_bytes {
                return Err(Fail::ZipBomb(format!(
                    "uncompressed size over {} bytes (limit {})",
                    total, limits.max_uncompressed_bytes
                )));
            }
        }
        Ok(Package {
            archive,
            budget: limits.max_uncompressed_bytes,
        })
    }

    /// Whether a part exists.
    pub fn has(&self, name: &str) -> bool {
        self.archive.index_for_name(name).is_some()
    }

    /// Reads a part as text (UTF-8, or UTF-16 with a BOM); `None` if it does not exist.
    pub fn read(&mut self, name: &str) -> Result<Option<String>, Fail> {
        let Some(index) = self.archive.index_for_name(name) else {
            return Ok(None);
        };
        let entry = self.archive.by_index(index).map_err(|e| match e {
            zip::result::ZipError::UnsupportedArchive(m) if m.contains("assword") => {
                Fail::Encrypted
            }
            e => Fail::Corrupt(format!("cannot open part {name}: {e}")),
        })?;
        let declared = entry.size();
        let cap = declared.min(self.budget);
        let mut data = Vec::with_capacity(cap.min(64 << 20) as usize);
        entry
            .take(cap + 1)
            .read_to_end(&mut data)
            .map_err(|e| Fail::Corrupt(format!("cannot inflate part {name}: {e}")))?;
        if data.len() as u64 > cap {
            return Err(Fail::ZipBomb(format!(
                "part {name} inflates beyond its declared size or the size limit"
            )));
        }
        self.budget -= data.len() as u64;
        Ok(Some(decode_xml_bytes(&data)))
    }

    /// Reads a part that must exist.
    pub fn require(&mut self, name: &str) -> Result<String, Fail> {
        self.read(name)?
            .ok_or_else(|| Fail::Corrupt(format!("missing part {name}")))
    }

    /// The relationships of `part` (`word/document.xml` → `word/_rels/document.xml.rels`):
    /// id → absolute part name.
    pub fn relationships(
        &mut self,
        part: &str,
        ctx: &Ctx,
    ) -> Result<HashMap<String, String>, Fail> {
        let (dir, file) = part.rsplit_once('/').unwrap_or(("", part));
        let rels_name = if dir.is_empty() {
            format!("_rels/{file}.rels")
        } else {
            format!("{dir}/_rels/{file}.rels")
        };
        let mut map = HashMap::new();
        let Some(xml) = self.read(&rels_name)? else {
            return Ok(map);
        };
        walk(&xml, ctx, |ev| {
            if let XmlEvent::Open { name, attrs } = ev {
                if name == "Relationship" {
                    let id = attr(attrs, "Id");
                    let target = attr(attrs, "Target");
                    let external = attr(attrs, "TargetMode").is_some_and(|m| m == "External");
                    if let (Some(id), Some(target), false) = (id, target, external) {
                        map.insert(id.to_string(), resolve(dir, target));
                    }
                }
            }
        })?;
        Ok(map)
    }
}

/// Resolves a relationship target against the source part's directory.
fn resolve(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if let Some(abs) = target.strip_prefix('/') {
        return abs.to_string();
    } else if dir.is_empty() {
        Vec::new()
    } else {
        dir.split('/').collect()
    };
    for seg in target.split('/') {
        match seg {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

fn decode_xml_bytes(data: &[u8]) -> String {
    match encoding_rs::Encoding::for_bom(data) {
        Some((encoding, bom)) => encoding
            .decode_without_bom_handling(&data[bom..])
            .0
            .into_owned(),
        None => String::from_utf8_lossy(data).into_owned(),
    }
}

/// A simplified XML event: element names are local names (prefix dropped).
pub(crate) enum XmlEvent<'a> {
    /// Start tag (also emitted for empty elements, followed by `Close`).
    Open {
        /// Local name.
        name: &'a str,
        /// Attributes as (qualified name, unescaped value); see [`attr`].
        attrs: &'a [(String, String)],
    },
    /// End tag.
    Close {
        /// Local name.
        name: &'a str,
    },
    /// Character data (unescaped).
    Text(&'a str),
}

/// The value of attribute `key` (local name; an unprefixed attribute wins over a prefixed
/// one).
pub(crate) fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .or_else(|| attrs.iter().find(|(k, _)| local(k) == key))
        .map(|(_, v)| v.as_str())
}

/// The value of a *prefixed* attribute with local name `key`, such as the relationship id
/// `r:id` (which must not be confused with a plain `id` on the same element).
pub(crate) fn prefixed_attr<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k.contains(':') && local(k) == key)
        .map(|(_, v)| v.as_str())
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Walks `xml`, calling `f` for each event; checks the deadline as it goes. Malformed XML
/// is reported as a corrupt file.
pub(crate) fn walk(xml: &str, ctx: &Ctx, mut f: impl FnMut(XmlEvent<'_>)) -> Result<(), Fail> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_end_names = false;
    let mut count = 0usize;
    let mut attrs: Vec<(String, String)> = Vec::new();
    loop {
        count += 1;
        if count.is_multiple_of(8192) {
            ctx.check()?;
        }
        let event = reader
            .read_event()
            .map_err(|e| Fail::Corrupt(format!("malformed XML: {e}")))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                attrs.clear();
                for a in e.attributes().flatten() {
                    let value = a
                        .normalized_value(XmlVersion::Implicit1_0)
                        .map(|v| v.into_owned())
                        .unwrap_or_default();
                    attrs.push((a.key.as_ref().to_string(), value));
                }
                let name = local(e.name().as_ref()).to_string();
                f(XmlEvent::Open {
                    name: &name,
                    attrs: &attrs,
                });
                if matches!(event, Event::Empty(_)) {
                    f(XmlEvent::Close { name: &name });
                }
            }
            Event::End(ref e) => {
                let name = local(e.name().as_ref()).to_string();
                f(XmlEvent::Close { name: &name });
            }
            Event::Text(ref t) => f(XmlEvent::Text(&t.xml10_content())),
            Event::CData(ref t) => f(XmlEvent::Text(&t.xml10_content())),
            Event::GeneralRef(ref r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    _ => match r.xml10_content().as_ref() {
                        "amp" => Some('&'),
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        _ => None,
                    },
                };
                if let Some(c) = c {
                    let mut buf = [0u8; 4];
                    f(XmlEvent::Text(c.encode_utf8(&mut buf)));
                }
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationship_targets_resolve() {
        assert_eq!(resolve("ppt", "slides/slide1.xml"), "ppt/slides/slide1.xml");
        assert_eq!(
            resolve("xl", "/xl/worksheets/sheet1.xml"),
            "xl/worksheets/sheet1.xml"
        );
        assert_eq!(
            resolve("ppt/slides", "../notesSlides/n1.xml"),
            "ppt/notesSlides/n1.xml"
        );
    }
}
