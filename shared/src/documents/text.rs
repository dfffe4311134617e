//! Plain text, a paragraph (lines up to a blank line) at a time; and the UTF-8 / UTF-16
//! decoding every text format shares.

use std::io::{BufRead, Read};

use super::{Citation, ExtractError, Section, io_error, tidy};

/// Text of a whole document (Markdown, HTML): UTF-8 with or without a BOM, or UTF-16 with
/// one. Anything else is [`ExtractError::NotUtf8`] naming the line of the first bad byte.
pub(super) fn decode_whole(bytes: &[u8]) -> Result<String, ExtractError> {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return utf8(rest, 1);
    }
    if let Some(encoding) = utf16_bom(bytes) {
        let (text, _, had_errors) = encoding.decode(bytes);
        if had_errors {
            return Err(ExtractError::NotUtf8 {
                line: 1,
                hint: Some("the UTF-16 text has unpaired surrogates"),
            });
        }
        return Ok(text.into_owned());
    }
    utf8(bytes, 1)
}

fn utf16_bom(bytes: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    if bytes.starts_with(b"\xFF\xFE") {
        Some(encoding_rs::UTF_16LE)
    } else if bytes.starts_with(b"\xFE\xFF") {
        Some(encoding_rs::UTF_16BE)
    } else {
        None
    }
}

/// `bytes` as UTF-8, or the line (counted from `first_line`) of the first invalid byte, with a
/// hint when the bytes read cleanly as Shift_JIS (what Japanese Excel and Notepad often save).
pub(super) fn utf8(bytes: &[u8], first_line: u64) -> Result<String, ExtractError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_owned()),
        Err(e) => {
            let before = &bytes[..e.valid_up_to()];
            let line = first_line + before.iter().filter(|&&b| b == b'\n').count() as u64;
            Err(ExtractError::NotUtf8 {
                line,
                hint: shift_jis_hint(bytes),
            })
        }
    }
}

pub(super) fn shift_jis_hint(bytes: &[u8]) -> Option<&'static str> {
    let (_, _, had_errors) = encoding_rs::SHIFT_JIS.decode(bytes);
    (!had_errors).then_some("it reads as Shift_JIS: save it as UTF-8")
}

/// A reader that turns UTF-16 (with a BOM) into UTF-8 as it goes, and passes anything else
/// through with a UTF-8 BOM dropped; CSV and plain text stream through it.
pub(super) fn utf8_reader<R: BufRead + Send + 'static>(
    mut inner: R,
) -> Result<Box<dyn BufRead + Send>, ExtractError> {
    let head = inner.fill_buf().map_err(io_error)?;
    if head.starts_with(b"\xEF\xBB\xBF") {
        inner.consume(3);
        return Ok(Box::new(inner));
    }
    match utf16_bom(head) {
        Some(encoding) => Ok(Box::new(std::io::BufReader::new(Utf16Reader {
            inner,
            decoder: encoding.new_decoder_with_bom_removal(),
            pending: Vec::new(),
            at: 0,
            ended: false,
        }))),
        None => Ok(Box::new(inner)),
    }
}

struct Utf16Reader<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    pending: Vec<u8>,
    at: usize,
    ended: bool,
}

impl<R: BufRead> Read for Utf16Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.pending.len() && !self.ended {
            let input = self.inner.fill_buf()?;
            let last = input.is_empty();
            let mut out = String::with_capacity(input.len() * 3 / 2 + 8);
            let (result, read, _) = self.decoder.decode_to_string(input, &mut out, last);
            debug_assert!(
                result == encoding_rs::CoderResult::InputEmpty || read < input.len(),
                "the decoder reports OutputFull only when it stopped early"
            );
            self.inner.consume(read);
            self.ended = last && result == encoding_rs::CoderResult::InputEmpty;
            self.pending = out.into_bytes();
            self.at = 0;
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Drops the `\r` of each `\r\n`, so a reader that counts lines by `\n` (the CSV reader) counts
/// them right; a lone `\r` stays.
pub(super) struct CrlfToLf<R> {
    inner: R,
    /// A `\r` that ended the last read: whether it is dropped depends on the next byte.
    held: bool,
}

impl<R> CrlfToLf<R> {
    pub(super) fn new(inner: R) -> Self {
        CrlfToLf { inner, held: false }
    }
}

impl<R: Read> Read for CrlfToLf<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let start = usize::from(self.held);
            if self.held {
                buf[0] = b'\r';
            }
            let n = self.inner.read(&mut buf[start..])?;
            if n == 0 {
                self.held = false;
                return Ok(start);
            }
            let len = start + n;
            let mut out = 0;
            for i in 0..len {
                let b = buf[i];
                if b == b'\r' && i + 1 < len && buf[i + 1] == b'\n' {
                    continue;
                }
                buf[out] = b;
                out += 1;
            }
            // A `\r` at the end may be the first half of a `\r\n`: hold it for the next read.
            self.held = out > 0 && buf[out - 1] == b'\r';
            if self.held {
                out -= 1;
            }
            if out > 0 {
                return Ok(out);
            }
        }
    }
}

/// Plain text, one paragraph per section.
pub(super) struct TextSections {
    lines: Box<dyn BufRead + Send>,
    line: u64,
    max_section_bytes: usize,
    ended: bool,
}

impl TextSections {
    pub(super) fn new(
        body: impl BufRead + Send + 'static,
        max_section_bytes: usize,
    ) -> Result<Self, ExtractError> {
        Ok(TextSections {
            lines: utf8_reader(body)?,
            line: 0,
            max_section_bytes,
            ended: false,
        })
    }

    /// The next paragraph: its first line number and its text.
    fn paragraph(&mut self) -> Result<Option<(u64, u64, String)>, ExtractError> {
        let mut text = Vec::new();
        let mut first = 0;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = (&mut self.lines)
                .take(self.max_section_bytes as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(io_error)?;
            if n == 0 {
                self.ended = true;
                break;
            }
            if !buf.ends_with(b"\n") && n > self.max_section_bytes {
                // A line longer than a section: keep its start, skip the rest of it.
                skip_line(&mut self.lines)?;
            }
            self.line += 1;
            let blank = buf.iter().all(|b| b.is_ascii_whitespace());
            if blank {
                if text.is_empty() {
                    continue;
                }
                break;
            }
            if text.is_empty() {
                first = self.line;
            }
            // Past the cap the paragraph is cut (a character cut in two is dropped below).
            let room = self.max_section_bytes - text.len();
            text.extend_from_slice(&buf[..buf.len().min(room)]);
        }
        if text.is_empty() {
            return Ok(None);
        }
        // A cut may end inside a character: drop the partial one.
        let valid = match std::str::from_utf8(&text) {
            Ok(_) => text.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => text.len(),
        };
        text.truncate(valid);
        let text = utf8(&text, first)?;
        Ok(Some((first, self.line, text)))
    }
}

fn skip_line(lines: &mut dyn BufRead) -> Result<(), ExtractError> {
    loop {
        let buf = lines.fill_buf().map_err(io_error)?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                lines.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                lines.consume(n);
            }
        }
    }
}

impl Iterator for TextSections {
    type Item = Result<Section, ExtractError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.ended {
            match self.paragraph() {
                Ok(Some((first, end, text))) => {
                    let text = tidy(&text);
                    if text.is_empty() {
                        continue;
                    }
                    // `end` counted the blank line that closed the paragraph.
                    let last = if self.ended { end } else { end - 1 }.max(first);
                    return Some(Ok(Section::new(text, Citation::Lines { first, last })));
                }
                Ok(None) => return None,
                Err(e) => {
                    self.ended = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Reads through `CrlfToLf` a byte at a time, so every `\r\n` straddles two reads.
    fn one_byte_reads(input: &[u8]) -> Vec<u8> {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        let mut out = Vec::new();
        CrlfToLf::new(Trickle(input)).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn crlf_becomes_lf_across_reads() {
        let input = b"a\r\nb\rc\r\r\nd\r";
        assert_eq!(one_byte_reads(input), b"a\nb\rc\r\nd\r");
        let mut whole = Vec::new();
        CrlfToLf::new(&input[..]).read_to_end(&mut whole).unwrap();
        assert_eq!(whole, b"a\nb\rc\r\nd\r");
    }

    #[test]
    fn utf16_streams_as_utf8() {
        let text = "一行目\r\n二行目";
        for bom in [&[0xFF, 0xFE][..], &[0xFE, 0xFF]] {
            let units: Vec<u8> = text
                .encode_utf16()
                .flat_map(|u| {
                    if bom[0] == 0xFF {
                        u.to_le_bytes()
                    } else {
                        u.to_be_bytes()
                    }
                })
                .collect();
            let bytes = [bom, &units].concat();
            let mut out = String::new();
            utf8_reader(std::io::Cursor::new(bytes))
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert_eq!(out, text);
        }
    }
}
