//! Our own per-page PDF text decoder on `lopdf`, used when pdf-extract fails on a page.
//!
//! It exists for the Japanese PDFs pdf-extract cannot read: Type0 fonts whose `/Encoding`
//! is a *predefined* CMap (`UniJIS-UCS2-H`, `UniJIS-UTF16-H`, `90ms-RKSJ-H`, `EUC-H`, `H`,
//! ...) with a non-embedded CID font and often no ToUnicode map. For those the string bytes
//! already are Unicode (UCS-2/UTF-16/UTF-8/UTF-32) or a legacy Japanese encoding
//! (Shift_JIS, EUC-JP, ISO-2022 JIS X 0208), so they can be decoded directly. Otherwise a
//! font's ToUnicode CMap is used (parsed here, with its code-space ranges so that 1- and
//! 2-byte codes are split correctly), and simple fonts fall back to lopdf's standard
//! encodings and `/Differences`.
//!
//! The interpreter tracks just enough graphics state — CTM (`cm`, `q`/`Q`), text matrices
//! (`BT`, `Tm`, `Td`, `TD`, `T*`, `TL`), font and spacing (`Tf`, `Tc`, `Tw`, `Tz`) and glyph
//! widths — to turn positions into line breaks and word gaps, and descends into form
//! XObjects (`Do`). It does not reorder text: content order is kept, which for
//! office-generated PDFs is reading order.
//!
//! Limitation: Identity-H fonts *without* a ToUnicode map would need the embedded font's
//! own cmap table (or the Adobe-Japan1 CID table) to map glyphs back to text; such pages
//! come out as U+FFFD and the quality gate marks them garbled.

use std::collections::HashMap;
use std::rc::Rc;

use encoding_rs::Encoding;
use lopdf::content::Content;
use lopdf::{Dictionary, Document, Object, ObjectId};

use super::{Ctx, Fail};

/// Form XObject nesting limit.
const MAX_FORM_DEPTH: usize = 8;
/// Operations interpreted per page before giving up on the rest of the page.
const MAX_OPS_PER_PAGE: usize = 5_000_000;
/// Largest bfrange expanded from a ToUnicode CMap.
const MAX_RANGE: u32 = 0x1_0000;

/// Decodes the text of one page.
pub(crate) fn page_text(doc: &Document, page_id: ObjectId, ctx: &Ctx) -> Result<String, Fail> {
    let page = doc
        .get_dictionary(page_id)
        .map_err(|e| Fail::Corrupt(format!("page object: {e}")))?;
    let resources = inherited_resources(doc, page);
    let content = doc
        .get_page_content(page_id)
        .map_err(|e| Fail::Corrupt(format!("page content: {e}")))?;
    let mut interp = Interpreter {
        doc,
        ctx,
        out: String::new(),
        fonts: HashMap::new(),
        last: None,
        ops: 0,
    };
    interp.run(&content, resources, IDENTITY, 0)?;
    Ok(interp.out)
}

/// `/Resources` of the page or of its nearest ancestor that has them.
fn inherited_resources<'a>(doc: &'a Document, page: &'a Dictionary) -> Option<&'a Dictionary> {
    let mut node = page;
    for _ in 0..64 {
        if let Ok(res) = node.get(b"Resources") {
            return deref(doc, res).as_dict().ok();
        }
        node = node
            .get(b"Parent")
            .ok()
            .and_then(|p| deref(doc, p).as_dict().ok())?;
    }
    None
}

fn deref<'a>(doc: &'a Document, obj: &'a Object) -> &'a Object {
    const NULL: &Object = &Object::Null;
    match doc.dereference(obj) {
        Ok((_, o)) => o,
        Err(_) => NULL,
    }
}

fn number(obj: &Object) -> Option<f64> {
    match obj {
        Object::Integer(i) => Some(*i as f64),
        Object::Real(r) => Some(*r as f64),
        _ => None,
    }
}

/// 2-D affine matrix `[a b c d e f]` (row-vector convention, as in PDF).
type Matrix = [f64; 6];
const IDENTITY: Matrix = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];

/// `m` then `n`.
fn mul(m: &Matrix, n: &Matrix) -> Matrix {
    [
        m[0] * n[0] + m[1] * n[2],
        m[0] * n[1] + m[1] * n[3],
        m[2] * n[0] + m[3] * n[2],
        m[2] * n[1] + m[3] * n[3],
        m[4] * n[0] + m[5] * n[2] + n[4],
        m[4] * n[1] + m[5] * n[3] + n[5],
    ]
}

fn matrix_from(operands: &[Object]) -> Option<Matrix> {
    if operands.len() < 6 {
        return None;
    }
    let mut m = [0.0; 6];
    for (slot, o) in m.iter_mut().zip(operands) {
        *slot = number(o)?;
    }
    Some(m)
}

#[derive(Clone)]
struct TextState<'a> {
    ctm: Matrix,
    tm: Matrix,
    tlm: Matrix,
    font: Option<Rc<FontDecoder<'a>>>,
    size: f64,
    char_spacing: f64,
    word_spacing: f64,
    scale: f64,
    leading: f64,
}

struct Interpreter<'a> {
    doc: &'a Document,
    ctx: &'a Ctx,
    out: String,
    /// Decoders by font dictionary address (resource names are per-resource-dict).
    fonts: HashMap<usize, Rc<FontDecoder<'a>>>,
    /// Where the previous string ended: (x, y, effective font size, vertical).
    last: Option<(f64, f64, f64, bool)>,
    ops: usize,
}

impl<'a> Interpreter<'a> {
    fn run(
        &mut self,
        content: &[u8],
        resources: Option<&'a Dictionary>,
        ctm: Matrix,
        depth: usize,
    ) -> Result<(), Fail> {
        let content =
            Content::decode(content).map_err(|e| Fail::Corrupt(format!("content stream: {e}")))?;
        let mut st = TextState {
            ctm,
            tm: IDENTITY,
            tlm: IDENTITY,
            font: None,
            size: 0.0,
            char_spacing: 0.0,
            word_spacing: 0.0,
            scale: 1.0,
            leading: 0.0,
        };
        let mut stack: Vec<TextState<'a>> = Vec::new();
        for op in &content.operations {
            self.ops += 1;
            if self.ops.is_multiple_of(4096) {
                self.ctx.check()?;
            }
            if self.ops > MAX_OPS_PER_PAGE {
                return Ok(());
            }
            let args = &op.operands;
            let num = |i: usize| args.get(i).and_then(number).unwrap_or(0.0);
            match op.operator.as_str() {
                "q" if stack.len() < 256 => stack.push(st.clone()),
                "Q" => {
                    if let Some(saved) = stack.pop() {
                        st = saved;
                    }
                }
                "cm" => {
                    if let Some(m) = matrix_from(args) {
                        st.ctm = mul(&m, &st.ctm);
                    }
                }
                "BT" => {
                    st.tm = IDENTITY;
                    st.tlm = IDENTITY;
                }
                "Tf" => {
                    st.size = num(1);
                    st.font = args
                        .first()
                        .and_then(|n| n.as_name().ok())
                        .and_then(|name| self.font(resources, name));
                }
                "Tc" => st.char_spacing = num(0),
                "Tw" => st.word_spacing = num(0),
                "Tz" => st.scale = num(0) / 100.0,
                "TL" => st.leading = num(0),
                "Td" => translate_line(&mut st, num(0), num(1)),
                "TD" => {
                    st.leading = -num(1);
                    translate_line(&mut st, num(0), num(1));
                }
                "Tm" => {
                    if let Some(m) = matrix_from(args) {
                        st.tm = m;
                        st.tlm = m;
                    }
                }
                "T*" => {
                    let l = st.leading;
                    translate_line(&mut st, 0.0, -l);
                }
                "Tj" => {
                    if let Some(Object::String(s, _)) = args.first() {
                        self.show(&mut st, s);
                    }
                }
                "'" => {
                    let l = st.leading;
                    translate_line(&mut st, 0.0, -l);
                    if let Some(Object::String(s, _)) = args.first() {
                        self.show(&mut st, s);
                    }
                }
                "\"" => {
                    st.word_spacing = num(0);
                    st.char_spacing = num(1);
                    let l = st.leading;
                    translate_line(&mut st, 0.0, -l);
                    if let Some(Object::String(s, _)) = args.get(2) {
                        self.show(&mut st, s);
                    }
                }
                "TJ" => {
                    if let Some(Object::Array(items)) = args.first() {
                        for item in items {
                            match item {
                                Object::String(s, _) => self.show(&mut st, s),
                                o => {
                                    if let Some(adjust) = number(o) {
                                        let vertical = st.font.as_ref().is_some_and(|f| f.vertical);
                                        let d = -adjust / 1000.0 * st.size;
                                        if vertical {
                                            advance(&mut st, 0.0, -d);
                                        } else {
                                            let dx = d * st.scale;
                                            advance(&mut st, dx, 0.0);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                "Do" if depth < MAX_FORM_DEPTH => {
                    if let Some(name) = args.first().and_then(|n| n.as_name().ok()) {
                        self.form(resources, name, &st, depth)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs a form XObject.
    fn form(
        &mut self,
        resources: Option<&'a Dictionary>,
        name: &[u8],
        st: &TextState<'a>,
        depth: usize,
    ) -> Result<(), Fail> {
        let doc = self.doc;
        let Some(xobjects) = resources
            .and_then(|r| r.get(b"XObject").ok())
            .and_then(|x| deref(doc, x).as_dict().ok())
        else {
            return Ok(());
        };
        let Some(Object::Stream(stream)) = xobjects.get(name).ok().map(|o| deref(doc, o)) else {
            return Ok(());
        };
        if stream.dict.get(b"Subtype").and_then(Object::as_name).ok() != Some(b"Form".as_slice()) {
            return Ok(());
        }
        let data = stream
            .decompressed_content()
            .unwrap_or_else(|_| stream.content.clone());
        let own = stream
            .dict
            .get(b"Resources")
            .ok()
            .and_then(|r| deref(doc, r).as_dict().ok())
            .or(resources);
        let matrix = stream
            .dict
            .get(b"Matrix")
            .ok()
            .and_then(|m| deref(doc, m).as_array().ok())
            .and_then(|a| matrix_from(a))
            .unwrap_or(IDENTITY);
        self.run(&data, own, mul(&matrix, &st.ctm), depth + 1)
    }

    /// The decoder for font resource `name`.
    fn font(
        &mut self,
        resources: Option<&'a Dictionary>,
        name: &[u8],
    ) -> Option<Rc<FontDecoder<'a>>> {
        let doc = self.doc;
        let fonts = resources
            .and_then(|r| r.get(b"Font").ok())
            .and_then(|f| deref(doc, f).as_dict().ok())?;
        let font = deref(doc, fonts.get(name).ok()?).as_dict().ok()?;
        let key = font as *const Dictionary as usize;
        if let Some(decoder) = self.fonts.get(&key) {
            return Some(decoder.clone());
        }
        let decoder = Rc::new(FontDecoder::new(doc, font));
        self.fonts.insert(key, decoder.clone());
        Some(decoder)
    }

    /// Shows one string: decides on a line break or gap from the position, appends the
    /// decoded text and advances the text matrix.
    fn show(&mut self, st: &mut TextState<'a>, bytes: &[u8]) {
        let Some(font) = st.font.clone() else {
            return;
        };
        let trm = mul(&st.tm, &st.ctm);
        let (x, y) = (trm[4], trm[5]);
        let scale = (trm[0] * trm[3] - trm[1] * trm[2]).abs().sqrt();
        let size = (st.size * scale).abs().max(0.1);
        if let Some((lx, ly, lsize, vertical)) = self.last {
            let (across, along) = if vertical {
                (x - lx, ly - y)
            } else {
                (ly - y, x - lx)
            };
            let tolerance = lsize.max(size) * 0.5;
            if across.abs() > tolerance {
                self.newline();
            } else {
                let word_gap = along > size * 0.8
                    || (along > size * 0.15
                        && self.out.ends_with(|c: char| c.is_ascii_alphanumeric()));
                if word_gap && !self.out.ends_with([' ', '\n']) && !self.out.is_empty() {
                    self.out.push(' ');
                }
            }
        }
        for (code, text) in font.decode(bytes) {
            self.out.push_str(&text);
            let width = font.width(code) / 1000.0;
            let spacing = st.char_spacing
                + if code == 32 && font.single_byte() {
                    st.word_spacing
                } else {
                    0.0
                };
            if font.vertical {
                advance(st, 0.0, -(st.size + spacing));
            } else {
                advance(st, (width * st.size + spacing) * st.scale, 0.0);
            }
        }
        let trm = mul(&st.tm, &st.ctm);
        self.last = Some((trm[4], trm[5], size, font.vertical));
    }

    fn newline(&mut self) {
        while self.out.ends_with(' ') {
            self.out.pop();
        }
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
    }
}

fn translate_line(st: &mut TextState<'_>, tx: f64, ty: f64) {
    st.tlm = mul(&[1.0, 0.0, 0.0, 1.0, tx, ty], &st.tlm);
    st.tm = st.tlm;
}

fn advance(st: &mut TextState<'_>, tx: f64, ty: f64) {
    st.tm = mul(&[1.0, 0.0, 0.0, 1.0, tx, ty], &st.tm);
}

/// How a font's string bytes become codes and text.
enum Codec<'a> {
    /// One byte per code, decoded by lopdf's simple-font encodings.
    Simple(Option<lopdf::Encoding<'a>>),
    /// Identity-H/V or an unknown CMap: 2-byte codes, text only via ToUnicode.
    TwoByte,
    /// Codes split by the code-space ranges of an embedded CMap; text only via ToUnicode.
    Ranges(Vec<(usize, Vec<u8>, Vec<u8>)>),
    /// Predefined Unicode CMaps: the bytes are the text.
    Ucs2,
    Utf16,
    Utf8,
    Utf32,
    /// Predefined legacy CMaps: the bytes are text in a legacy encoding.
    Legacy(&'static Encoding, Lead),
}

/// Code-length rule of a legacy multi-byte encoding.
#[derive(Clone, Copy)]
enum Lead {
    /// Shift_JIS: 0x81–0x9F, 0xE0–0xFC start 2-byte codes.
    ShiftJis,
    /// EUC: 0x8E/0xA1–0xFE start 2-byte codes, 0x8F 3-byte ones.
    Euc,
    /// GBK, Big5, UHC: 0x81–0xFE start 2-byte codes.
    HighBit,
    /// ISO-2022 JIS X 0208 (`H`, `V`): always 2 bytes, decoded as EUC-JP with the high bit set.
    Jis,
}

/// Decodes the strings of one font.
struct FontDecoder<'a> {
    codec: Codec<'a>,
    to_unicode: Option<CMap>,
    vertical: bool,
    widths: HashMap<u32, f64>,
    default_width: f64,
}

impl<'a> FontDecoder<'a> {
    fn new(doc: &'a Document, font: &'a Dictionary) -> Self {
        let subtype = font
            .get(b"Subtype")
            .and_then(Object::as_name)
            .unwrap_or(b"");
        let to_unicode = font
            .get(b"ToUnicode")
            .ok()
            .map(|o| deref(doc, o))
            .and_then(|o| o.as_stream().ok())
            .and_then(|s| {
                s.decompressed_content()
                    .ok()
                    .or_else(|| Some(s.content.clone()))
            })
            .map(|data| CMap::parse(&data));
        if subtype == b"Type0" {
            let (codec, vertical) = match font.get(b"Encoding").map(|o| deref(doc, o)) {
                Ok(Object::Name(name)) => predefined(&String::from_utf8_lossy(name)),
                Ok(Object::Stream(stream)) => {
                    let data = stream
                        .decompressed_content()
                        .unwrap_or_else(|_| stream.content.clone());
                    let cmap = CMap::parse(&data);
                    let vertical = stream
                        .dict
                        .get(b"WMode")
                        .ok()
                        .and_then(number)
                        .is_some_and(|w| w == 1.0);
                    match cmap.use_cmap.as_deref().map(predefined) {
                        Some((codec, v)) if cmap.codespace.is_empty() => (codec, v || vertical),
                        _ if !cmap.codespace.is_empty() => {
                            (Codec::Ranges(cmap.codespace), vertical)
                        }
                        _ => (Codec::TwoByte, vertical),
                    }
                }
                _ => (Codec::TwoByte, false),
            };
            let (widths, default_width) = cid_widths(doc, font, &codec);
            FontDecoder {
                codec,
                to_unicode,
                vertical,
                widths,
                default_width,
            }
        } else {
            let encoding = font.get_font_encoding(doc).ok();
            let (widths, default_width) = simple_widths(doc, font);
            FontDecoder {
                codec: Codec::Simple(encoding),
                to_unicode,
                vertical: false,
                widths,
                default_width,
            }
        }
    }

    fn single_byte(&self) -> bool {
        matches!(self.codec, Codec::Simple(_))
    }

    fn width(&self, code: u32) -> f64 {
        self.widths
            .get(&code)
            .copied()
            .unwrap_or(self.default_width)
    }

    /// Splits `bytes` into codes and decodes each to text.
    fn decode(&self, bytes: &[u8]) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let len = self.code_len(&bytes[i..]).clamp(1, bytes.len() - i);
            let raw = &bytes[i..i + len];
            i += len;
            let code = raw.iter().fold(0u32, |acc, &b| (acc << 8) | b as u32);
            if let Some(text) = self.to_unicode.as_ref().and_then(|m| m.get(raw)) {
                if !self.prefers_own_bytes() {
                    out.push((code, text.to_string()));
                    continue;
                }
            }
            out.push((code, self.decode_own(raw, code)));
        }
        out
    }

    /// Unicode-based predefined CMaps are exact; trust them over a ToUnicode map.
    fn prefers_own_bytes(&self) -> bool {
        matches!(
            self.codec,
            Codec::Ucs2 | Codec::Utf16 | Codec::Utf8 | Codec::Utf32
        )
    }

    fn code_len(&self, rest: &[u8]) -> usize {
        let b = rest[0];
        match &self.codec {
            Codec::Simple(_) => 1,
            Codec::TwoByte | Codec::Ucs2 => 2,
            Codec::Utf16 => {
                if (0xD8..=0xDB).contains(&b) {
                    4
                } else {
                    2
                }
            }
            Codec::Utf8 => match b {
                0xF0..=0xF7 => 4,
                0xE0..=0xEF => 3,
                0xC0..=0xDF => 2,
                _ => 1,
            },
            Codec::Utf32 => 4,
            Codec::Legacy(_, lead) => match lead {
                Lead::ShiftJis => {
                    if matches!(b, 0x81..=0x9F | 0xE0..=0xFC) {
                        2
                    } else {
                        1
                    }
                }
                Lead::Euc => match b {
                    0x8F => 3,
                    0x8E | 0xA1..=0xFE => 2,
                    _ => 1,
                },
                Lead::HighBit => {
                    if b >= 0x81 {
                        2
                    } else {
                        1
                    }
                }
                Lead::Jis => 2,
            },
            Codec::Ranges(ranges) => ranges
                .iter()
                .find(|(len, lo, hi)| {
                    rest.len() >= *len && (0..*len).all(|k| lo[k] <= rest[k] && rest[k] <= hi[k])
                })
                .map(|(len, _, _)| *len)
                .unwrap_or(1),
        }
    }

    /// Text for a code without a ToUnicode entry.
    fn decode_own(&self, raw: &[u8], code: u32) -> String {
        let replacement = || "\u{fffd}".to_string();
        match &self.codec {
            Codec::Simple(Some(encoding)) => encoding
                .bytes_to_string(raw)
                .unwrap_or_else(|_| replacement()),
            Codec::Simple(None) => {
                if raw[0].is_ascii_graphic() || raw[0] == b' ' {
                    (raw[0] as char).to_string()
                } else {
                    replacement()
                }
            }
            Codec::Ucs2 => char::from_u32(code).map_or_else(replacement, String::from),
            Codec::Utf16 => {
                let units: Vec<u16> = raw
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                    .collect();
                String::from_utf16(&units).unwrap_or_else(|_| replacement())
            }
            Codec::Utf8 => String::from_utf8(raw.to_vec()).unwrap_or_else(|_| replacement()),
            Codec::Utf32 => char::from_u32(code).map_or_else(replacement, String::from),
            Codec::Legacy(encoding, lead) => {
                let bytes: Vec<u8> = match lead {
                    Lead::Jis => raw.iter().map(|b| b | 0x80).collect(),
                    _ => raw.to_vec(),
                };
                encoding
                    .decode_without_bom_handling_and_without_replacement(&bytes)
                    .map_or_else(replacement, |s| s.into_owned())
            }
            Codec::TwoByte | Codec::Ranges(_) => replacement(),
        }
    }
}

/// Codec and writing mode for a predefined CMap name.
fn predefined(name: &str) -> (Codec<'static>, bool) {
    let vertical = name.ends_with("-V") || name == "V";
    let codec = if name.starts_with("Identity") {
        Codec::TwoByte
    } else if name.contains("UCS2") {
        Codec::Ucs2
    } else if name.contains("UTF16") {
        Codec::Utf16
    } else if name.contains("UTF8") {
        Codec::Utf8
    } else if name.contains("UTF32") {
        Codec::Utf32
    } else if name.contains("RKSJ") {
        Codec::Legacy(encoding_rs::SHIFT_JIS, Lead::ShiftJis)
    } else if name.starts_with("KSC") || name.starts_with("KSCms") {
        Codec::Legacy(encoding_rs::EUC_KR, Lead::HighBit)
    } else if name.starts_with("GB") {
        Codec::Legacy(encoding_rs::GBK, Lead::HighBit)
    } else if name.starts_with("B5") || name.starts_with("ETen") || name.starts_with("HKscs") {
        Codec::Legacy(encoding_rs::BIG5, Lead::HighBit)
    } else if name.contains("EUC") {
        Codec::Legacy(encoding_rs::EUC_JP, Lead::Euc)
    } else if matches!(
        name,
        "H" | "V" | "78-H" | "78-V" | "Add-H" | "Add-V" | "Ext-H" | "Ext-V" | "NWP-H" | "NWP-V"
    ) {
        Codec::Legacy(encoding_rs::EUC_JP, Lead::Jis)
    } else {
        Codec::TwoByte
    };
    (codec, vertical)
}

/// Glyph widths of a CID font (`/W`, `/DW`), keyed by CID; only meaningful when codes are
/// CIDs (Identity), otherwise the default width is used for every glyph.
fn cid_widths(doc: &Document, font: &Dictionary, codec: &Codec<'_>) -> (HashMap<u32, f64>, f64) {
    let mut widths = HashMap::new();
    let descendant = font
        .get(b"DescendantFonts")
        .ok()
        .map(|o| deref(doc, o))
        .and_then(|o| o.as_array().ok())
        .and_then(|a| a.first())
        .map(|o| deref(doc, o))
        .and_then(|o| o.as_dict().ok());
    let Some(cid) = descendant else {
        return (widths, 1000.0);
    };
    let default = cid.get(b"DW").ok().and_then(number).unwrap_or(1000.0);
    if !matches!(codec, Codec::TwoByte) {
        return (widths, default);
    }
    if let Some(w) = cid
        .get(b"W")
        .ok()
        .map(|o| deref(doc, o))
        .and_then(|o| o.as_array().ok())
    {
        let mut i = 0;
        while i < w.len() && widths.len() < 100_000 {
            let Some(first) = number(deref(doc, &w[i])) else {
                break;
            };
            match w.get(i + 1).map(|o| deref(doc, o)) {
                Some(Object::Array(list)) => {
                    for (k, v) in list.iter().enumerate() {
                        if let Some(v) = number(v) {
                            widths.insert(first as u32 + k as u32, v);
                        }
                    }
                    i += 2;
                }
                Some(last) => {
                    let (Some(last), Some(v)) = (
                        number(last),
                        w.get(i + 2).map(|o| deref(doc, o)).and_then(number),
                    ) else {
                        break;
                    };
                    let (first, last) = (first as u32, last as u32);
                    for c in first..=last.min(first.saturating_add(MAX_RANGE)) {
                        widths.insert(c, v);
                    }
                    i += 3;
                }
                None => break,
            }
        }
    }
    (widths, default)
}

/// Widths of a simple font (`/FirstChar`, `/Widths`).
fn simple_widths(doc: &Document, font: &Dictionary) -> (HashMap<u32, f64>, f64) {
    let mut widths = HashMap::new();
    let first = font.get(b"FirstChar").ok().and_then(number).unwrap_or(0.0) as u32;
    if let Some(list) = font
        .get(b"Widths")
        .ok()
        .map(|o| deref(doc, o))
        .and_then(|o| o.as_array().ok())
    {
        for (k, v) in list.iter().take(256).enumerate() {
            if let Some(v) = number(deref(doc, v)) {
                widths.insert(first + k as u32, v);
            }
        }
    }
    let missing = font
        .get(b"FontDescriptor")
        .ok()
        .map(|o| deref(doc, o))
        .and_then(|o| o.as_dict().ok())
        .and_then(|d| d.get(b"MissingWidth").ok().and_then(number))
        .unwrap_or(500.0);
    (widths, missing)
}

/// The parts of a CMap stream that matter here: code-space ranges, code → Unicode
/// mappings (ToUnicode `bfchar`/`bfrange`) and `usecmap`.
#[derive(Default)]
struct CMap {
    /// (code length, low bytes, high bytes), in the order declared.
    codespace: Vec<(usize, Vec<u8>, Vec<u8>)>,
    map: HashMap<Vec<u8>, String>,
    use_cmap: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Hex(Vec<u8>),
    Name(String),
    Word(String),
    Open,
    Close,
}

impl CMap {
    fn get(&self, code: &[u8]) -> Option<&str> {
        self.map.get(code).map(String::as_str)
    }

    fn parse(data: &[u8]) -> CMap {
        let toks = tokenize(data);
        let mut cmap = CMap::default();
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                Tok::Word(w) if w == "begincodespacerange" => {
                    i += 1;
                    while let (Some(Tok::Hex(lo)), Some(Tok::Hex(hi))) =
                        (toks.get(i), toks.get(i + 1))
                    {
                        if lo.len() == hi.len() && !lo.is_empty() && lo.len() <= 4 {
                            cmap.codespace.push((lo.len(), lo.clone(), hi.clone()));
                        }
                        i += 2;
                    }
                }
                Tok::Word(w) if w == "beginbfchar" => {
                    i += 1;
                    while let (Some(Tok::Hex(src)), Some(dst)) = (toks.get(i), toks.get(i + 1)) {
                        if let Tok::Hex(dst) = dst {
                            cmap.map.insert(src.clone(), utf16be(dst));
                        }
                        i += 2;
                    }
                }
                Tok::Word(w) if w == "beginbfrange" => {
                    i += 1;
                    while let (Some(Tok::Hex(lo)), Some(Tok::Hex(hi))) =
                        (toks.get(i), toks.get(i + 1))
                    {
                        i += 2;
                        match toks.get(i) {
                            Some(Tok::Hex(dst)) => {
                                cmap.range(lo, hi, |k| {
                                    let mut d = dst.clone();
                                    add_to_last_unit(&mut d, k);
                                    Some(utf16be(&d))
                                });
                                i += 1;
                            }
                            Some(Tok::Open) => {
                                let mut list = Vec::new();
                                i += 1;
                                while let Some(Tok::Hex(d)) = toks.get(i) {
                                    list.push(utf16be(d));
                                    i += 1;
                                }
                                if toks.get(i) == Some(&Tok::Close) {
                                    i += 1;
                                }
                                cmap.range(lo, hi, |k| list.get(k as usize).cloned());
                            }
                            _ => break,
                        }
                    }
                }
                Tok::Name(n) if toks.get(i + 1) == Some(&Tok::Word("usecmap".into())) => {
                    cmap.use_cmap = Some(n.clone());
                    i += 1;
                }
                _ => i += 1,
            }
        }
        if cmap.codespace.is_empty() {
            // Malformed maps without ranges: infer code lengths from the keys.
            let mut lens: Vec<usize> = cmap.map.keys().map(Vec::len).collect();
            lens.sort_unstable();
            lens.dedup();
            for len in lens.into_iter().filter(|&l| (1..=4).contains(&l)) {
                cmap.codespace.push((len, vec![0; len], vec![0xFF; len]));
            }
        }
        cmap
    }

    /// Inserts mappings for every code from `lo` to `hi` (same length, at most MAX_RANGE).
    fn range(&mut self, lo: &[u8], hi: &[u8], mut f: impl FnMut(u32) -> Option<String>) {
        if lo.len() != hi.len() || lo.is_empty() || lo.len() > 4 {
            return;
        }
        let as_u32 = |b: &[u8]| b.iter().fold(0u32, |a, &x| (a << 8) | x as u32);
        let (l, h) = (as_u32(lo), as_u32(hi));
        if h < l {
            return;
        }
        for k in 0..=(h - l).min(MAX_RANGE) {
            let code = l + k;
            let bytes = code.to_be_bytes()[4 - lo.len()..].to_vec();
            if let Some(text) = f(k) {
                self.map.insert(bytes, text);
            }
        }
    }
}

/// Adds `k` to the last UTF-16 unit of a big-endian UTF-16 destination.
fn add_to_last_unit(d: &mut [u8], k: u32) {
    let n = d.len();
    if n >= 2 {
        let unit = u16::from_be_bytes([d[n - 2], d[n - 1]]) as u32 + k;
        let [hi, lo] = (unit as u16).to_be_bytes();
        d[n - 2] = hi;
        d[n - 1] = lo;
    } else if n == 1 {
        d[0] = d[0].wrapping_add(k as u8);
    }
}

fn utf16be(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    String::from_utf16_lossy(&units)
}

fn tokenize(data: &[u8]) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        match b {
            b'%' => {
                while i < data.len() && data[i] != b'\n' && data[i] != b'\r' {
                    i += 1;
                }
            }
            b'<' if data.get(i + 1) == Some(&b'<') => i += 2,
            b'>' if data.get(i + 1) == Some(&b'>') => i += 2,
            b'<' => {
                let end = data[i..]
                    .iter()
                    .position(|&c| c == b'>')
                    .map_or(data.len(), |p| i + p);
                let digits: Vec<u8> = data[i + 1..end]
                    .iter()
                    .filter(|c| c.is_ascii_hexdigit())
                    .copied()
                    .collect();
                let mut bytes = Vec::with_capacity(digits.len() / 2 + 1);
                for pair in digits.chunks(2) {
                    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    let hi = hex(pair[0]);
                    let lo = pair.get(1).map_or(0, |&c| hex(c));
                    bytes.push(hi << 4 | lo);
                }
                toks.push(Tok::Hex(bytes));
                i = end + 1;
            }
            b'[' => {
                toks.push(Tok::Open);
                i += 1;
            }
            b']' => {
                toks.push(Tok::Close);
                i += 1;
            }
            b'(' => {
                // Literal strings are not used for codes here; skip them (with nesting).
                let mut depth = 0usize;
                while i < data.len() {
                    match data[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'/' => {
                let start = i + 1;
                i += 1;
                while i < data.len() && !is_delimiter(data[i]) {
                    i += 1;
                }
                toks.push(Tok::Name(
                    String::from_utf8_lossy(&data[start..i]).into_owned(),
                ));
            }
            _ if b.is_ascii_whitespace() => i += 1,
            _ => {
                let start = i;
                while i < data.len() && !is_delimiter(data[i]) {
                    i += 1;
                }
                if i == start {
                    i += 1;
                } else {
                    toks.push(Tok::Word(
                        String::from_utf8_lossy(&data[start..i]).into_owned(),
                    ));
                }
            }
        }
    }
    toks
}

fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'/' | b'<' | b'>' | b'[' | b']' | b'(' | b')' | b'%')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TO_UNICODE: &[u8] = b"/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
        1 begincodespacerange <0000> <FFFF> endcodespacerange\n\
        2 beginbfchar <0003> <0020> <0011> <898F> endbfchar\n\
        2 beginbfrange <0020> <0022> <3042> <0030> <0031> [<7A0B> <D840DC0B>] endbfrange\n\
        endcmap CMapName currentdict /CMap defineresource pop end end";

    #[test]
    fn to_unicode_cmap_parses_chars_ranges_and_arrays() {
        let cmap = CMap::parse(TO_UNICODE);
        assert_eq!(cmap.codespace, vec![(2, vec![0, 0], vec![0xFF, 0xFF])]);
        assert_eq!(cmap.get(&[0x00, 0x11]), Some("規"));
        assert_eq!(cmap.get(&[0x00, 0x21]), Some("\u{3043}"));
        assert_eq!(cmap.get(&[0x00, 0x30]), Some("程"));
        assert_eq!(cmap.get(&[0x00, 0x31]), Some("\u{2000b}"));
    }

    fn decoder(codec: Codec<'static>) -> FontDecoder<'static> {
        FontDecoder {
            codec,
            to_unicode: None,
            vertical: false,
            widths: HashMap::new(),
            default_width: 1000.0,
        }
    }

    fn text(d: &FontDecoder<'_>, bytes: &[u8]) -> String {
        d.decode(bytes).into_iter().map(|(_, t)| t).collect()
    }

    #[test]
    fn predefined_cmaps_decode_directly() {
        let ucs2: Vec<u8> = "規程A".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(
            text(&decoder(predefined("UniJIS-UCS2-H").0), &ucs2),
            "規程A"
        );
        let sjis = encoding_rs::SHIFT_JIS.encode("第1条 ｶﾅ").0;
        assert_eq!(
            text(&decoder(predefined("90ms-RKSJ-H").0), &sjis),
            "第1条 ｶﾅ"
        );
        let euc = encoding_rs::EUC_JP.encode("休暇").0;
        assert_eq!(text(&decoder(predefined("EUC-H").0), &euc), "休暇");
        let jis: Vec<u8> = euc.iter().map(|b| b & 0x7F).collect();
        assert_eq!(text(&decoder(predefined("H").0), &jis), "休暇");
        assert!(predefined("UniJIS-UTF16-V").1);
    }

    #[test]
    fn identity_without_to_unicode_is_replacement() {
        assert_eq!(text(&decoder(Codec::TwoByte), &[0, 17]), "\u{fffd}");
        let mut d = decoder(Codec::TwoByte);
        d.to_unicode = Some(CMap::parse(TO_UNICODE));
        assert_eq!(text(&d, &[0, 0x11, 0, 0x30, 0, 3]), "規程 ");
    }

    #[test]
    fn matrices_compose_in_pdf_order() {
        let scale = [2.0, 0.0, 0.0, 2.0, 0.0, 0.0];
        let shift = [1.0, 0.0, 0.0, 1.0, 10.0, 5.0];
        assert_eq!(mul(&shift, &scale), [2.0, 0.0, 0.0, 2.0, 20.0, 10.0]);
    }
}
