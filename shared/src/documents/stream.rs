//! Documents read from an async body (an S3 object): the format decided from its first bytes,
//! then the blocking extraction on its own thread, its sections handed over one at a time
//! through a small channel, so a streamed CSV or text file holds a few sections in memory
//! whatever its size, and the reader can stop (a deadline) by dropping the stream.

use std::io::{self, Read};
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    Detection, ExtractError, ExtractSettings, Format, MAX_OFFICE_BYTES, SNIFF_BYTES, Section,
    Unsupported, detect, extract,
};

pub type AsyncBody = Pin<Box<dyn AsyncRead + Send>>;

/// Sections waiting between the extracting thread and the reader: enough to keep both busy.
const CHANNEL_SECTIONS: usize = 32;

/// Why an object's format could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    #[error("reading the object failed: {0}")]
    Io(#[from] io::Error),
}

/// Decides the format of `body` from `key`, the stored `content_type` and its first bytes,
/// and gives the body back whole (the bytes looked at go in front of the rest). A zip is read
/// whole first (up to the Office limit, one byte more to see it is over): the entry names
/// that tell Word from Excel may sit in its central directory, at the end.
pub async fn detect_body(
    key: &str,
    content_type: Option<&str>,
    mut body: AsyncBody,
) -> Result<(Detection, AsyncBody), DetectError> {
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut body)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .await?;
    if head.starts_with(b"PK\x03\x04") {
        body.take(MAX_OFFICE_BYTES + 1 - head.len() as u64)
            .read_to_end(&mut head)
            .await?;
        let detection = detect(key, content_type, &head)?;
        return Ok((detection, Box::pin(io::Cursor::new(head))));
    }
    let detection = detect(key, content_type, &head)?;
    let whole = AsyncReadExt::chain(io::Cursor::new(head), body);
    Ok((detection, Box::pin(whole)))
}

/// A document's sections, extracted on a blocking thread.
pub struct SectionStream {
    sections: mpsc::Receiver<Result<Section, ExtractError>>,
    task: Option<JoinHandle<()>>,
    format: Format,
}

impl SectionStream {
    /// Starts extracting `body` as `format`, leaving out the first `skip` items (sections and
    /// row errors: where an earlier part of the read stopped).
    pub fn spawn(format: Format, body: AsyncBody, settings: ExtractSettings, skip: u64) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_SECTIONS);
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            let body = BlockingBody { body, runtime };
            let sections = match extract(format, body, &settings) {
                Ok(sections) => sections,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            for item in sections.skip(skip as usize) {
                // A closed channel: the reader stopped (its deadline); so does the thread.
                if tx.blocking_send(item).is_err() {
                    return;
                }
            }
        });
        SectionStream {
            sections: rx,
            task: Some(task),
            format,
        }
    }

    /// The next section or error; `None` after the last. A panic of the extracting thread
    /// (outside the parsers, which contain their own) is an error of the document, not the end
    /// of the process.
    pub async fn next(&mut self) -> Option<Result<Section, ExtractError>> {
        if let Some(item) = self.sections.recv().await {
            return Some(item);
        }
        let task = self.task.take()?;
        match task.await {
            Ok(()) => None,
            Err(e) => Some(Err(ExtractError::ParserPanic {
                format: self.format,
                reason: e.to_string(),
            })),
        }
    }
}

/// An async body read from a blocking thread: each read waits on the runtime that owns the
/// connection.
struct BlockingBody {
    body: AsyncBody,
    runtime: tokio::runtime::Handle,
}

impl Read for BlockingBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.runtime.block_on(self.body.read(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::Citation;

    fn body(bytes: &[u8]) -> AsyncBody {
        Box::pin(io::Cursor::new(bytes.to_vec()))
    }

    #[tokio::test]
    async fn the_bytes_looked_at_are_given_back() {
        let text = "first paragraph\n\nsecond paragraph\n".repeat(400);
        let (detection, mut back) = detect_body("notes.txt", None, body(text.as_bytes()))
            .await
            .unwrap();
        assert_eq!(detection.format, Format::Text);
        let mut all = String::new();
        back.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, text);
    }

    #[tokio::test]
    async fn sections_stream_and_a_later_part_skips_what_an_earlier_one_read() {
        let text = "one\n\ntwo\n\nthree\n";
        let mut all =
            SectionStream::spawn(Format::Text, body(text.as_bytes()), Default::default(), 0);
        let mut texts = Vec::new();
        while let Some(section) = all.next().await {
            texts.push(section.unwrap().text);
        }
        assert_eq!(texts, ["one", "two", "three"]);
        let mut rest =
            SectionStream::spawn(Format::Text, body(text.as_bytes()), Default::default(), 2);
        let third = rest.next().await.unwrap().unwrap();
        assert_eq!(
            (third.text.as_str(), third.citation),
            ("three", Citation::Lines { first: 5, last: 5 })
        );
        assert!(rest.next().await.is_none());
    }

    #[tokio::test]
    async fn an_unreadable_document_is_one_error() {
        let mut stream = SectionStream::spawn(
            Format::Pdf,
            body(b"%PDF-1.7 not really"),
            Default::default(),
            0,
        );
        let error = stream.next().await.unwrap().unwrap_err();
        assert!(error.is_permanent(), "{error}");
        assert!(stream.next().await.is_none());
    }
}
