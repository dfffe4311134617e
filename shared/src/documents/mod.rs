//! Documents as they are (PDF, Word, Excel, CSV, HTML, Markdown, plain text): the format
//! decided from the name, the stored type and the bytes, and the text read out in sections a
//! search result can cite.
//!
//! [`detect`] decides the format; [`extract`] reads an object's body into [`Section`]s, each the
//! natural unit of its format (a page, the text under a heading, a table row, a paragraph) with
//! the [`Citation`] that says where it came from. Formats whose structure is at the end of the
//! file (PDF, and the zip of Word and Excel) are read whole, up to their limit; CSV and plain
//! text stream a section at a time. Every failure is an [`ExtractError`] whose
//! [`kind`](ExtractError::kind) a log line and a metric can name; hostile input (an encrypted
//! or image-only PDF, a zip bomb, broken XML, text that is not UTF-8) is one of them, never a
//! panic or an unbounded read.

use std::io::{self, BufReader, Read};

use serde_json::{Map, Value};

mod archive;
mod csv;
pub mod detect;
mod docx;
mod html;
mod markdown;
pub mod metadata;
mod pdf;
pub mod stream;
mod table;
mod text;
mod xlsx;

pub use detect::{Decided, Detection, Format, SNIFF_BYTES, Unsupported, detect};
pub use metadata::{METADATA_SUFFIX, described_key, metadata_key, parse_metadata};
pub use stream::{AsyncBody, DetectError, SectionStream, detect_body};
pub use table::TableMapping;

/// The most bytes of a PDF read: Bedrock Knowledge Bases' 50 MB per file. A PDF is parsed
/// whole (its cross-reference table is at the end), and lopdf keeps the file and its objects
/// in memory (streams stay compressed until a page is read): about 1.5 times the file at the
/// peak, within a 256 MB function for a full-size PDF.
pub const MAX_PDF_BYTES: u64 = 50_000_000;

/// The most bytes of a Word or Excel file (a zip, read whole for its central directory):
/// Bedrock Knowledge Bases' 50 MB. What is inflated out of it has its own bound,
/// [`MAX_UNZIPPED_BYTES`].
pub const MAX_OFFICE_BYTES: u64 = 50_000_000;

/// The most bytes inflated out of one Word or Excel file, all parts together. Each part is
/// inflated once and counted as it comes out, whatever the zip's headers claim, so a zip bomb
/// stops here. A 50 MB workbook of text inflates about 5 to 10 times; the bound leaves room for
/// that while one part (the largest, a sheet or `document.xml`) fits beside the file in memory.
pub const MAX_UNZIPPED_BYTES: u64 = 200 * 1024 * 1024;

/// The most entries a Word or Excel zip may list: real documents have tens to a few thousand
/// (one per image, sheet and style part); more is an archive built to waste time.
pub const MAX_ZIP_ENTRIES: usize = 10_000;

/// The most one stream of a PDF may inflate to (an object stream, a page's contents, a
/// CMap): far above what a page of text needs, and a bound on what a crafted stream costs.
pub const MAX_PDF_STREAM_BYTES: usize = 64 * 1024 * 1024;

/// The most bytes of page content inflated for one PDF, all pages together. A page may draw
/// the same content stream as every other page; without this, ten thousand pages of one 64 MB
/// stream would inflate 640 GB.
pub const MAX_PDF_CONTENT_BYTES: usize = 256 * 1024 * 1024;

/// The most bytes of Markdown or HTML read: Bedrock Knowledge Bases' 50 MB. Both are parsed
/// from one string (headings are found across the whole text), so the file is held in memory.
pub const MAX_MARKUP_BYTES: u64 = 50_000_000;

/// The most bytes of CSV or plain text read. Both stream one section at a time, so memory does
/// not grow with the file; the bound is Bedrock Knowledge Bases' 50 MB per file, kept so one
/// object's work stays within what an invocation can queue.
pub const MAX_STREAMED_BYTES: u64 = 50_000_000;

/// The most text one document may yield, all sections together. A small file can expand far
/// (an Excel shared string repeated in a million cells, a PDF content stream that draws the
/// same text again and again): this bounds the memory and the chunks one object can make.
pub const MAX_TEXT_BYTES: usize = 64 * 1024 * 1024;

/// The most bytes one section may hold: a CSV row or a paragraph of plain text without a
/// blank line; longer ones are cut here. Matches ingest's `MAX_RECORD_BYTES` default.
pub const MAX_SECTION_BYTES: usize = 4 * 1024 * 1024;

/// One piece of a document's text and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub text: String,
    pub citation: Citation,
    /// A table row's id, from [`TableMapping::id_column`]; `None` elsewhere.
    pub id: Option<String>,
    /// A table row's metadata columns ([`TableMapping`]); empty elsewhere.
    pub metadata: Map<String, Value>,
}

impl Section {
    fn new(text: String, citation: Citation) -> Self {
        Section {
            text,
            citation,
            id: None,
            metadata: Map::new(),
        }
    }
}

/// What a search result can cite for a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Citation {
    /// A PDF page, 1-based as viewers number them.
    Page { page: u32 },
    /// Markdown, HTML or Word: the headings the section sits under, outermost first
    /// (`["Installation", "3.2 Network"]`); empty before the first heading.
    Headings { path: Vec<String> },
    /// A CSV or Excel row: the sheet (Excel only), the row number as the file shows it (the
    /// CSV line the record starts on; Excel's row number), and the header of each column the
    /// text names.
    Row {
        sheet: Option<String>,
        row: u64,
        columns: Vec<String>,
    },
    /// Plain text: the paragraph's first and last line, 1-based.
    Lines { first: u64, last: u64 },
}

impl std::fmt::Display for Citation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Citation::Page { page } => write!(f, "page {page}"),
            Citation::Headings { path } if path.is_empty() => f.write_str("the beginning"),
            Citation::Headings { path } => f.write_str(&path.join(" > ")),
            Citation::Row {
                sheet: Some(sheet),
                row,
                ..
            } => write!(f, "sheet {sheet:?}, row {row}"),
            Citation::Row {
                sheet: None, row, ..
            } => write!(f, "line {row}"),
            Citation::Lines { first, last } if first == last => write!(f, "line {first}"),
            Citation::Lines { first, last } => write!(f, "lines {first}-{last}"),
        }
    }
}

impl Citation {
    /// The citation as stored with each chunk (`citation` in the index): the format, the label
    /// a search result shows, and the parts to filter on (`page`, `headings`, `sheet`, `row`,
    /// `lines` as `[first, last]`).
    pub fn fields(&self, format: Format) -> Value {
        let mut fields = Map::new();
        fields.insert("format".into(), format.name().into());
        fields.insert("label".into(), self.to_string().into());
        match self {
            Citation::Page { page } => {
                fields.insert("page".into(), (*page).into());
            }
            Citation::Headings { path } => {
                fields.insert("headings".into(), path.clone().into());
            }
            Citation::Row { sheet, row, .. } => {
                if let Some(sheet) = sheet {
                    fields.insert("sheet".into(), sheet.clone().into());
                }
                fields.insert("row".into(), (*row).into());
            }
            Citation::Lines { first, last } => {
                fields.insert("lines".into(), vec![*first, *last].into());
            }
        }
        Value::Object(fields)
    }
}

/// Why a document (or, for [`ExtractError::Row`], one row of it) yields no text.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("the {format} is larger than the {limit}-byte limit")]
    TooLarge { format: Format, limit: u64 },
    #[error("the document's text is larger than the {limit}-byte limit")]
    TooMuchText { limit: usize },
    #[error("the PDF is encrypted with a password")]
    Encrypted,
    #[error("no text to index: {reason}")]
    NoText { reason: String },
    #[error("the text is not UTF-8 (line {line}){}", .hint.map(|h| format!("; {h}")).unwrap_or_default())]
    NotUtf8 {
        line: u64,
        hint: Option<&'static str>,
    },
    /// A zip or a PDF stream that inflates past its bounds (a decompression bomb), or a zip
    /// that lists too many entries.
    #[error("the document expands past its bounds: {reason}")]
    Inflation { reason: String },
    #[error("the {format} is damaged: {reason}")]
    Corrupt { format: Format, reason: String },
    /// A parser panicked on this input; the panic was contained (see [`contain`]).
    #[error("the {format} parser failed on this input: {reason}")]
    ParserPanic { format: Format, reason: String },
    /// One row could not be read; the rows after it go on.
    #[error("line {line}: {reason}")]
    Row { line: u64, reason: String },
    #[error("reading the document failed: {0}")]
    Io(#[from] io::Error),
}

impl ExtractError {
    /// A stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ExtractError::TooLarge { .. } => "too_large",
            ExtractError::TooMuchText { .. } => "too_much_text",
            ExtractError::Encrypted => "encrypted",
            ExtractError::NoText { .. } => "no_text",
            ExtractError::NotUtf8 { .. } => "not_utf8",
            ExtractError::Inflation { .. } => "inflation",
            ExtractError::Corrupt { .. } => "corrupt",
            ExtractError::ParserPanic { .. } => "parser_panic",
            ExtractError::Row { .. } => "row",
            ExtractError::Io(_) => "io",
        }
    }

    /// Whether reading the same bytes again cannot help: everything but an I/O error.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, ExtractError::Io(_))
    }
}

/// How documents are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractSettings {
    /// How CSV and Excel rows become text, id and metadata.
    pub table: TableMapping,
    /// See [`MAX_TEXT_BYTES`].
    pub max_text_bytes: usize,
    /// See [`MAX_SECTION_BYTES`].
    pub max_section_bytes: usize,
    /// See [`MAX_UNZIPPED_BYTES`].
    pub max_unzipped_bytes: u64,
    /// See [`MAX_ZIP_ENTRIES`].
    pub max_zip_entries: usize,
}

impl Default for ExtractSettings {
    fn default() -> Self {
        ExtractSettings {
            table: TableMapping::default(),
            max_text_bytes: MAX_TEXT_BYTES,
            max_section_bytes: MAX_SECTION_BYTES,
            max_unzipped_bytes: MAX_UNZIPPED_BYTES,
            max_zip_entries: MAX_ZIP_ENTRIES,
        }
    }
}

impl Format {
    /// The most bytes of this format [`extract`] reads (`None`: records, read by
    /// [`crate::reader`] with its own per-record bound).
    pub fn max_input_bytes(self) -> Option<u64> {
        match self {
            Format::Pdf => Some(MAX_PDF_BYTES),
            Format::Docx | Format::Xlsx => Some(MAX_OFFICE_BYTES),
            Format::Markdown | Format::Html => Some(MAX_MARKUP_BYTES),
            Format::Csv | Format::Text => Some(MAX_STREAMED_BYTES),
            Format::Records => None,
        }
    }

    /// Whether [`extract`] streams this format (memory independent of its size) or reads it
    /// whole first.
    pub fn streams(self) -> bool {
        matches!(self, Format::Csv | Format::Text)
    }
}

/// A document's sections, in document order. A [`ExtractError::Row`] item skips one row and
/// the sections go on; after any other error there are none.
pub struct Sections {
    inner: SectionsInner,
    text_bytes: usize,
    max_text_bytes: usize,
    done: bool,
}

enum SectionsInner {
    Read(std::vec::IntoIter<Section>),
    Csv(Box<csv::CsvSections>),
    Text(Box<text::TextSections>),
}

impl Iterator for Sections {
    type Item = Result<Section, ExtractError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = match &mut self.inner {
            SectionsInner::Read(sections) => sections.next().map(Ok),
            SectionsInner::Csv(rows) => rows.next(),
            SectionsInner::Text(paragraphs) => paragraphs.next(),
        };
        match &next {
            Some(Ok(section)) => {
                self.text_bytes += section.text.len();
                if self.text_bytes > self.max_text_bytes {
                    self.done = true;
                    return Some(Err(ExtractError::TooMuchText {
                        limit: self.max_text_bytes,
                    }));
                }
            }
            Some(Err(ExtractError::Row { .. })) => {}
            Some(Err(_)) | None => self.done = true,
        }
        next
    }
}

/// Reads a document of `format` from `body` into its sections. Reads at most the format's
/// [`max_input_bytes`](Format::max_input_bytes) (more is [`ExtractError::TooLarge`]); CSV and
/// plain text stream, the others are read whole and parsed before the first section comes
/// out. Blocking: call it where blocking is allowed (`spawn_blocking` in async code).
///
/// [`Format::Records`] is not a document: ingest's record reader takes it, and this answers
/// [`ExtractError::NoText`].
pub fn extract(
    format: Format,
    body: impl Read + Send + 'static,
    settings: &ExtractSettings,
) -> Result<Sections, ExtractError> {
    let Some(limit) = format.max_input_bytes() else {
        return Err(ExtractError::NoText {
            reason: "JSON records are read by the record reader, not as a document".into(),
        });
    };
    let inner = match format {
        Format::Csv => SectionsInner::Csv(Box::new(csv::CsvSections::new(
            capped(body, format, limit),
            settings,
        )?)),
        Format::Text => SectionsInner::Text(Box::new(text::TextSections::new(
            capped(body, format, limit),
            settings.max_section_bytes,
        )?)),
        _ => {
            let bytes = read_capped(body, format, limit)?;
            SectionsInner::Read(extract_bytes(format, &bytes, settings)?.into_iter())
        }
    };
    Ok(Sections {
        inner,
        text_bytes: 0,
        max_text_bytes: settings.max_text_bytes,
        done: false,
    })
}

/// Reads a whole document already in memory (at most its format's limit) into its sections.
pub fn extract_bytes(
    format: Format,
    bytes: &[u8],
    settings: &ExtractSettings,
) -> Result<Vec<Section>, ExtractError> {
    if let Some(limit) = format.max_input_bytes()
        && bytes.len() as u64 > limit
    {
        return Err(ExtractError::TooLarge { format, limit });
    }
    let sections = match format {
        Format::Pdf => pdf::extract(bytes)?,
        Format::Docx => docx::extract(bytes, settings)?,
        Format::Xlsx => xlsx::extract(bytes, settings)?,
        Format::Markdown => markdown::extract(&text::decode_whole(bytes)?),
        Format::Html => html::extract(&text::decode_whole(bytes)?)?,
        Format::Csv | Format::Text => {
            let owned = bytes.to_vec();
            return extract(format, io::Cursor::new(owned), settings)?.collect_sections();
        }
        Format::Records => {
            return Err(ExtractError::NoText {
                reason: "JSON records are read by the record reader, not as a document".into(),
            });
        }
    };
    let total: usize = sections.iter().map(|s| s.text.len()).sum();
    if total > settings.max_text_bytes {
        return Err(ExtractError::TooMuchText {
            limit: settings.max_text_bytes,
        });
    }
    if sections.is_empty() && format != Format::Pdf {
        // PDF says why itself (image-only, no pages).
        return Err(ExtractError::NoText {
            reason: format!("the {format} holds no text"),
        });
    }
    Ok(sections)
}

impl Sections {
    /// All sections, or the first error; for tests and small documents.
    pub fn collect_sections(self) -> Result<Vec<Section>, ExtractError> {
        self.collect()
    }
}

/// `body` as a buffered reader that fails with [`ExtractError::TooLarge`] (as an I/O error of
/// kind `FileTooLarge` carrying it) past `limit` bytes.
fn capped(body: impl Read + Send + 'static, format: Format, limit: u64) -> BufReader<Capped> {
    BufReader::with_capacity(
        64 * 1024,
        Capped {
            inner: Box::new(body),
            left: limit,
            format,
            limit,
        },
    )
}

struct Capped {
    inner: Box<dyn Read + Send>,
    left: u64,
    format: Format,
    limit: u64,
}

impl Read for Capped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more than the limit means the document is over it.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    TooLargeMarker(self.format, self.limit),
                )),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[derive(Debug)]
struct TooLargeMarker(Format, u64);

impl std::fmt::Display for TooLargeMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} is larger than the {}-byte limit", self.0, self.1)
    }
}

impl std::error::Error for TooLargeMarker {}

/// An I/O error from a [`Capped`] reader back into [`ExtractError::TooLarge`].
fn io_error(e: io::Error) -> ExtractError {
    if let Some(marker) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TooLargeMarker>())
    {
        return ExtractError::TooLarge {
            format: marker.0,
            limit: marker.1,
        };
    }
    ExtractError::Io(e)
}

fn read_capped(body: impl Read, format: Format, limit: u64) -> Result<Vec<u8>, ExtractError> {
    let mut bytes = Vec::new();
    body.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ExtractError::TooLarge { format, limit });
    }
    Ok(bytes)
}

/// Runs a parser over untrusted bytes, turning a panic inside it into
/// [`ExtractError::ParserPanic`]. The parsers are third-party crates that were not written for
/// hostile input throughout (an index out of range on a crafted PDF is a panic, not an error);
/// one bad document must not end the invocation and every other object in it. This only holds
/// where panics unwind: under `panic = "abort"` a panic still ends the process.
fn contain<T>(
    format: Format,
    parse: impl FnOnce() -> Result<T, ExtractError>,
) -> Result<T, ExtractError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)) {
        Ok(result) => result,
        Err(payload) => {
            let reason = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Err(ExtractError::ParserPanic { format, reason })
        }
    }
}

/// Collapses runs of spaces and tabs, trims each line and drops blank lines beyond one, so
/// extracted text reads as paragraphs.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = false;
    for line in text.lines() {
        let mut cleaned = String::with_capacity(line.len());
        for word in line.split([' ', '\t', '\u{a0}']).filter(|w| !w.is_empty()) {
            if !cleaned.is_empty() {
                cleaned.push(' ');
            }
            cleaned.push_str(word);
        }
        if cleaned.is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank { "\n\n" } else { "\n" });
        }
        blank = false;
        out.push_str(&cleaned);
    }
    out
}

/// Sections under headings, for the formats that have them (Markdown, HTML, Word): text is
/// gathered under the current heading path and becomes a section when the next heading
/// starts; the heading's own text leads its section.
#[derive(Debug, Default)]
struct HeadingSections {
    path: Vec<(u8, String)>,
    text: String,
    sections: Vec<Section>,
}

impl HeadingSections {
    /// A heading of `level` (1 outermost): the text so far is a section, the path is cut back
    /// to the headings above `level`.
    fn heading(&mut self, level: u8, title: &str) {
        self.finish();
        let title = tidy(title).replace('\n', " ");
        self.path.retain(|(l, _)| *l < level);
        if title.is_empty() {
            return;
        }
        self.text.push_str(&title);
        self.text.push_str("\n\n");
        self.path.push((level, title));
    }

    fn push_text(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// Ends a block (paragraph, list item, table row): what follows starts a new paragraph.
    fn paragraph(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with("\n\n") {
            self.text.push_str("\n\n");
        }
    }

    fn line(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
        }
    }

    fn finish(&mut self) {
        let text = tidy(&std::mem::take(&mut self.text));
        let heading_only = self
            .path
            .last()
            .is_some_and(|(_, title)| text == tidy(title));
        if text.is_empty() || heading_only {
            return;
        }
        let path = self.path.iter().map(|(_, t)| t.clone()).collect();
        self.sections
            .push(Section::new(text, Citation::Headings { path }));
    }

    fn into_sections(mut self) -> Vec<Section> {
        self.finish();
        self.sections
    }
}

#[cfg(test)]
mod tests;
