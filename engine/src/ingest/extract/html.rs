//! HTML: the visible text, with the block structure turned into lines.
//!
//! Intranet pages are often Shift_JIS with a `<meta charset>` declaration, sometimes with
//! none. The charset comes from the BOM, then from a `<meta>` in the first bytes, then from
//! content-based detection. A small tolerant tokenizer (no DOM: pages are often not
//! well-formed) drops `<script>`, `<style>`, comments and other invisible parts, turns block
//! elements into line breaks (so headings and list items stay lines), table cells into tabs
//! and rows into lines, collapses whitespace outside `<pre>`, and decodes character
//! references.

use encoding_rs::Encoding;

use super::text::{decode, decode_declared};
use super::{Ctx, Fail, RawDocument};

/// Extracts an HTML file (page 1).
pub(crate) fn extract(bytes: &[u8], ctx: &Ctx) -> Result<RawDocument, Fail> {
    let (source, _) = match Encoding::for_bom(bytes) {
        Some(_) => decode(bytes)?,
        None => match meta_charset(bytes) {
            Some(declared) => decode_declared(bytes, declared)?,
            None => decode(bytes)?,
        },
    };
    Ok(RawDocument::single(html_to_text(&source, ctx)?, "html"))
}

/// The encoding declared by `<meta charset=...>` or `<meta http-equiv content="...;
/// charset=...">` in the first 4 KiB.
fn meta_charset(bytes: &[u8]) -> Option<&'static Encoding> {
    let head: String = bytes[..bytes.len().min(4096)]
        .iter()
        .map(|&b| {
            if b.is_ascii() {
                b.to_ascii_lowercase() as char
            } else {
                ' '
            }
        })
        .collect();
    let mut from = 0;
    while let Some(pos) = head[from..].find("<meta") {
        let start = from + pos;
        let end = head[start..].find('>').map_or(head.len(), |e| start + e);
        let tag = &head[start..end];
        if let Some(cs) = tag.find("charset") {
            let value = tag[cs + 7..]
                .trim_start()
                .trim_start_matches('=')
                .trim_start()
                .trim_start_matches(['"', '\'']);
            let label: String = value
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
                .collect();
            if let Some(encoding) = Encoding::for_label(label.as_bytes()) {
                return Some(encoding);
            }
        }
        from = end;
    }
    None
}

/// Elements whose content is never visible.
const HIDDEN: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "math", "object", "iframe",
];

/// Elements that start and end a line.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "br",
    "caption",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "header",
    "hr",
    "html",
    "legend",
    "li",
    "main",
    "nav",
    "ol",
    "option",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "title",
    "tr",
    "ul",
];

/// Converts HTML source to text lines.
pub(crate) fn html_to_text(src: &str, ctx: &Ctx) -> Result<String, Fail> {
    let mut out = Lines::default();
    let mut i = 0;
    let bytes = src.as_bytes();
    let mut pre_depth = 0usize;
    let mut steps = 0usize;
    while i < src.len() {
        steps += 1;
        if steps.is_multiple_of(4096) {
            ctx.check()?;
        }
        if bytes[i] != b'<' {
            let end = src[i..].find('<').map_or(src.len(), |p| i + p);
            out.text(&decode_entities(&src[i..end]), pre_depth > 0);
            i = end;
            continue;
        }
        let rest = &src[i..];
        if rest.starts_with("<!--") {
            i = rest.find("-->").map_or(src.len(), |p| i + p + 3);
            continue;
        }
        if rest.starts_with("<!") || rest.starts_with("<?") {
            i = rest.find('>').map_or(src.len(), |p| i + p + 1);
            continue;
        }
        let closing = rest.starts_with("</");
        let name_start = if closing { 2 } else { 1 };
        let name: String = rest[name_start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if name.is_empty() {
            // A lone '<' in text.
            out.text("<", pre_depth > 0);
            i += 1;
            continue;
        }
        let tag_end = tag_end(rest).map_or(src.len(), |p| i + p + 1);
        let self_closing = src[i..tag_end].ends_with("/>");
        i = tag_end;
        if !closing && HIDDEN.contains(&name.as_str()) && !self_closing {
            // Skip to the matching end tag (raw text: no nesting to track for script/style).
            let close = format!("</{name}");
            let lower = src[i..].to_ascii_lowercase();
            i = lower.find(&close).map_or(src.len(), |p| {
                let after = i + p;
                src[after..].find('>').map_or(src.len(), |q| after + q + 1)
            });
            continue;
        }
        match name.as_str() {
            "td" | "th" if !closing => out.cell(),
            "tr" => out.row(closing),
            "pre" if closing => pre_depth = pre_depth.saturating_sub(1),
            "pre" => pre_depth += 1,
            _ => {}
        }
        if BLOCKS.contains(&name.as_str()) {
            out.newline();
        }
    }
    Ok(out.finish())
}

/// Index of the `>` closing the tag at the start of `s`, skipping quoted attributes.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// Accumulates lines, collapsing whitespace.
#[derive(Default)]
struct Lines {
    out: String,
    line: String,
    cell_in_row: bool,
    pending_space: bool,
}

impl Lines {
    fn text(&mut self, t: &str, pre: bool) {
        if pre {
            for (k, part) in t.split('\n').enumerate() {
                if k > 0 {
                    self.newline();
                }
                self.line.push_str(part);
            }
            return;
        }
        for c in t.chars() {
            if c.is_whitespace() && c != '\u{a0}' && c != '\u{3000}' {
                self.pending_space = !self.line.is_empty();
            } else {
                if self.pending_space && !self.line.ends_with('\t') {
                    self.line.push(' ');
                }
                self.pending_space = false;
                self.line.push(if c == '\u{a0}' { ' ' } else { c });
            }
        }
    }

    fn cell(&mut self) {
        if self.cell_in_row {
            self.line.push('\t');
        }
        self.pending_space = false;
        self.cell_in_row = true;
    }

    fn row(&mut self, closing: bool) {
        self.newline();
        let _ = closing;
        self.cell_in_row = false;
    }

    fn newline(&mut self) {
        self.pending_space = false;
        let line = self.line.trim();
        if !line.is_empty() {
            self.out.push_str(line);
            self.out.push('\n');
        }
        self.line.clear();
    }

    fn finish(mut self) -> String {
        self.newline();
        self.out
    }
}

/// Decodes named and numeric character references.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..]
            .char_indices()
            .take(32)
            .find(|&(_, c)| c == ';' || !(c.is_ascii_alphanumeric() || c == '#'))
            .map(|(k, c)| (k + 1, c == ';'));
        match end {
            Some((semi, true)) => {
                if let Some(c) = entity(&rest[1..semi]) {
                    out.push(c);
                    rest = &rest[semi + 1..];
                    continue;
                }
            }
            Some((stop, false)) => {
                // Legacy references without ';' (e.g. "&nbsp " ).
                if let Some(c) = entity(&rest[1..stop]) {
                    out.push(c);
                    rest = &rest[stop..];
                    continue;
                }
            }
            None => {}
        }
        out.push('&');
        rest = &rest[1..];
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code).filter(|&c| c != '\0');
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "yen" => '¥',
        "times" => '×',
        "divide" => '÷',
        "deg" => '°',
        "plusmn" => '±',
        "middot" => '·',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "larr" => '←',
        "rarr" => '→',
        "uarr" => '↑',
        "darr" => '↓',
        "ensp" | "emsp" | "thinsp" => ' ',
        "sect" => '§',
        "para" => '¶',
        "euro" => '€',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::Limits;

    fn text(src: &str) -> String {
        html_to_text(src, &Ctx::new(&Limits::default())).unwrap()
    }

    #[test]
    fn visible_text_only_with_lines_and_cells() {
        let src = "<html><head><title>題名</title><style>p{}</style><script>var x='<p>隠す</p>';</script></head>\
                   <body><h1>見出し</h1><p>本文は<b>太字</b>と&amp;記号&#x3002;</p><!-- 無視 -->\
                   <table><tr><th>部署</th><th>内線</th></tr><tr><td>総務部</td><td>1100</td></tr></table>\
                   <ul><li>一</li><li>二</li></ul></body></html>";
        assert_eq!(
            text(src),
            "題名\n見出し\n本文は太字と&記号。\n部署\t内線\n総務部\t1100\n一\n二\n"
        );
    }

    #[test]
    fn meta_charset_is_found() {
        let src = b"<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=Shift_JIS\">";
        assert_eq!(meta_charset(src), Some(encoding_rs::SHIFT_JIS));
        assert_eq!(
            meta_charset(b"<meta charset='euc-jp'>"),
            Some(encoding_rs::EUC_JP)
        );
        assert_eq!(meta_charset(b"<p>no meta</p>"), None);
    }

    #[test]
    fn latin1_pages_are_read_with_or_without_their_meta_charset() {
        let page = "<html><head><meta charset=\"iso-8859-1\"><title>Politique de congés</title></head>\
                    <body><p>Les congés payés se demandent trois jours ouvrés à l'avance.</p></body></html>";
        let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(page);
        let ctx = Ctx::new(&Limits::default());
        let declared = extract(&bytes, &ctx).unwrap();
        assert!(
            declared.pages[0].1.contains("congés payés"),
            "{:?}",
            declared.pages
        );
        let bare = page.replace("<meta charset=\"iso-8859-1\">", "");
        let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&bare);
        let detected = extract(&bytes, &ctx).unwrap();
        assert!(
            detected.pages[0].1.contains("jours ouvrés"),
            "{:?}",
            detected.pages
        );
    }

    #[test]
    fn whitespace_collapses_except_in_pre() {
        assert_eq!(text("<p>a\n   b</p><pre>x  y\nz</pre>"), "a b\nx  y\nz\n");
    }
}
