//! Which format an object is, from its key's extension, the `Content-Type` S3 stored and its
//! first bytes, taken together.
//!
//! Precedence, and why:
//!
//! 1. **Signatures in the bytes** decide the binary formats: `%PDF-` (in the first 1024 bytes,
//!    as readers accept it), a zip holding `word/document.xml` (Word) or `xl/workbook.xml`
//!    (Excel), gzip (records: the record reader inflates it). Bytes cannot lie about being a
//!    PDF or a zip, while names and types are set by whoever uploaded. When the extension or
//!    the type names a *different* format, the object is refused ([`Unsupported`]): a `.pdf`
//!    whose bytes are a zip is a mistake to report, not a guess to make. Signatures of formats
//!    sakuin does not read (OLE2: legacy `.doc`/`.xls`; images; other zips) are refused with
//!    what they are.
//! 2. **The extension** decides among text formats (`.md`, `.html`, `.csv`, `.txt`, `.json`,
//!    `.jsonl`, …), which bytes cannot tell apart (any Markdown is also plain text). A binary
//!    extension (`.pdf`, `.docx`, `.xlsx`) on bytes without its signature is refused.
//! 3. **The `Content-Type`**, when the key has no known extension. S3's and SDKs' defaults
//!    (`binary/octet-stream`, `application/octet-stream`) say nothing and are ignored. A type
//!    that names a binary format the bytes do not carry is refused.
//! 4. **Sniffing the text**: `<!doctype html` or `<html` → HTML; `{` or `[` → JSON records
//!    (what ingest reads today); other text → plain text. Bytes that are not text (a NUL in
//!    the first kilobyte, outside UTF-16) → refused.
//!
//! UTF-8 and UTF-16 byte order marks are skipped before sniffing (UTF-16 text is sniffed
//! after decoding its head).

use std::fmt;

/// How much of an object [`detect`] looks at; [`detect`] takes fewer bytes too.
pub const SNIFF_BYTES: usize = 4096;

/// The formats sakuin reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// JSON, JSON Lines, gzip or not: records, read by ingest's record reader.
    Records,
    Text,
    Markdown,
    Html,
    Csv,
    Xlsx,
    Docx,
    Pdf,
}

impl Format {
    /// A name for logs, metrics and errors.
    pub fn name(self) -> &'static str {
        match self {
            Format::Records => "JSON",
            Format::Text => "text",
            Format::Markdown => "Markdown",
            Format::Html => "HTML",
            Format::Csv => "CSV",
            Format::Xlsx => "Excel workbook",
            Format::Docx => "Word document",
            Format::Pdf => "PDF",
        }
    }

    /// Whether the format is recognised by a signature in its bytes (and read whole).
    pub fn is_binary_format(self) -> bool {
        matches!(self, Format::Pdf | Format::Docx | Format::Xlsx)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What decided the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    Bytes,
    Extension,
    ContentType,
    /// The text's first characters.
    Sniffed,
}

/// A format and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub format: Format,
    pub decided: Decided,
    /// For the log: what was seen (`"%PDF- signature; extension .pdf agrees"`).
    pub reason: String,
}

/// An object sakuin does not read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported document: {reason}")]
pub struct Unsupported {
    pub reason: String,
}

fn unsupported(reason: impl Into<String>) -> Unsupported {
    Unsupported {
        reason: reason.into(),
    }
}

/// Decides an object's format from its key, its stored `Content-Type` and its first bytes
/// (up to [`SNIFF_BYTES`]; for a zip the whole object, or at least its central directory at
/// the end, since the entry names are there). See the module's documentation for the order.
/// Long because the order is one table, read top to bottom: signatures, extension,
/// `Content-Type`, sniffing.
pub fn detect(
    key: &str,
    content_type: Option<&str>,
    head: &[u8],
) -> Result<Detection, Unsupported> {
    let extension = extension(key);
    let by_extension = extension.as_deref().and_then(format_of_extension);
    if let Some(ext) = &extension
        && let Some(reason) = declined_extension(ext)
    {
        return Err(unsupported(reason));
    }
    let by_type = content_type.and_then(format_of_content_type);
    let named = by_extension.or(by_type);
    let named_by = if by_extension.is_some() {
        format!("extension .{}", extension.as_deref().unwrap_or_default())
    } else {
        format!("Content-Type {}", content_type.unwrap_or_default())
    };

    if let Some(signature) = signature(head)? {
        let format = signature.format;
        return match named {
            None => Ok(Detection {
                format,
                decided: Decided::Bytes,
                reason: format!("{} signature", signature.what),
            }),
            Some(n) if n == format || (format == Format::Records && !n.is_binary_format()) => {
                Ok(Detection {
                    format,
                    decided: Decided::Bytes,
                    reason: format!("{} signature; {named_by} agrees", signature.what),
                })
            }
            Some(n) => Err(unsupported(format!(
                "the {named_by} says {n} but the bytes are a {}",
                signature.what
            ))),
        };
    }

    let text = Sniff::of(head);
    if text == Sniff::Binary {
        return Err(unsupported(match named {
            Some(n) => format!("the {named_by} says {n} but the bytes are not text"),
            None => "binary content of no known format".into(),
        }));
    }
    match (by_extension, by_type) {
        (Some(n), _) if n.is_binary_format() => Err(unsupported(format!(
            "the {named_by} says {n} but the bytes do not start as one"
        ))),
        (Some(n), _) => Ok(Detection {
            format: n,
            decided: Decided::Extension,
            reason: named_by,
        }),
        (None, Some(n)) if n.is_binary_format() => Err(unsupported(format!(
            "the {named_by} says {n} but the bytes do not start as one"
        ))),
        (None, Some(n)) => Ok(Detection {
            format: n,
            decided: Decided::ContentType,
            reason: named_by,
        }),
        (None, None) => {
            let (format, what) = match text {
                Sniff::Html => (Format::Html, "starts like HTML"),
                Sniff::Json => (Format::Records, "starts like JSON"),
                _ => (Format::Text, "text without a known extension or type"),
            };
            Ok(Detection {
                format,
                decided: Decided::Sniffed,
                reason: what.into(),
            })
        }
    }
}

/// The key's extension, lower-case, without `.gz` (records may be gzip-compressed).
fn extension(key: &str) -> Option<String> {
    let name = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_string())
}

fn format_of_extension(ext: &str) -> Option<Format> {
    Some(match ext {
        "json" | "jsonl" | "ndjson" | "jsonlines" => Format::Records,
        "txt" | "text" => Format::Text,
        "md" | "markdown" => Format::Markdown,
        "html" | "htm" | "xhtml" => Format::Html,
        "csv" => Format::Csv,
        "xlsx" => Format::Xlsx,
        "docx" => Format::Docx,
        "pdf" => Format::Pdf,
        _ => return None,
    })
}

/// Extensions of formats refused whatever the bytes, with the reason.
fn declined_extension(ext: &str) -> Option<String> {
    let what = match ext {
        "doc" => "a legacy Word binary document (.doc)",
        "xls" => "a legacy Excel binary workbook (.xls)",
        "ppt" | "pptx" => "a PowerPoint presentation",
        _ => return None,
    };
    let fix = match ext {
        "doc" => "; save it as .docx",
        "xls" => "; save it as .xlsx",
        _ => "",
    };
    Some(format!("{what} is not read{fix}"))
}

fn format_of_content_type(value: &str) -> Option<Format> {
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    Some(match essence.as_str() {
        "application/json"
        | "application/x-ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines" => Format::Records,
        "text/plain" => Format::Text,
        "text/markdown" | "text/x-markdown" => Format::Markdown,
        "text/html" | "application/xhtml+xml" => Format::Html,
        "text/csv" => Format::Csv,
        "application/pdf" => Format::Pdf,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => Format::Docx,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => Format::Xlsx,
        _ => return None,
    })
}

struct Signature {
    format: Format,
    what: &'static str,
}

/// A binary signature at the start of `head`; `Err` for signatures of formats sakuin refuses.
fn signature(head: &[u8]) -> Result<Option<Signature>, Unsupported> {
    let found = |format, what| Ok(Some(Signature { format, what }));
    // PDF readers accept the header anywhere in the first 1024 bytes (some writers put junk
    // before it).
    if head[..head.len().min(1024)]
        .windows(5)
        .any(|w| w == b"%PDF-")
    {
        return found(Format::Pdf, "PDF");
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return found(Format::Records, "gzip");
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return match zip_kind(head) {
            ZipKind::Docx => found(Format::Docx, "Word document (zip with word/document.xml)"),
            ZipKind::Xlsx => found(Format::Xlsx, "Excel workbook (zip with xl/workbook.xml)"),
            ZipKind::Other(what) => Err(unsupported(format!("a zip archive that is {what}"))),
        };
    }
    if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return Err(unsupported(
            "a legacy Office binary file (.doc / .xls); save it as .docx / .xlsx",
        ));
    }
    for (magic, what) in [
        (&b"\x89PNG"[..], "a PNG image"),
        (b"\xFF\xD8\xFF", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"II*\x00", "a TIFF image"),
        (b"MM\x00*", "a TIFF image"),
        (b"{\\rtf", "an RTF document"),
    ] {
        if head.starts_with(magic) {
            return Err(unsupported(format!("{what}, not a document sakuin reads")));
        }
    }
    Ok(None)
}

enum ZipKind {
    Docx,
    Xlsx,
    Other(&'static str),
}

/// What a zip holds, from the entry names in its headers (local headers from the start, the
/// central directory when `head` reaches the end). Office writes `[Content_Types].xml` and the
/// main part among the first entries, so the head of the file is usually enough.
fn zip_kind(head: &[u8]) -> ZipKind {
    let has = |name: &[u8]| head.windows(name.len()).any(|w| w == name);
    if has(b"word/document.xml") {
        ZipKind::Docx
    } else if has(b"xl/workbook.xml") {
        ZipKind::Xlsx
    } else if has(b"ppt/presentation.xml") {
        ZipKind::Other("a PowerPoint presentation, not read")
    } else if has(b"mimetypeapplication/vnd.oasis.opendocument") {
        ZipKind::Other("an OpenDocument file, not read; save it as .docx / .xlsx")
    } else {
        ZipKind::Other("neither a Word document nor an Excel workbook")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniff {
    Html,
    Json,
    Other,
    Binary,
}

impl Sniff {
    fn of(head: &[u8]) -> Sniff {
        let decoded;
        let text: &str = if let Some(rest) = head.strip_prefix(b"\xEF\xBB\xBF") {
            decoded = String::from_utf8_lossy(rest).into_owned();
            &decoded
        } else if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
            let (cow, _, _) = encoding_rs::UTF_16LE.decode(head);
            decoded = cow.into_owned();
            &decoded
        } else {
            if head[..head.len().min(1024)].contains(&0) {
                return Sniff::Binary;
            }
            decoded = String::from_utf8_lossy(head).into_owned();
            &decoded
        };
        let start = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        let lower: String = start.chars().take(15).collect::<String>().to_lowercase();
        if lower.starts_with("<!doctype html") || lower.starts_with("<html") {
            Sniff::Html
        } else if start.starts_with('{') || start.starts_with('[') {
            Sniff::Json
        } else {
            Sniff::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj";
    const DOCX: &[u8] = include_bytes!("../../../dev/samples/documents/report.docx");
    const XLSX: &[u8] = include_bytes!("../../../dev/samples/documents/workbook.xlsx");

    fn format(key: &str, ct: Option<&str>, head: &[u8]) -> Format {
        detect(key, ct, head).unwrap().format
    }

    fn refused(key: &str, ct: Option<&str>, head: &[u8]) -> String {
        detect(key, ct, head).unwrap_err().reason
    }

    #[test]
    fn signatures_decide_binary_formats() {
        let d = detect("docs/a.pdf", Some("application/pdf"), PDF).unwrap();
        assert_eq!((d.format, d.decided), (Format::Pdf, Decided::Bytes));
        assert!(d.reason.contains("extension .pdf agrees"), "{}", d.reason);
        // No name, S3's default type: the bytes alone.
        assert_eq!(
            format("upload-1234", Some("binary/octet-stream"), DOCX),
            Format::Docx
        );
        assert_eq!(format("upload-1234", None, XLSX), Format::Xlsx);
        // Junk before the header is allowed within the first kilobyte.
        let late = [&b"\r\n\r\n"[..], PDF].concat();
        assert_eq!(format("x.pdf", None, &late), Format::Pdf);
    }

    #[test]
    fn mismatched_name_and_bytes_are_refused() {
        let reason = refused("report.pdf", None, DOCX);
        assert!(reason.contains("extension .pdf says PDF"), "{reason}");
        assert!(reason.contains("Word document"), "{reason}");
        let reason = refused("sheet.docx", None, XLSX);
        assert!(reason.contains("Excel workbook"), "{reason}");
        let reason = refused("scan.docx", None, PDF);
        assert!(
            reason.contains("says Word document but the bytes are a PDF"),
            "{reason}"
        );
        // A binary extension on text.
        let reason = refused("notes.pdf", None, b"just some text");
        assert!(reason.contains("do not start as one"), "{reason}");
        // A type that contradicts the bytes when the key says nothing.
        let reason = refused("blob", Some("application/pdf"), DOCX);
        assert!(reason.contains("Content-Type application/pdf"), "{reason}");
        // A text extension on a PDF.
        assert!(refused("notes.txt", None, PDF).contains("bytes are a PDF"));
    }

    #[test]
    fn the_extension_outranks_the_content_type_for_text() {
        let d = detect("guide.md", Some("text/plain"), b"# Title\n\nbody").unwrap();
        assert_eq!(
            (d.format, d.decided),
            (Format::Markdown, Decided::Extension)
        );
        let d = detect("guide", Some("text/markdown; charset=utf-8"), b"# Title").unwrap();
        assert_eq!(
            (d.format, d.decided),
            (Format::Markdown, Decided::ContentType)
        );
        assert_eq!(
            format("prices.CSV", None, "品番,品名".as_bytes()),
            Format::Csv
        );
        assert_eq!(
            format("data.jsonl.gz", None, &[0x1f, 0x8b, 8, 0]),
            Format::Records
        );
        assert_eq!(format("page.htm", None, b"<p>hi"), Format::Html);
    }

    #[test]
    fn text_without_a_name_is_sniffed() {
        let d = detect("upload", None, b"\n  <!DOCTYPE html><html>").unwrap();
        assert_eq!((d.format, d.decided), (Format::Html, Decided::Sniffed));
        assert_eq!(format("upload", None, b"<HTML><body>"), Format::Html);
        assert_eq!(format("upload", None, b"{\"text\": 1}"), Format::Records);
        assert_eq!(format("upload", None, b"\xEF\xBB\xBF[{}]"), Format::Records);
        assert_eq!(
            format("upload", None, "ただの文章".as_bytes()),
            Format::Text
        );
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("<html>".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(format("upload", None, &utf16), Format::Html);
        // A UTF-16 text file has NULs but is text.
        assert_eq!(format("notes.txt", None, &utf16), Format::Text);
    }

    #[test]
    fn formats_sakuin_does_not_read_say_what_they_are() {
        let ole = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0, 0];
        assert!(refused("old.doc", None, &ole).contains("save it as .docx"));
        assert!(refused("blob", None, &ole).contains("legacy Office"));
        assert!(refused("old.xls", None, b"").contains(".xlsx"));
        assert!(refused("photo", None, b"\x89PNG\r\n\x1a\n").contains("PNG"));
        assert!(refused("a.bin", None, b"\x00\x01\x02").contains("binary"));
        let reason = refused("a.txt", None, b"\x00\x01\x02");
        assert!(reason.contains("not text"), "{reason}");
        let zip = b"PK\x03\x04\x14\x00\x00\x00\x08\x00xxxxfoo/bar.txt";
        assert!(refused("a.zip", None, zip).contains("neither a Word document"));
    }

    #[test]
    fn extension_parsing() {
        assert_eq!(extension("a/b/c.PDF").as_deref(), Some("pdf"));
        assert_eq!(extension("a/b.json.gz").as_deref(), Some("json"));
        assert_eq!(extension("a.d/noext"), None);
        assert_eq!(extension(".hidden"), None);
    }
}
