//! PDF, a section per page. lopdf parses the file (cross-references, object streams, filters,
//! decryption with the empty password, bounded inflation); the text is read here, from each
//! page's content stream, with each font's map to Unicode:
//!
//! - a `ToUnicode` CMap when the font has one (any font, Type0/CID fonts included);
//! - for Type0 fonts without one, the predefined CMaps whose codes are Unicode
//!   (`UniJIS-UCS2-H`, `UniJIS-UTF16-H`, `UniGB-…`, `UniCNS-…`, `UniKS-…`, `UniJIS-UTF8-H`) or a
//!   legacy encoding (`90ms-RKSJ-H` and the other RKSJ CMaps: Shift_JIS; `EUC-H`: EUC-JP;
//!   `GBK-EUC-H`: GBK; `ETen-B5-H`: Big5; `KSCms-UHC-H`: EUC-KR);
//! - for simple fonts, the standard encodings and `Differences`.
//!
//! A Type0 font with `Identity-H` and no `ToUnicode` names glyphs, not characters: its text
//! cannot be read without the font program, and is counted, not guessed.
//!
//! Lines break where the text moves to a new line (`T*`, `'`, `"`, a `Td`/`TD`/`Tm` that
//! changes the line's position); a wide gap inside a `TJ` or a move along the line is a space
//! between words, except between Japanese or Chinese characters, which take none.

use std::collections::BTreeMap;

use lopdf::content::Content;
use lopdf::{Dictionary, Document, Encoding, LoadOptions, Object, ObjectId};

use super::{
    Citation, ExtractError, Format, MAX_PDF_CONTENT_BYTES, MAX_PDF_STREAM_BYTES, Section, contain,
    tidy,
};

/// How deep form XObjects (content drawn from inside content) are followed.
const MAX_FORM_DEPTH: usize = 4;

pub(super) fn extract(bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
    contain(Format::Pdf, || {
        let options = LoadOptions {
            max_decompressed_size: Some(MAX_PDF_STREAM_BYTES),
            ..LoadOptions::default()
        };
        let doc = Document::load_mem_with_options(bytes, options).map_err(load_error)?;
        if doc.is_encrypted() && doc.encryption_state.is_none() {
            return Err(ExtractError::Encrypted);
        }
        read_pages(&doc)
    })
}

fn load_error(e: lopdf::Error) -> ExtractError {
    match e {
        lopdf::Error::InvalidPassword | lopdf::Error::Decryption(_) => ExtractError::Encrypted,
        lopdf::Error::Decompress(lopdf::DecompressError::MemoryLimitExceeded { limit }) => {
            ExtractError::Inflation {
                reason: format!("a stream inflates past the {limit}-byte limit"),
            }
        }
        other => corrupt(other),
    }
}

fn corrupt(e: impl std::fmt::Display) -> ExtractError {
    ExtractError::Corrupt {
        format: Format::Pdf,
        reason: e.to_string(),
    }
}

/// What the pages held besides text, to say why a PDF without text has none.
#[derive(Default)]
struct Seen {
    images: usize,
    unmapped_glyphs: usize,
    content_bytes: usize,
}

fn read_pages(doc: &Document) -> Result<Vec<Section>, ExtractError> {
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(ExtractError::NoText {
            reason: "the PDF has no pages".into(),
        });
    }
    let mut seen = Seen::default();
    let mut sections = Vec::new();
    for (&number, &page_id) in &pages {
        let fonts = doc.get_page_fonts(page_id).unwrap_or_default();
        let fonts = decoders(doc, fonts);
        let resources = page_resources(doc, page_id);
        let content = doc
            .get_page_content_with_limit(page_id, MAX_PDF_STREAM_BYTES)
            .map_err(|e| page_error(number, e))?;
        let mut text = TextBuilder::default();
        walk(doc, &content, &fonts, &resources, 0, &mut text, &mut seen).map_err(|e| match e {
            ExtractError::Corrupt { reason, .. } => corrupt(format!("page {number}: {reason}")),
            other => other,
        })?;
        let text = tidy(&text.finish());
        if !text.is_empty() {
            sections.push(Section::new(text, Citation::Page { page: number }));
        }
    }
    if sections.is_empty() {
        let reason = if seen.unmapped_glyphs > 0 {
            format!(
                "its fonts have no map to Unicode ({} glyphs could not be read)",
                seen.unmapped_glyphs
            )
        } else if seen.images > 0 {
            format!(
                "the PDF's {} page(s) hold only images (a scan?); text in images is not read",
                pages.len()
            )
        } else {
            format!("the PDF's {} page(s) hold no text", pages.len())
        };
        return Err(ExtractError::NoText { reason });
    }
    Ok(sections)
}

fn page_error(number: u32, e: lopdf::Error) -> ExtractError {
    match load_error(e) {
        ExtractError::Corrupt { reason, .. } => corrupt(format!("page {number}: {reason}")),
        other => other,
    }
}

/// The page's XObjects (images and forms), by name.
fn page_resources(doc: &Document, page_id: ObjectId) -> BTreeMap<Vec<u8>, ObjectId> {
    let mut out = BTreeMap::new();
    let Ok((dict, ids)) = doc.get_page_resources(page_id) else {
        return out;
    };
    let dicts = dict
        .into_iter()
        .chain(ids.iter().filter_map(|id| doc.get_dictionary(*id).ok()));
    for resources in dicts {
        collect_xobjects(doc, resources, &mut out);
    }
    out
}

fn collect_xobjects(doc: &Document, resources: &Dictionary, out: &mut BTreeMap<Vec<u8>, ObjectId>) {
    let Ok(xobjects) = resources
        .get_deref(b"XObject", doc)
        .and_then(Object::as_dict)
    else {
        return;
    };
    for (name, value) in xobjects.iter() {
        if let Ok(id) = value.as_reference() {
            out.entry(name.clone()).or_insert(id);
        }
    }
}

/// How one font's string bytes become text.
enum Decoder<'a> {
    Lopdf(Encoding<'a>),
    Legacy(&'static encoding_rs::Encoding),
    Utf8,
    /// Glyph ids without a map to characters: counted, not read.
    Unmapped,
}

fn decoders<'a>(
    doc: &'a Document,
    fonts: BTreeMap<Vec<u8>, &'a Dictionary>,
) -> BTreeMap<Vec<u8>, Decoder<'a>> {
    fonts
        .into_iter()
        .map(|(name, font)| (name, decoder(doc, font)))
        .collect()
}

fn decoder<'a>(doc: &'a Document, font: &'a Dictionary) -> Decoder<'a> {
    if font.get(b"ToUnicode").is_ok() {
        // lopdf reads `ToUnicode` only when `Encoding` is absent or Identity; without it, the
        // map is what decodes (PDF 32000-1, 9.10.2: it comes first for text extraction).
        let mut bare = font.clone();
        bare.remove(b"Encoding");
        if let Ok(Encoding::UnicodeMapEncoding(cmap)) =
            bare.get_font_encoding_with_limit(doc, MAX_PDF_STREAM_BYTES)
        {
            return Decoder::Lopdf(Encoding::UnicodeMapEncoding(cmap));
        }
    }
    let subtype = font
        .get(b"Subtype")
        .and_then(Object::as_name)
        .unwrap_or(b"");
    if subtype == b"Type0" {
        let cmap = font
            .get(b"Encoding")
            .and_then(Object::as_name)
            .unwrap_or(b"");
        return predefined_cmap(cmap).unwrap_or(Decoder::Unmapped);
    }
    match font.get_font_encoding_with_limit(doc, MAX_PDF_STREAM_BYTES) {
        Ok(encoding) => Decoder::Lopdf(encoding),
        Err(_) => Decoder::Unmapped,
    }
}

/// The predefined CMaps whose codes can be read without the CID tables (PDF 32000-1, 9.7.5.2).
fn predefined_cmap(name: &[u8]) -> Option<Decoder<'static>> {
    let name = std::str::from_utf8(name).ok()?;
    if name.starts_with("Uni") && (name.contains("-UCS2-") || name.contains("-UTF16-")) {
        return Some(Decoder::Legacy(encoding_rs::UTF_16BE));
    }
    if name.starts_with("Uni") && name.contains("-UTF8-") {
        return Some(Decoder::Utf8);
    }
    let legacy = if name.contains("RKSJ") {
        encoding_rs::SHIFT_JIS
    } else if name == "EUC-H" || name == "EUC-V" {
        encoding_rs::EUC_JP
    } else if name.starts_with("GBK") || name.starts_with("GB-EUC") {
        encoding_rs::GBK
    } else if name.starts_with("ETen-B5") || name.starts_with("B5pc") {
        encoding_rs::BIG5
    } else if name.starts_with("KSC") {
        encoding_rs::EUC_KR
    } else {
        return None;
    };
    Some(Decoder::Legacy(legacy))
}

impl Decoder<'_> {
    /// Decodes one string; `Err(n)`: `n` glyphs could not be read.
    fn decode(&self, bytes: &[u8]) -> Result<String, usize> {
        match self {
            Decoder::Lopdf(encoding) => {
                let mut out = String::new();
                encoding
                    .write_to_string(bytes, &mut out)
                    .map_err(|_| bytes.len())?;
                Ok(out)
            }
            Decoder::Legacy(encoding) => {
                Ok(encoding.decode_without_bom_handling(bytes).0.into_owned())
            }
            Decoder::Utf8 => Ok(String::from_utf8_lossy(bytes).into_owned()),
            Decoder::Unmapped => Err(bytes.len().div_ceil(2)),
        }
    }
}

/// Text as it is drawn, with what separates it decided when the next text comes.
#[derive(Default)]
struct TextBuilder {
    out: String,
    pending: Gap,
    /// The current line's vertical position, in text space.
    line_y: Option<f32>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Gap {
    #[default]
    None,
    Space,
    Line,
}

impl TextBuilder {
    fn gap(&mut self, gap: Gap) {
        self.pending = self.pending.max(gap);
    }

    fn push(&mut self, text: &str) {
        let Some(first) = text.chars().next() else {
            return;
        };
        match self.pending {
            Gap::Line if !self.out.is_empty() => self.out.push('\n'),
            Gap::Space => {
                let last = self.out.chars().next_back();
                let wide = last.is_some_and(is_cjk) && is_cjk(first);
                if last.is_some_and(|c| !c.is_whitespace()) && !first.is_whitespace() && !wide {
                    self.out.push(' ');
                }
            }
            _ => {}
        }
        self.pending = Gap::None;
        self.out.push_str(text);
    }

    /// The line moves to `y`: a new line when it differs from the current one.
    fn move_to(&mut self, y: f32) {
        if let Some(current) = self.line_y
            && (current - y).abs() > 0.01
        {
            self.gap(Gap::Line);
        }
        self.line_y = Some(y);
    }

    fn finish(self) -> String {
        self.out
    }
}

/// Characters written without spaces between words: CJK ideographs, kana, full-width forms
/// and their punctuation.
fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3000}'..='\u{30FF}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}' | '\u{FF00}'..='\u{FFEF}' | '\u{20000}'..='\u{2FFFF}')
}

fn number(o: &Object) -> Option<f32> {
    match o {
        Object::Integer(i) => Some(*i as f32),
        Object::Real(r) => Some(*r),
        _ => None,
    }
}

/// A `TJ` adjustment (thousandths of a unit of text space) wider than this is a word gap.
const WORD_GAP: f32 = 200.0;

/// Reads one content stream's text into `text`, following Form XObjects (`Do`) to `depth`.
/// Long because it is one match over the text operators, whose arms share the text state;
/// split, that state would be passed through every piece.
fn walk(
    doc: &Document,
    content: &[u8],
    fonts: &BTreeMap<Vec<u8>, Decoder<'_>>,
    xobjects: &BTreeMap<Vec<u8>, ObjectId>,
    depth: usize,
    text: &mut TextBuilder,
    seen: &mut Seen,
) -> Result<(), ExtractError> {
    seen.content_bytes += content.len();
    if seen.content_bytes > MAX_PDF_CONTENT_BYTES {
        return Err(ExtractError::Inflation {
            reason: format!(
                "the pages' content inflates past the {MAX_PDF_CONTENT_BYTES}-byte limit"
            ),
        });
    }
    let content = Content::decode(content).map_err(corrupt)?;
    let mut font: Option<&Decoder<'_>> = None;
    let show =
        |text: &mut TextBuilder, seen: &mut Seen, font: Option<&Decoder<'_>>, bytes: &[u8]| {
            let Some(decoder) = font else {
                return;
            };
            match decoder.decode(bytes) {
                Ok(s) => text.push(&s.replace('\u{fffd}', "")),
                Err(glyphs) => seen.unmapped_glyphs += glyphs,
            }
        };
    for op in &content.operations {
        let operands = &op.operands;
        match op.operator.as_str() {
            "Tf" => {
                font = operands
                    .first()
                    .and_then(|o| o.as_name().ok())
                    .and_then(|name| fonts.get(name));
            }
            "BT" => text.line_y = Some(0.0),
            "Td" | "TD" => {
                let tx = operands.first().and_then(number).unwrap_or(0.0);
                let ty = operands.get(1).and_then(number).unwrap_or(0.0);
                let y = text.line_y.unwrap_or(0.0) + ty;
                text.move_to(y);
                if ty == 0.0 && tx != 0.0 {
                    text.gap(Gap::Space);
                }
            }
            "Tm" => {
                if let Some(y) = operands.get(5).and_then(number) {
                    text.move_to(y);
                }
                text.gap(Gap::Space);
            }
            "T*" => text.gap(Gap::Line),
            "Tj" => {
                if let Some(Object::String(bytes, _)) = operands.first() {
                    show(text, seen, font, bytes);
                }
            }
            "'" | "\"" => {
                text.gap(Gap::Line);
                if let Some(Object::String(bytes, _)) = operands.last() {
                    show(text, seen, font, bytes);
                }
            }
            "TJ" => {
                let Some(Object::Array(items)) = operands.first() else {
                    continue;
                };
                for item in items {
                    match item {
                        Object::String(bytes, _) => show(text, seen, font, bytes),
                        other => {
                            if number(other).is_some_and(|n| n < -WORD_GAP) {
                                text.gap(Gap::Space);
                            }
                        }
                    }
                }
            }
            "Do" => {
                let Some(id) = operands
                    .first()
                    .and_then(|o| o.as_name().ok())
                    .and_then(|name| xobjects.get(name))
                else {
                    continue;
                };
                let Ok(Object::Stream(stream)) = doc.get_object(*id) else {
                    continue;
                };
                match stream.dict.get(b"Subtype").and_then(Object::as_name) {
                    Ok(b"Image") => seen.images += 1,
                    Ok(b"Form") if depth < MAX_FORM_DEPTH => {
                        let inner = stream
                            .get_plain_content_with_limit(MAX_PDF_STREAM_BYTES)
                            .map_err(load_error)?;
                        // A form's own resources, else the page's.
                        let resources = stream
                            .dict
                            .get_deref(b"Resources", doc)
                            .and_then(Object::as_dict);
                        let (form_fonts, form_xobjects) = match resources {
                            Ok(res) => {
                                let mut fonts = BTreeMap::new();
                                if let Ok(dict) =
                                    res.get_deref(b"Font", doc).and_then(Object::as_dict)
                                {
                                    for (name, value) in dict.iter() {
                                        let font = match value {
                                            Object::Reference(id) => doc.get_dictionary(*id).ok(),
                                            Object::Dictionary(d) => Some(d),
                                            _ => None,
                                        };
                                        if let Some(font) = font {
                                            fonts.insert(name.clone(), font);
                                        }
                                    }
                                }
                                let mut xobjects = BTreeMap::new();
                                collect_xobjects(doc, res, &mut xobjects);
                                (Some(decoders(doc, fonts)), Some(xobjects))
                            }
                            Err(_) => (None, None),
                        };
                        text.gap(Gap::Line);
                        walk(
                            doc,
                            &inner,
                            form_fonts.as_ref().unwrap_or(fonts),
                            form_xobjects.as_ref().unwrap_or(xobjects),
                            depth + 1,
                            text,
                            seen,
                        )?;
                        text.gap(Gap::Line);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const MANUAL: &[u8] = include_bytes!("../../../dev/samples/documents/manual.pdf");

    #[test]
    fn pages_english_and_japanese() {
        let got = extract(MANUAL).unwrap();
        let pages: Vec<(Citation, &str)> = got
            .iter()
            .map(|s| (s.citation.clone(), s.text.as_str()))
            .collect();
        assert_eq!(
            pages,
            vec![
                (
                    Citation::Page { page: 1 },
                    "Sakuin User Manual\nChapter 1. Overview\nDocuments in S3 become searchable."
                ),
                // Type0, Identity-H, ToUnicode.
                (
                    Citation::Page { page: 2 },
                    "第2章 インストール\n検索サービスを導入する手順です。\n「設定」を開いてください。"
                ),
                // Type0, UniJIS-UCS2-H, no ToUnicode.
                (
                    Citation::Page { page: 3 },
                    "第3章 ネットワーク\nポート9200を開けます。"
                ),
                // Page 4 is blank: no section.
            ]
        );
    }

    #[test]
    fn hostile_pdfs_are_typed_errors() {
        let encrypted = include_bytes!("../../../dev/samples/documents/hostile/encrypted.pdf");
        assert!(matches!(extract(encrypted), Err(ExtractError::Encrypted)));

        let scan = include_bytes!("../../../dev/samples/documents/hostile/image-only.pdf");
        let e = extract(scan).unwrap_err();
        assert_eq!(e.kind(), "no_text");
        assert!(e.to_string().contains("only images"), "{e}");

        let started = Instant::now();
        for cut in [0, 8, 100, MANUAL.len() / 2, MANUAL.len() - 10] {
            let e = extract(&MANUAL[..cut]);
            // A cut file may still read (lopdf rebuilds a lost cross-reference table) but
            // never panics.
            if let Err(e) = e {
                assert_ne!(e.kind(), "parser_panic", "cut at {cut}: {e}");
            }
        }
        let mut flipped = MANUAL.to_vec();
        for i in (0..flipped.len()).step_by(97) {
            flipped[i] ^= 0x5a;
        }
        let _ = extract(&flipped);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn glyph_ids_without_a_map_are_not_guessed() {
        let font = Dictionary::from_iter(vec![
            ("Type", Object::Name(b"Font".to_vec())),
            ("Subtype", Object::Name(b"Type0".to_vec())),
            ("Encoding", Object::Name(b"Identity-H".to_vec())),
        ]);
        let doc = Document::new();
        let decoder = decoder(&doc, &font);
        assert_eq!(decoder.decode(&[0, 1, 0, 2]), Err(2));
    }

    #[test]
    fn legacy_japanese_cmaps() {
        let sjis = predefined_cmap(b"90ms-RKSJ-H").unwrap();
        assert_eq!(sjis.decode(&[0x93, 0xfa, 0x96, 0x7b]).unwrap(), "日本");
        let euc = predefined_cmap(b"EUC-H").unwrap();
        assert_eq!(euc.decode(&[0xc6, 0xfc, 0xcb, 0xdc]).unwrap(), "日本");
        assert!(predefined_cmap(b"Identity-H").is_none());
    }

    #[test]
    fn word_gaps_but_not_between_kanji() {
        let mut t = TextBuilder::default();
        t.push("Documents in");
        t.gap(Gap::Space);
        t.push("S3");
        t.gap(Gap::Space);
        t.push("日本");
        t.gap(Gap::Space);
        t.push("語");
        t.gap(Gap::Line);
        t.push("next");
        assert_eq!(t.finish(), "Documents in S3 日本語\nnext");
    }
}
