//! Streams records out of an object: JSON Lines, a JSON array of objects, a single object or
//! concatenated objects, gzip-compressed or not, holding at most one record in memory.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;

use async_compression::tokio::bufread::GzipDecoder;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use crate::retry::Deadline;

/// Bytes read from the source per system call; also the decompressed read size.
const READ_BUFFER: usize = 64 * 1024;

/// Where a record sits in its object: a line number (1-based) for JSON Lines, the position
/// (0-based) in the top-level array or value sequence otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordPosition {
    Line(u64),
    Index(u64),
}

impl RecordPosition {
    /// The number stored as `source.record` and used in derived document ids.
    pub fn number(self) -> u64 {
        match self {
            RecordPosition::Line(n) | RecordPosition::Index(n) => n,
        }
    }
}

impl std::fmt::Display for RecordPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordPosition::Line(n) => write!(f, "line {n}"),
            RecordPosition::Index(n) => write!(f, "record {n}"),
        }
    }
}

/// Why one record was rejected; the rest of the object goes on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("record is larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
}

/// An object-level failure: nothing more can be read from it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not JSON or JSON Lines: it starts with byte 0x{0:02x}")]
    UnsupportedFormat(u8),
    #[error("no array of records at {0:?} (RECORDS_PATH)")]
    RecordsPathNotFound(String),
    #[error("reading the object failed: {0}")]
    Io(#[from] io::Error),
    /// Skipping to a resume point (gzip content is decompressed from its start) outlasted the
    /// time given; nothing was read past the resume point.
    #[error("the time ran out while skipping to byte {offset} of the content")]
    OutOfTime { offset: u64 },
}

/// One record as read: where it was and what it held.
#[derive(Debug)]
pub struct RawRecord {
    pub position: RecordPosition,
    pub value: Result<Value, RecordError>,
    /// The record's bytes when it could not be read (the first `max_record_bytes` of an
    /// oversized one), kept for the rejects object; empty otherwise.
    pub raw: Vec<u8>,
    /// Where reading would continue after this record.
    pub resume: ResumePoint,
}

/// What the object's name says about its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatHint {
    JsonLines,
    Unknown,
}

impl FormatHint {
    pub fn from_key(key: &str) -> Self {
        let lower = key.to_ascii_lowercase();
        let base = lower.strip_suffix(".gz").unwrap_or(&lower);
        if [".jsonl", ".ndjson", ".jsonlines"]
            .iter()
            .any(|ext| base.ends_with(ext))
        {
            FormatHint::JsonLines
        } else {
            FormatHint::Unknown
        }
    }
}

pub type BoxedBufRead = Pin<Box<dyn AsyncBufRead + Send>>;

/// Opens an object's body for record reading: gzip is recognised by its magic bytes (so `.gz` keys and
/// unnamed compressed objects both work), the layout by the extension or the first line.
pub async fn open_records(
    body: impl AsyncRead + Send + 'static,
    key: &str,
    max_record_bytes: usize,
) -> Result<RecordReader<BoxedBufRead>, ReadError> {
    open_records_at(body, key, max_record_bytes, &[]).await
}

/// Like `open_records`, for documents whose records are the array at a field path (for
/// `["data", "items"]`: `{"data": {"items": [ ...records... ]}}`), streamed element by element.
pub async fn open_records_at(
    body: impl AsyncRead + Send + 'static,
    key: &str,
    max_record_bytes: usize,
    records_path: &[String],
) -> Result<RecordReader<BoxedBufRead>, ReadError> {
    open_records_from(body, key, max_record_bytes, records_path, None).await
}

/// Like `open_records_at`, continuing after the record that `resume` was taken from (the
/// content before it is read and skipped: gzip cannot seek, and plain objects are cheap to skip).
pub async fn open_records_from(
    body: impl AsyncRead + Send + 'static,
    key: &str,
    max_record_bytes: usize,
    records_path: &[String],
    resume: Option<ResumePoint>,
) -> Result<RecordReader<BoxedBufRead>, ReadError> {
    let resume = resume.map(|point| Resume {
        point,
        body_offset: 0,
        skip_deadline: None,
    });
    open_records_resumed(body, key, max_record_bytes, records_path, resume).await
}

/// How a later part of an object is read.
#[derive(Debug, Clone, Copy)]
pub struct Resume {
    /// Where the earlier part stopped.
    pub point: ResumePoint,
    /// Where the body starts in the object: above 0 after a ranged read, which only plain
    /// content allows (a gzip stream cannot be entered in the middle).
    pub body_offset: u64,
    /// Skipping to the resume point gives up with `ReadError::OutOfTime` once this passes.
    pub skip_deadline: Option<Deadline>,
}

/// Like `open_records_from`, for a body that may start past the object's first byte and a skip
/// that may run out of time.
pub async fn open_records_resumed(
    body: impl AsyncRead + Send + 'static,
    key: &str,
    max_record_bytes: usize,
    records_path: &[String],
    resume: Option<Resume>,
) -> Result<RecordReader<BoxedBufRead>, ReadError> {
    let body: Pin<Box<dyn AsyncRead + Send>> = Box::pin(body);
    let raw = BufReader::with_capacity(READ_BUFFER, body);
    let body_offset = resume.map_or(0, |r| r.body_offset);
    if let Some(r) = resume {
        check_resumable(r)?;
    }
    let (mut src, gzip) = decoded(raw, body_offset).await?;
    if let Some(r) = resume {
        skip_to(&mut src, r, body_offset).await?;
    }
    let mut reader = RecordReader::new(src, FormatHint::from_key(key), max_record_bytes);
    reader.compressed = Some(gzip);
    if !records_path.is_empty() {
        let mut navigator = Navigator::new(records_path);
        navigator.found = resume.is_some();
        reader.splitter.navigator = Some(navigator);
        reader.splitter.mode = Mode::Values;
    }
    if let Some(Resume { point, .. }) = resume {
        let s = &mut reader.splitter;
        s.mode = if point.values {
            Mode::Values
        } else {
            Mode::Lines
        };
        s.bom_checked = true;
        s.pos = point.offset;
        s.line = point.line;
        s.index = point.index;
        s.in_array = point.in_array;
    }
    Ok(reader)
}

/// A read that starts past byte 0 can resume only plain content, at or after where it starts.
fn check_resumable(r: Resume) -> Result<(), ReadError> {
    if r.body_offset == 0 || (r.point.compressed == Some(false) && r.body_offset <= r.point.offset)
    {
        return Ok(());
    }
    let kind = match r.point.compressed {
        Some(true) => "compressed",
        Some(false) => "plain",
        None => "possibly compressed",
    };
    Err(ReadError::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "a read from byte {} cannot resume at byte {} of {kind} content",
            r.body_offset, r.point.offset
        ),
    )))
}

/// The content, decompressed when its first bytes are gzip's magic (whatever the key's name
/// says), and whether it was.
async fn decoded(
    mut raw: BufReader<Pin<Box<dyn AsyncRead + Send>>>,
    body_offset: u64,
) -> Result<(BoxedBufRead, bool), ReadError> {
    let mut magic = Vec::with_capacity(2);
    // Only an object's first bytes can be the gzip magic.
    while body_offset == 0 && magic.len() < 2 {
        let buf = raw.fill_buf().await?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len().min(2 - magic.len());
        magic.extend_from_slice(&buf[..n]);
        raw.consume(n);
    }
    let gzip = magic == [0x1f, 0x8b];
    let stream = io::Cursor::new(magic).chain(raw);
    let src: BoxedBufRead = if gzip {
        let mut decoder = GzipDecoder::new(BufReader::with_capacity(READ_BUFFER, stream));
        decoder.multiple_members(true);
        Box::pin(BufReader::with_capacity(READ_BUFFER, decoder))
    } else {
        Box::pin(BufReader::with_capacity(READ_BUFFER, stream))
    };
    Ok((src, gzip))
}

/// Skips the (decompressed) content up to the resume point; out of time is its own error, so
/// the work is handed over rather than failed.
async fn skip_to(src: &mut BoxedBufRead, r: Resume, body_offset: u64) -> Result<(), ReadError> {
    let point = r.point;
    let mut left = point.offset - body_offset;
    while left > 0 {
        if r.skip_deadline
            .is_some_and(|d| !d.allows(std::time::Duration::ZERO))
        {
            return Err(ReadError::OutOfTime {
                offset: point.offset,
            });
        }
        let buf = src.fill_buf().await?;
        if buf.is_empty() {
            return Err(ReadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the object ends at {} bytes, before the resume point at {}",
                    point.offset - left,
                    point.offset
                ),
            )));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        src.consume(n);
        left -= n as u64;
    }
    Ok(())
}

/// Pulls records from a buffered byte stream.
pub struct RecordReader<R> {
    src: R,
    splitter: Splitter,
    done: bool,
    /// Whether the object was gzip, when the reader was opened on the object itself.
    compressed: Option<bool>,
}

impl<R: AsyncBufRead + Unpin> RecordReader<R> {
    pub fn new(src: R, hint: FormatHint, max_record_bytes: usize) -> Self {
        Self {
            src,
            splitter: Splitter::new(hint, max_record_bytes),
            done: false,
            compressed: None,
        }
    }

    /// The next record, `None` at the end of the object.
    pub async fn next_record(&mut self) -> Result<Option<RawRecord>, ReadError> {
        loop {
            if let Some(mut record) = self.splitter.pop() {
                record.resume.compressed = self.compressed;
                return Ok(Some(record));
            }
            if let Some(byte) = self.splitter.unsupported {
                return Err(ReadError::UnsupportedFormat(byte));
            }
            if self.done
                && let Some(nav) = &self.splitter.navigator
                && !nav.found
            {
                let path = nav
                    .path
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect::<Vec<_>>()
                    .join(".");
                return Err(ReadError::RecordsPathNotFound(path));
            }
            if self.done {
                return Ok(None);
            }
            let buf = self.src.fill_buf().await?;
            if buf.is_empty() {
                self.splitter.finish();
                self.done = true;
                continue;
            }
            let n = buf.len();
            self.splitter.feed(buf);
            self.src.consume(n);
        }
    }

    /// Whether no record is left, reading ahead only as far as the bytes already on their way.
    pub async fn is_done(&mut self) -> Result<bool, ReadError> {
        if !self.splitter.ready.is_empty() {
            return Ok(false);
        }
        if !self.done && self.src.fill_buf().await?.is_empty() {
            self.splitter.finish();
            self.done = true;
        }
        Ok(self.done && self.splitter.ready.is_empty())
    }

    /// Bytes of (decompressed) content read so far.
    pub fn bytes_read(&self) -> u64 {
        self.splitter.bytes
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Waiting for the first line to decide between `Lines` and `Values`.
    Detect,
    Lines,
    Values,
}

/// A pending record: its bytes and where it started.
struct Pending {
    bytes: Vec<u8>,
    position: RecordPosition,
    too_large: bool,
    resume: ResumePoint,
}

/// Where reading can pick up again right after a record, in a later invocation: the offset in
/// the (decompressed) content and the scanner's counters at that point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumePoint {
    pub offset: u64,
    pub line: u64,
    pub index: u64,
    /// `true` when scanning JSON values (arrays, documents), `false` for JSON Lines.
    pub values: bool,
    /// Inside the top-level (or `RECORDS_PATH`) array.
    pub in_array: bool,
    /// Whether the object is gzip-compressed; `Some(false)` lets a later part read from
    /// `offset` with a ranged GET instead of from byte 0. Unknown in points taken before this
    /// was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed: Option<bool>,
}

/// Cuts a byte stream into record byte strings, in one of two modes: line by line (JSON Lines;
/// a broken line costs only that line), or by tracking JSON nesting (arrays, pretty-printed
/// objects; a top-level array is flattened into its elements).
struct Splitter {
    hint: FormatHint,
    max: usize,
    mode: Mode,
    bytes: u64,
    bom_checked: bool,
    unsupported: Option<u8>,
    detect_buf: Vec<u8>,
    ready: VecDeque<Pending>,
    cur: Vec<u8>,
    cur_too_large: bool,
    line: u64,
    record_line: u64,
    index: u64,
    // `Values` scanner state.
    in_value: bool,
    in_array: bool,
    depth: u32,
    in_string: bool,
    escape: Escape,
    scalar: bool,
    /// Finds the records array under a field path before element streaming starts.
    navigator: Option<Navigator>,
    /// The records array under the path has ended; the rest of the document is not records.
    path_done: bool,
    /// Offset of the next byte the mode scanners read, in the (decompressed) content.
    pos: u64,
    /// Offset just past the record being emitted.
    record_end: u64,
}

impl Splitter {
    fn new(hint: FormatHint, max: usize) -> Self {
        Self {
            hint,
            max: max.max(1),
            mode: Mode::Detect,
            bytes: 0,
            bom_checked: false,
            unsupported: None,
            detect_buf: Vec::new(),
            ready: VecDeque::new(),
            cur: Vec::new(),
            cur_too_large: false,
            line: 1,
            record_line: 1,
            index: 0,
            in_value: false,
            in_array: false,
            depth: 0,
            in_string: false,
            escape: Escape::default(),
            scalar: false,
            navigator: None,
            path_done: false,
            pos: 0,
            record_end: 0,
        }
    }

    fn pop(&mut self) -> Option<RawRecord> {
        let p = self.ready.pop_front()?;
        let value = if p.too_large {
            Err(RecordError::TooLarge { limit: self.max })
        } else {
            serde_json::from_slice::<Value>(&p.bytes)
                .map_err(|e| RecordError::InvalidJson(e.to_string()))
        };
        let raw = if value.is_err() { p.bytes } else { Vec::new() };
        Some(RawRecord {
            position: p.position,
            value,
            raw,
            resume: p.resume,
        })
    }

    fn feed(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        if self.mode == Mode::Detect {
            self.detect_buf.extend_from_slice(data);
            self.try_detect(false);
        } else {
            self.dispatch(data);
        }
    }

    /// Drops a UTF-8 byte order mark, then picks the mode once the start of the object allows.
    fn try_detect(&mut self, at_end: bool) {
        const BOM: &[u8] = b"\xef\xbb\xbf";
        if !self.bom_checked {
            if !at_end && self.detect_buf.len() < BOM.len() && BOM.starts_with(&self.detect_buf) {
                return;
            }
            if self.detect_buf.starts_with(BOM) {
                self.detect_buf.drain(..BOM.len());
                self.pos += BOM.len() as u64;
            }
            self.bom_checked = true;
        }
        if let Some(mode) = self.detect(at_end) {
            self.mode = mode;
            let buf = std::mem::take(&mut self.detect_buf);
            self.dispatch(&buf);
        }
    }

    /// Decides the mode from the buffered start of the object; `None` until a whole first line is
    /// there (or `at_end`).
    fn detect(&mut self, at_end: bool) -> Option<Mode> {
        let first = self
            .detect_buf
            .iter()
            .position(|b| !b.is_ascii_whitespace());
        let Some(first) = first else {
            return at_end.then_some(Mode::Lines);
        };
        match self.detect_buf[first] {
            b'[' => return Some(Mode::Values),
            b'{' => {}
            other => return self.detect_odd_start(first, other, at_end),
        }
        if self.hint == FormatHint::JsonLines {
            return Some(Mode::Lines);
        }
        let line_end = self.detect_buf[first..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| first + p);
        match line_end {
            Some(end) => {
                // A first line that is a whole JSON value means one record per line.
                let line = &self.detect_buf[first..end];
                Some(
                    if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok() {
                        Mode::Lines
                    } else {
                        Mode::Values
                    },
                )
            }
            None if at_end || self.detect_buf.len() > self.max => Some(Mode::Values),
            None => None,
        }
    }

    /// The object starts with neither `{` nor `[`: JSON Lines whose first line is not an
    /// object (a header line, a number, a string), where that line is rejected like any bad line;
    /// or not JSON at all.
    fn detect_odd_start(&mut self, first: usize, byte: u8, at_end: bool) -> Option<Mode> {
        if self.hint == FormatHint::JsonLines {
            return Some(Mode::Lines);
        }
        // Without the name's word for it, the next non-blank line decides: a JSON object there
        // means JSON Lines.
        let mut rest = &self.detect_buf[first..];
        let mut line_no = 0;
        loop {
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                // The line is not complete yet; at the end of the object it is all there is.
                let last = at_end && line_no > 0 && !rest.iter().all(u8::is_ascii_whitespace);
                if last && is_json_object(rest) {
                    return Some(Mode::Lines);
                }
                if at_end || self.detect_buf.len() > 2 * self.max {
                    break;
                }
                return None;
            };
            let line = &rest[..end];
            rest = &rest[end + 1..];
            if line_no == 0 || line.iter().all(u8::is_ascii_whitespace) {
                line_no += 1;
                continue;
            }
            if is_json_object(line) {
                return Some(Mode::Lines);
            }
            break;
        }
        self.unsupported = Some(byte);
        self.detect_buf.clear();
        Some(Mode::Lines)
    }

    fn dispatch(&mut self, data: &[u8]) {
        if self.unsupported.is_some() {
            return;
        }
        match self.mode {
            Mode::Lines => self.feed_lines(data),
            Mode::Values => self.feed_values(data),
            Mode::Detect => unreachable!("dispatch runs after detection"),
        }
    }

    fn push_byte(&mut self, b: u8) {
        if self.cur.len() < self.max {
            self.cur.push(b);
        } else {
            self.cur_too_large = true;
        }
    }

    fn push_slice(&mut self, s: &[u8]) {
        let room = self.max - self.cur.len().min(self.max);
        if s.len() > room {
            self.cur_too_large = true;
        }
        self.cur.extend_from_slice(&s[..s.len().min(room)]);
    }

    fn emit(&mut self, position: RecordPosition) {
        let bytes = std::mem::take(&mut self.cur);
        let too_large = std::mem::replace(&mut self.cur_too_large, false);
        let resume = ResumePoint {
            offset: self.record_end,
            line: self.line,
            index: self.index,
            values: self.mode == Mode::Values,
            in_array: self.in_array,
            compressed: None,
        };
        self.ready.push_back(Pending {
            bytes,
            position,
            too_large,
            resume,
        });
    }

    fn feed_lines(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(p) => {
                    self.push_slice(&data[..p]);
                    self.pos += p as u64 + 1;
                    self.record_end = self.pos;
                    self.end_line();
                    data = &data[p + 1..];
                }
                None => {
                    self.push_slice(data);
                    self.pos += data.len() as u64;
                    data = &[];
                }
            }
        }
    }

    fn end_line(&mut self) {
        let line = self.line;
        self.line += 1;
        if self.cur.last() == Some(&b'\r') {
            self.cur.pop();
        }
        if !self.cur_too_large && self.cur.iter().all(u8::is_ascii_whitespace) {
            self.cur.clear();
            return;
        }
        self.emit(RecordPosition::Line(line));
    }

    fn feed_values(&mut self, data: &[u8]) {
        let base = self.pos;
        self.pos += data.len() as u64;
        let Some(mut i) = self.records_start(data) else {
            return;
        };
        if self.path_done {
            return;
        }
        while i < data.len() {
            i += if !self.in_value {
                match self.between_values(data[i]) {
                    Some(consumed) => consumed,
                    None => return,
                }
            } else if self.in_string {
                self.string_bytes(&data[i..], base + i as u64)
            } else {
                self.value_byte(data[i], base + i as u64)
            };
        }
    }

    /// With a records path: where in `data` the records' array starts (0 once it was found in
    /// an earlier buffer); `None` while it has not been found. Lines before it are counted.
    #[inline]
    fn records_start(&mut self, data: &[u8]) -> Option<usize> {
        let Some(nav) = &mut self.navigator else {
            return Some(0);
        };
        if nav.found {
            return Some(0);
        }
        self.line += data.iter().filter(|&&b| b == b'\n').count() as u64;
        let at = nav.feed(data)?;
        // Count back the lines after the array's start: they are scanned by the caller.
        self.line -= data[at..].iter().filter(|&&b| b == b'\n').count() as u64;
        self.in_array = true;
        Some(at)
    }

    /// One byte between records: whitespace and separators are skipped (1), the first byte of
    /// a record starts it and is read again inside it (0); `None` once the records path's array
    /// has ended.
    #[inline]
    fn between_values(&mut self, b: u8) -> Option<usize> {
        match b {
            b'\n' => self.line += 1,
            b' ' | b'\t' | b'\r' => {}
            b',' if self.in_array => {}
            b']' if self.in_array => {
                self.in_array = false;
                if self.navigator.is_some() {
                    self.path_done = true;
                    return None;
                }
            }
            b'[' if !self.in_array => self.in_array = true,
            _ => {
                self.in_value = true;
                self.record_line = self.line;
                self.depth = 0;
                self.in_string = false;
                self.escape = Escape::default();
                self.scalar = !matches!(b, b'{' | b'[');
                return Some(0);
            }
        }
        Some(1)
    }

    /// Inside a string of a record: a run of plain bytes is copied at once (the hot path for
    /// text-heavy records), else one byte is read; the number of bytes consumed. `at` is the
    /// object offset of `rest[0]`.
    #[inline]
    fn string_bytes(&mut self, rest: &[u8], at: u64) -> usize {
        if !self.escape.pending() {
            let run = rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c == b'\n')
                .unwrap_or(rest.len());
            if run > 0 {
                self.push_slice(&rest[..run]);
                return run;
            }
        }
        let b = rest[0];
        self.push_byte(b);
        if b == b'\n' {
            self.line += 1;
        }
        if self.escape.closes(b) {
            self.in_string = false;
            if self.scalar && self.depth == 0 {
                self.record_end = at + 1;
                self.end_value();
            }
        }
        1
    }

    /// One byte of a record outside its strings; the number consumed: 0 when it is the
    /// delimiter that ends a bare scalar (it is then read again between records). `at` is its
    /// object offset.
    #[inline]
    fn value_byte(&mut self, b: u8, at: u64) -> usize {
        if self.scalar
            && self.depth == 0
            && !self.cur.is_empty()
            && matches!(
                b,
                b' ' | b'\t' | b'\r' | b'\n' | b',' | b']' | b'}' | b'{' | b'['
            )
        {
            self.record_end = at;
            self.end_value();
            return 0;
        }
        self.push_byte(b);
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0 && !self.scalar {
                    self.record_end = at + 1;
                    self.end_value();
                }
            }
            b'\n' => self.line += 1,
            _ => {}
        }
        1
    }

    fn end_value(&mut self) {
        self.in_value = false;
        let position = RecordPosition::Index(self.index);
        self.index += 1;
        self.emit(position);
    }

    fn finish(&mut self) {
        if self.mode == Mode::Detect {
            self.try_detect(true);
        }
        self.record_end = self.pos;
        match self.mode {
            Mode::Lines if !self.cur.is_empty() || self.cur_too_large => self.end_line(),
            Mode::Values if self.in_value => self.end_value(),
            _ => {}
        }
    }
}

/// Whether a line holds exactly one JSON object.
fn is_json_object(line: &[u8]) -> bool {
    let start = line.iter().position(|b| !b.is_ascii_whitespace());
    start.is_some_and(|s| line[s] == b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
}

/// Inside a JSON string: whether the last byte was a backslash, so the next one is escaped.
#[derive(Debug, Default, Clone, Copy)]
struct Escape(bool);

impl Escape {
    /// Reads one byte of a string; `true` when it is the closing quote.
    #[inline]
    fn closes(&mut self, b: u8) -> bool {
        if self.0 {
            self.0 = false;
            false
        } else if b == b'\\' {
            self.0 = true;
            false
        } else {
            b == b'"'
        }
    }

    /// The next byte is escaped.
    #[inline]
    fn pending(self) -> bool {
        self.0
    }
}

/// Walks a JSON document's structure (without building it) to the array at a field path.
struct Navigator {
    path: Vec<Vec<u8>>,
    /// Open containers: `true` for an object.
    stack: Vec<bool>,
    /// How many path segments the open containers match.
    matched: usize,
    in_string: bool,
    escape: Escape,
    /// In an object, whether the next string is a key.
    expecting_key: bool,
    capturing_key: bool,
    key: Vec<u8>,
    found: bool,
}

impl Navigator {
    fn new(path: &[String]) -> Self {
        Self {
            path: path.iter().map(|s| s.as_bytes().to_vec()).collect(),
            stack: Vec::new(),
            matched: 0,
            in_string: false,
            escape: Escape::default(),
            expecting_key: false,
            capturing_key: false,
            key: Vec::new(),
            found: false,
        }
    }

    /// Consumes bytes; returns the offset just past the records array's `[` once reached.
    fn feed(&mut self, data: &[u8]) -> Option<usize> {
        for (i, &b) in data.iter().enumerate() {
            if self.in_string {
                if self.escape.closes(b) {
                    self.in_string = false;
                    self.capturing_key = false;
                    continue;
                }
                if self.capturing_key {
                    self.key.push(b);
                }
                continue;
            }
            let in_object = self.stack.last() == Some(&true);
            match b {
                b'"' => {
                    self.in_string = true;
                    if in_object && self.expecting_key {
                        self.capturing_key = true;
                        self.key.clear();
                    }
                }
                b':' => self.expecting_key = false,
                b',' => self.expecting_key = in_object,
                b'{' | b'[' => {
                    // A value that opens a container: is it the next segment of the path?
                    let on_path = in_object
                        && self.stack.len() == self.matched + 1
                        && self
                            .path
                            .get(self.matched)
                            .is_some_and(|seg| *seg == self.key);
                    if on_path && b == b'[' && self.matched + 1 == self.path.len() {
                        self.found = true;
                        return Some(i + 1);
                    }
                    if on_path && b == b'{' {
                        self.matched += 1;
                    }
                    self.stack.push(b == b'{');
                    self.expecting_key = b == b'{';
                    self.key.clear();
                }
                b'}' | b']' => {
                    self.stack.pop();
                    if self.stack.len() < self.matched + 1 {
                        self.matched = self.matched.min(self.stack.len().saturating_sub(1));
                    }
                    self.expecting_key = false;
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn read_all(bytes: Vec<u8>, key: &str, max: usize) -> Vec<RawRecord> {
        let mut reader = open_records(io::Cursor::new(bytes), key, max)
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(r) = reader.next_record().await.unwrap() {
            out.push(r);
        }
        out
    }

    fn values(records: &[RawRecord]) -> Vec<Value> {
        records.iter().map(|r| r.value.clone().unwrap()).collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use async_compression::tokio::write::GzipEncoder;
        use tokio::io::AsyncWriteExt;
        let data = data.to_vec();
        // Its own thread: the tests calling this already run inside a runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut enc = GzipEncoder::new(Vec::new());
                enc.write_all(&data).await.unwrap();
                enc.shutdown().await.unwrap();
                enc.into_inner()
            })
        })
        .join()
        .unwrap()
    }

    #[tokio::test]
    async fn json_lines_with_bom_crlf_and_blank_lines() {
        let data = b"\xef\xbb\xbf{\"id\":1}\r\n\r\n{\"id\":2}\n  \n{\"id\":3}".to_vec();
        let recs = read_all(data, "a.jsonl", 1024).await;
        assert_eq!(
            values(&recs),
            vec![json!({"id":1}), json!({"id":2}), json!({"id":3})]
        );
        let lines: Vec<_> = recs.iter().map(|r| r.position).collect();
        assert_eq!(
            lines,
            vec![
                RecordPosition::Line(1),
                RecordPosition::Line(3),
                RecordPosition::Line(5)
            ]
        );
    }

    #[tokio::test]
    async fn broken_line_costs_only_that_line() {
        let data = b"{\"id\":1}\n{\"id\":2,\n{\"id\":3}\nnot json\n{\"id\":5}\n".to_vec();
        let recs = read_all(data, "a.json", 1024).await;
        assert_eq!(recs.len(), 5);
        assert!(recs[1].value.is_err() && recs[3].value.is_err());
        assert_eq!(recs[1].position, RecordPosition::Line(2));
        assert_eq!(recs[4].value.as_ref().unwrap(), &json!({"id":5}));
    }

    #[tokio::test]
    async fn array_of_objects_pretty_printed() {
        let data = b"[\n  {\"id\": 1, \"t\": \"a ] , { b\"},\n  {\"id\": 2, \"n\": [1, [2]]}\n]\n"
            .to_vec();
        let recs = read_all(data, "a.json", 1024).await;
        assert_eq!(
            values(&recs),
            vec![json!({"id":1,"t":"a ] , { b"}), json!({"id":2,"n":[1,[2]]})]
        );
        assert_eq!(recs[1].position, RecordPosition::Index(1));
    }

    #[tokio::test]
    async fn single_pretty_object_and_escapes() {
        let data = "{\n  \"text\": \"quote \\\" and backslash \\\\\",\n  \"ja\": \"日本語\"\n}\n"
            .as_bytes()
            .to_vec();
        let recs = read_all(data, "doc.json", 1024).await;
        assert_eq!(
            values(&recs),
            vec![json!({"text":"quote \" and backslash \\","ja":"日本語"})]
        );
    }

    #[tokio::test]
    async fn array_elements_that_are_not_objects_still_come_out() {
        let recs = read_all(b"[1, \"two\", {\"id\":3}, null]".to_vec(), "x.json", 1024).await;
        assert_eq!(
            values(&recs),
            vec![json!(1), json!("two"), json!({"id":3}), json!(null)]
        );
    }

    #[tokio::test]
    async fn gzip_by_magic_and_by_extension() {
        let plain = b"{\"id\":1}\n{\"id\":2}\n";
        let gz = gzip(plain);
        assert_eq!(read_all(gz.clone(), "no-extension", 1024).await.len(), 2);
        assert_eq!(read_all(gz, "a.jsonl.gz", 1024).await.len(), 2);
        let arr = gzip(b"[{\"id\":1},{\"id\":2},{\"id\":3}]");
        assert_eq!(read_all(arr, "a.json.gz", 1024).await.len(), 3);
    }

    #[tokio::test]
    async fn oversized_records_are_rejected_and_reading_goes_on() {
        let big = format!("{{\"t\":\"{}\"}}", "x".repeat(500));
        let data = format!("{{\"id\":1}}\n{big}\n{{\"id\":3}}\n").into_bytes();
        let recs = read_all(data, "a.jsonl", 100).await;
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].value, Err(RecordError::TooLarge { limit: 100 }));
        assert_eq!(recs[2].value.as_ref().unwrap(), &json!({"id":3}));

        let data = format!("[{{\"id\":1}}, {big}, {{\"id\":3}}]").into_bytes();
        let recs = read_all(data, "a.json", 100).await;
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].value, Err(RecordError::TooLarge { limit: 100 }));
        assert_eq!(recs[2].value.as_ref().unwrap(), &json!({"id":3}));
    }

    #[tokio::test]
    async fn invalid_utf8_is_a_record_error() {
        let data = b"{\"t\":\"ok\"}\n{\"t\":\"\xff\xfe\"}\n{\"t\":\"fine\"}\n".to_vec();
        let recs = read_all(data, "a.jsonl", 1024).await;
        assert_eq!(recs.len(), 3);
        assert!(
            matches!(&recs[1].value, Err(RecordError::InvalidJson(m)) if m.contains("line 1")),
            "{:?}",
            recs[1].value
        );
    }

    #[tokio::test]
    async fn deep_nesting_is_rejected_not_crashed() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let data = format!("{{\"a\":{deep}}}\n{{\"id\":2}}\n").into_bytes();
        let recs = read_all(data, "a.jsonl", 1 << 20).await;
        assert!(recs[0].value.is_err());
        assert_eq!(recs[1].value.as_ref().unwrap(), &json!({"id":2}));
    }

    #[tokio::test]
    async fn unsupported_format_is_an_object_error() {
        let mut reader = open_records(
            io::Cursor::new(b"id,text\n1,hello\n".to_vec()),
            "a.csv",
            1024,
        )
        .await
        .unwrap();
        let err = reader.next_record().await.unwrap_err();
        assert!(err.to_string().contains("0x69"), "{err}");
    }

    #[tokio::test]
    async fn json_lines_whose_first_line_is_not_an_object_lose_only_that_line() {
        for (first, key) in [
            ("id,text", "a.jsonl"),
            ("42", "a.ndjson"),
            ("\"a string\"", "a.jsonl"),
            ("id,text", "a.json"),
            ("7", "no-extension"),
            ("\"export\"", "a.json"),
        ] {
            let data = format!("{first}\r\n\n{{\"id\":1}}\n{{\"id\":2}}\n").into_bytes();
            let recs = read_all(data, key, 1024).await;
            assert_eq!(recs.len(), 3, "{key}: {first}");
            assert_eq!(recs[0].position, RecordPosition::Line(1));
            assert!(
                recs[0].value.is_err() || !recs[0].value.as_ref().unwrap().is_object(),
                "{key}: {first}"
            );
            assert_eq!(recs[1].position, RecordPosition::Line(3));
            assert_eq!(values(&recs[1..]), vec![json!({"id":1}), json!({"id":2})]);
        }
    }

    #[tokio::test]
    async fn without_an_object_line_after_it_an_odd_start_is_still_not_json() {
        for data in [
            &b"id,text\n1,hello\n"[..],
            b"hello",
            b"42",
            b"\"just a string\"\n",
            b"header\n[1, 2]\n",
        ] {
            let mut reader = open_records(io::Cursor::new(data.to_vec()), "a.json", 1024)
                .await
                .unwrap();
            assert!(
                matches!(
                    reader.next_record().await,
                    Err(ReadError::UnsupportedFormat(_))
                ),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
        // A header line then an object as the last line, without a final newline.
        let recs = read_all(b"h\n{\"id\":1}".to_vec(), "a.json", 1024).await;
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].value.as_ref().unwrap(), &json!({"id":1}));
    }

    #[tokio::test]
    async fn documents_arrays_and_concatenated_objects_are_still_told_apart() {
        let doc = b"{\n  \"id\": 1,\n  \"text\": \"a\"\n}\n".to_vec();
        assert_eq!(
            values(&read_all(doc, "d.json", 1024).await),
            vec![json!({"id":1,"text":"a"})]
        );
        let arr = b"[\n {\"id\": 1},\n {\"id\": 2}\n]".to_vec();
        assert_eq!(read_all(arr, "a.jsonl", 1024).await.len(), 2);
        let concat = b"{\"id\": 1} {\"id\": 2}\n{\n \"id\": 3\n}".to_vec();
        let recs = read_all(concat, "c.json", 1024).await;
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2].position, RecordPosition::Index(2));
    }

    #[tokio::test]
    async fn is_done_reads_ahead_without_losing_a_record() {
        let mut reader = open_records(
            io::Cursor::new(b"{\"id\":1}\n{\"id\":2}\n".to_vec()),
            "a.jsonl",
            1024,
        )
        .await
        .unwrap();
        reader.next_record().await.unwrap().unwrap();
        assert!(!reader.is_done().await.unwrap());
        let second = reader.next_record().await.unwrap().unwrap();
        assert_eq!(second.value.unwrap(), json!({"id":2}));
        assert!(reader.is_done().await.unwrap());
        assert!(reader.next_record().await.unwrap().is_none());
        // A last line without a newline is still a record to come.
        let mut reader = open_records(
            io::Cursor::new(b"{\"id\":1}\n{\"id\":2}".to_vec()),
            "a.jsonl",
            1024,
        )
        .await
        .unwrap();
        reader.next_record().await.unwrap().unwrap();
        assert!(!reader.is_done().await.unwrap());
        assert_eq!(
            reader.next_record().await.unwrap().unwrap().value.unwrap(),
            json!({"id":2})
        );
    }

    #[tokio::test]
    async fn empty_object_has_no_records() {
        assert!(read_all(Vec::new(), "a.jsonl", 10).await.is_empty());
        assert!(read_all(b"\n\n".to_vec(), "a.json", 10).await.is_empty());
        assert!(read_all(b"[]".to_vec(), "a.json", 10).await.is_empty());
    }

    #[tokio::test]
    async fn records_split_across_reads_of_one_byte() {
        // A reader that hands out one byte at a time exercises every seam in the scanner.
        struct Trickle(Vec<u8>, usize);
        impl AsyncRead for Trickle {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                if self.1 < self.0.len() {
                    let b = self.0[self.1];
                    buf.put_slice(&[b]);
                    self.1 += 1;
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
        for (data, key, n) in [
            (
                b"\xef\xbb\xbf[{\"a\":\"x\\\"y\"},{\"b\":[1,2]}]".to_vec(),
                "t.json",
                2,
            ),
            (b"{\"a\":1}\r\n{\"a\":2}\r\n".to_vec(), "t.jsonl", 2),
            (gzip(b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}"), "t", 3),
        ] {
            let mut reader = open_records(Trickle(data, 0), key, 1024).await.unwrap();
            let mut count = 0;
            while let Some(r) = reader.next_record().await.unwrap() {
                r.value.unwrap();
                count += 1;
            }
            assert_eq!(count, n, "{key}");
        }
    }
}

#[cfg(test)]
mod records_path_tests {
    use super::*;
    use serde_json::json;

    async fn read_at(data: &str, path: &[&str]) -> Result<Vec<(RecordPosition, Value)>, ReadError> {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        let mut reader = open_records_at(
            io::Cursor::new(data.as_bytes().to_vec()),
            "doc.json",
            1024,
            &path,
        )
        .await?;
        let mut out = Vec::new();
        while let Some(r) = reader.next_record().await? {
            out.push((r.position, r.value.unwrap()));
        }
        Ok(out)
    }

    #[tokio::test]
    async fn streams_the_array_under_a_path_and_ignores_the_rest() {
        let doc = r#"{"meta": {"items": ["decoy"], "note": "x [ { ] \" items"}, "items": [{"id": 1}, {"id": 2, "nested": {"items": [3]}}], "after": [9]}"#;
        let recs = read_at(doc, &["items"]).await.unwrap();
        assert_eq!(
            recs.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            vec![json!({"id": 1}), json!({"id": 2, "nested": {"items": [3]}})]
        );
        assert_eq!(recs[1].0, RecordPosition::Index(1));
    }

    #[tokio::test]
    async fn nested_paths_and_pretty_documents() {
        let doc = "{\n  \"data\": {\n    \"count\": 2,\n    \"items\": [\n      {\"id\": \"a\"},\n      {\"id\": \"b\"}\n    ]\n  }\n}\n";
        let recs = read_at(doc, &["data", "items"]).await.unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].1, json!({"id": "a"}));
    }

    #[tokio::test]
    async fn a_missing_path_is_an_object_error() {
        let err = read_at(r#"{"data": {"rows": []}}"#, &["data", "items"])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("data.items"), "{err}");
        // A path whose value is not an array is not the records either.
        assert!(
            read_at(r#"{"items": {"id": 1}}"#, &["items"])
                .await
                .is_err()
        );
    }
}

#[cfg(test)]
mod resume_tests {
    use super::*;

    async fn records(
        data: &[u8],
        key: &str,
        path: &[String],
        from: Option<ResumePoint>,
    ) -> Vec<RawRecord> {
        let mut reader = open_records_from(io::Cursor::new(data.to_vec()), key, 64, path, from)
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(r) = reader.next_record().await.unwrap() {
            out.push(r);
        }
        out
    }

    /// The records of a body that starts at the resume point, as a ranged GET returns it.
    async fn ranged_records(
        data: &[u8],
        key: &str,
        path: &[String],
        point: ResumePoint,
    ) -> Vec<RawRecord> {
        let body = data[point.offset as usize..].to_vec();
        let resume = Resume {
            point,
            body_offset: point.offset,
            skip_deadline: None,
        };
        let mut reader = open_records_resumed(io::Cursor::new(body), key, 64, path, Some(resume))
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(r) = reader.next_record().await.unwrap() {
            out.push(r);
        }
        out
    }

    /// Resuming after any record yields exactly the records after it: none lost, none repeated.
    /// Plain content resumes as well from a body that starts at the resume point.
    async fn check_every_seam(data: &[u8], key: &str, path: &[&str]) {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        let all = records(data, key, &path, None).await;
        assert!(all.len() >= 3, "{key}: {} records", all.len());
        let summary = |r: &RawRecord| (r.position, r.value.clone().ok());
        for (k, record) in all.iter().enumerate() {
            let rest = records(data, key, &path, Some(record.resume)).await;
            let expected: Vec<_> = all[k + 1..].iter().map(summary).collect();
            let got: Vec<_> = rest.iter().map(summary).collect();
            assert_eq!(got, expected, "{key}: resuming after record {k}");
            if record.resume.compressed == Some(false) {
                let ranged = ranged_records(data, key, &path, record.resume).await;
                let got: Vec<_> = ranged.iter().map(summary).collect();
                assert_eq!(got, expected, "{key}: a ranged read after record {k}");
                let resumes: Vec<_> = ranged.iter().map(|r| r.resume).collect();
                let expected: Vec<_> = all[k + 1..].iter().map(|r| r.resume).collect();
                assert_eq!(resumes, expected, "{key}: the same resume points");
            }
        }
    }

    #[tokio::test]
    async fn a_ranged_body_is_only_for_plain_content() {
        let point = |compressed| ResumePoint {
            offset: 10,
            line: 2,
            index: 0,
            values: false,
            in_array: false,
            compressed,
        };
        for compressed in [Some(true), None] {
            let resume = Resume {
                point: point(compressed),
                body_offset: 10,
                skip_deadline: None,
            };
            let err = open_records_resumed(
                io::Cursor::new(Vec::new()),
                "a.jsonl",
                64,
                &[],
                Some(resume),
            )
            .await
            .err()
            .expect("refused");
            assert!(err.to_string().contains("cannot resume"), "{err}");
        }
        let records = records(b"{\"id\":1}\n{\"id\":2}\n", "a.jsonl", &[], None).await;
        assert!(records.iter().all(|r| r.resume.compressed == Some(false)));
    }

    #[tokio::test]
    async fn skipping_gzip_content_gives_up_when_the_time_is_out() {
        use async_compression::tokio::write::GzipEncoder;
        use tokio::io::AsyncWriteExt;
        let mut enc = GzipEncoder::new(Vec::new());
        enc.write_all(b"{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n")
            .await
            .unwrap();
        enc.shutdown().await.unwrap();
        let gz = enc.into_inner();
        let first = records(&gz, "a.jsonl.gz", &[], None).await[0].resume;
        assert_eq!(first.compressed, Some(true));
        let resume = |deadline| Resume {
            point: first,
            body_offset: 0,
            skip_deadline: Some(deadline),
        };
        let past = Deadline::after(std::time::Duration::ZERO);
        let err = open_records_resumed(
            io::Cursor::new(gz.clone()),
            "a.jsonl.gz",
            64,
            &[],
            Some(resume(past)),
        )
        .await
        .err()
        .expect("out of time");
        assert!(matches!(err, ReadError::OutOfTime { offset } if offset == first.offset));
        let later = Deadline::after(std::time::Duration::from_secs(600));
        let mut reader = open_records_resumed(
            io::Cursor::new(gz),
            "a.jsonl.gz",
            64,
            &[],
            Some(resume(later)),
        )
        .await
        .unwrap();
        assert_eq!(
            reader.next_record().await.unwrap().unwrap().position,
            RecordPosition::Line(2)
        );
    }

    #[tokio::test]
    async fn json_lines_seams() {
        let data = b"\xef\xbb\xbf{\"id\":1}\r\n\r\n{\"id\":2}\n{broken\n{\"id\":4,\"t\":\"a\\nb\"}\n{\"id\":5}";
        check_every_seam(data, "a.jsonl", &[]).await;
    }

    #[tokio::test]
    async fn array_and_document_seams() {
        check_every_seam(b"[\n {\"id\": 1},\n {\"id\": [2, {\"x\": \"]\"}]},\n 3,\n \"four\",\n {\"id\": 5}\n]\n", "a.json", &[]).await;
        check_every_seam(
            b"{\"id\": 1}\n{\n  \"id\": 2\n}\n{\"id\": 3} {\"id\": 4}",
            "b.json",
            &[],
        )
        .await;
        check_every_seam(b"{\"meta\": {\"n\": 3}, \"items\": [{\"id\": 1}, {\"id\": 2}, {\"id\": 3}], \"tail\": [4]}", "c.json", &["items"]).await;
    }

    #[tokio::test]
    async fn gzip_seams() {
        use async_compression::tokio::write::GzipEncoder;
        use tokio::io::AsyncWriteExt;
        let mut enc = GzipEncoder::new(Vec::new());
        enc.write_all(b"{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n{\"id\":4}\n")
            .await
            .unwrap();
        enc.shutdown().await.unwrap();
        check_every_seam(&enc.into_inner(), "a.jsonl.gz", &[]).await;
    }
}
