//! File type detection: magic bytes first, extension second.
//!
//! Users rename files and mail systems mangle extensions, so the bytes decide whenever they
//! can: `%PDF-` is a PDF whatever its name; a ZIP is classified by the parts inside it
//! (`word/document.xml`, `xl/workbook.xml`, `ppt/presentation.xml`); known binary formats
//! (images, archives, executables, legacy Office) are refused with a reason. Only text-like
//! content falls back to the extension to choose between HTML, Markdown and plain text, and
//! the text decoder itself refuses bytes that do not decode as text.

use std::io::Cursor;

use super::Fail;

/// A document format Kura can extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// PDF.
    Pdf,
    /// Word 2007+ (Office Open XML).
    Docx,
    /// Excel 2007+ (Office Open XML).
    Xlsx,
    /// PowerPoint 2007+ (Office Open XML).
    Pptx,
    /// HTML.
    Html,
    /// Markdown.
    Markdown,
    /// Plain text in any of the supported encodings.
    Text,
}

impl Format {
    /// All formats.
    pub const ALL: [Format; 7] = [
        Format::Pdf,
        Format::Docx,
        Format::Xlsx,
        Format::Pptx,
        Format::Html,
        Format::Markdown,
        Format::Text,
    ];

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Docx => "docx",
            Format::Xlsx => "xlsx",
            Format::Pptx => "pptx",
            Format::Html => "html",
            Format::Markdown => "md",
            Format::Text => "txt",
        }
    }
}

/// Detects the format of `bytes` (non-empty), using `ext` (lower-case, no dot) as a hint.
pub(crate) fn detect(bytes: &[u8], ext: Option<&str>) -> Result<Format, Fail> {
    let head = &bytes[..bytes.len().min(1024)];
    if find(head, b"%PDF-").is_some() {
        return Ok(Format::Pdf);
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return detect_zip(bytes, ext);
    }
    if bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        // OLE compound file: an encrypted OOXML package, or legacy .doc/.xls/.ppt.
        let marker: Vec<u8> = "EncryptedPackage"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        if find(bytes, &marker).is_some() {
            return Err(Fail::Encrypted);
        }
        return Err(Fail::Unsupported(
            "legacy Office binary format (.doc/.xls/.ppt); save it as .docx/.xlsx/.pptx \
             (新しい形式で保存し直してください)"
                .into(),
        ));
    }
    if let Some(what) = binary_magic(bytes) {
        return Err(Fail::Binary(what.into()));
    }
    match ext {
        Some("pdf") => {
            return Err(Fail::Corrupt(
                "named .pdf but does not start with a %PDF header".into(),
            ))
        }
        Some("docx" | "xlsx" | "pptx") => {
            return Err(Fail::Corrupt(
                "named as an Office document but is not a ZIP package".into(),
            ))
        }
        _ => {}
    }
    let format = match ext {
        Some("html" | "htm" | "xhtml" | "shtml") => Format::Html,
        Some("md" | "markdown" | "mdown" | "mkd") => Format::Markdown,
        _ if looks_like_html(head) => Format::Html,
        _ => Format::Text,
    };
    Ok(format)
}

fn detect_zip(bytes: &[u8], ext: Option<&str>) -> Result<Format, Fail> {
    let by_ext = match ext {
        Some("docx" | "docm" | "dotx") => Some(Format::Docx),
        Some("xlsx" | "xlsm" | "xltx") => Some(Format::Xlsx),
        Some("pptx" | "pptm" | "potx" | "ppsx") => Some(Format::Pptx),
        _ => None,
    };
    let archive = match zip::ZipArchive::new(Cursor::new(bytes)) {
        Ok(archive) => archive,
        Err(e) => {
            // Damaged package: let the extractor named by the extension report it.
            return match by_ext {
                Some(format) => Ok(format),
                None => Err(Fail::Corrupt(format!("damaged ZIP archive: {e}"))),
            };
        }
    };
    let has = |name: &str| archive.index_for_name(name).is_some();
    if has("word/document.xml") {
        return Ok(Format::Docx);
    }
    if has("xl/workbook.xml") {
        return Ok(Format::Xlsx);
    }
    if has("ppt/presentation.xml") {
        return Ok(Format::Pptx);
    }
    if let Some(format) = by_ext {
        // An OOXML package with unusual part names: its [Content_Types].xml decides.
        if has("[Content_Types].xml") {
            return Ok(format);
        }
    }
    if has("mimetype") && has("content.xml") {
        return Err(Fail::Unsupported(
            "OpenDocument (.odt/.ods/.odp); save it as .docx/.xlsx/.pptx or PDF".into(),
        ));
    }
    Err(Fail::Unsupported(
        "ZIP archive; unpack it and add the documents inside (ZIPを展開してください)".into(),
    ))
}

/// Recognises common non-document binary formats by their magic bytes.
fn binary_magic(bytes: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "PNG image; OCR is not supported"),
        (b"\xff\xd8\xff", "JPEG image; OCR is not supported"),
        (b"GIF87a", "GIF image"),
        (b"GIF89a", "GIF image"),
        (b"II*\x00", "TIFF image; OCR is not supported"),
        (b"MM\x00*", "TIFF image; OCR is not supported"),
        (b"\x7fELF", "ELF executable"),
        (b"MZ", "Windows executable"),
        (b"\x1f\x8b", "gzip data"),
        (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
        (b"Rar!\x1a\x07", "RAR archive"),
        (b"BZh", "bzip2 data"),
        (b"\xfd7zXZ\x00", "xz data"),
        (b"\x28\xb5\x2f\xfd", "zstd data"),
        (b"SQLite format 3\x00", "SQLite database"),
        (b"GGUF", "GGUF model file"),
    ];
    MAGIC
        .iter()
        // Two-byte magics also occur at the start of text ("MZ..."): require a NUL byte too.
        .find(|(magic, _)| {
            bytes.starts_with(magic)
                && (magic.len() > 3 || bytes[..bytes.len().min(512)].contains(&0))
        })
        .map(|(_, what)| *what)
}

fn looks_like_html(head: &[u8]) -> bool {
    let start: Vec<u8> = head
        .iter()
        .skip_while(|b| b.is_ascii_whitespace() || **b == 0xEF || **b == 0xBB || **b == 0xBF)
        .take(64)
        .map(u8::to_ascii_lowercase)
        .collect();
    start.starts_with(b"<!doctype html") || start.starts_with(b"<html")
}

/// Position of `needle` in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_beats_extension() {
        assert_eq!(detect(b"%PDF-1.7\n...", Some("bin")).unwrap(), Format::Pdf);
        assert_eq!(
            detect(b"<!DOCTYPE html><p>x", Some("txt")).unwrap(),
            Format::Html
        );
        assert!(matches!(
            detect(b"\x7fELF\x02\x01\x01\x00", Some("txt")),
            Err(Fail::Binary(_))
        ));
        assert!(matches!(
            detect(b"just text", Some("pdf")),
            Err(Fail::Corrupt(_))
        ));
    }

    #[test]
    fn extension_decides_between_text_kinds() {
        assert_eq!(detect(b"# title", Some("md")).unwrap(), Format::Markdown);
        assert_eq!(detect(b"<p>x</p>", Some("htm")).unwrap(), Format::Html);
        assert_eq!(detect(b"plain", None).unwrap(), Format::Text);
    }
}
