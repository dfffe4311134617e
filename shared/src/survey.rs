//! What an object holds, read the way ingest reads it (the same reader, record rules and
//! chunker) without queueing anything: the sample behind `sakuin backfill`'s estimate.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use serde_json::Value;
use tokio::io::{AsyncRead, ReadBuf};

use crate::chunker::chunk_text;
use crate::config::IngestConfig;
use crate::documents::{AsyncBody, DetectError, Format, SectionStream, detect_body};
use crate::reader::{BoxedBufRead, RecordReader, open_records_at};
use crate::record::RecordOrigin;
use crate::store::{ObjectRef, ObjectStore};

/// The figures of one object, or of its first `bytes` when it was not read to the end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Survey {
    /// Stored bytes read (compressed bytes, for gzip): what the other figures are of.
    pub bytes: u64,
    pub records: u64,
    /// Records ingest would reject (broken JSON, not an object, no text), and documents it
    /// would skip (no text to read).
    pub rejected: u64,
    pub chunks: u64,
    /// Characters of the chunks' texts: ASCII, and the rest (a CJK character is about a token,
    /// an ASCII one about a quarter of one).
    pub ascii_chars: u64,
    pub other_chars: u64,
    /// Read to its end.
    pub whole: bool,
    /// The first chunks' texts ([`TEXTS_KEPT`] at most), for the model to count their tokens.
    pub texts: Vec<String>,
}

/// Chunk texts a survey keeps: enough, over a sample of objects, for Bedrock's count of their
/// tokens to correct the estimate from characters, in a few calls.
pub const TEXTS_KEPT: usize = 32;
/// ... of which one object gives at most this many, so the sample's objects all count.
pub const TEXTS_KEPT_PER_OBJECT: usize = 4;

impl Survey {
    pub fn add(&mut self, other: &Survey) {
        self.bytes += other.bytes;
        self.records += other.records;
        self.rejected += other.rejected;
        self.chunks += other.chunks;
        self.ascii_chars += other.ascii_chars;
        self.other_chars += other.other_chars;
        let room = TEXTS_KEPT.saturating_sub(self.texts.len());
        self.texts.extend(other.texts.iter().take(room).cloned());
    }
}

/// Reads `key` (at `etag`, when given) until its end or until `max_bytes` stored bytes are read.
/// A document (PDF, Word, ...) is read whole, as ingest reads it.
pub async fn survey_object<S: ObjectStore>(
    store: &S,
    cfg: &IngestConfig,
    bucket: &str,
    key: &str,
    etag: Option<&str>,
    max_bytes: u64,
) -> Result<Survey, String> {
    let name = format!("s3://{bucket}/{key}");
    let (opened, read) = open_counted(store, cfg, bucket, key, etag)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let mut records = match opened {
        Opened::Records(records) => records,
        Opened::Document(format, body) => {
            let survey = survey_document(cfg, format, body, RecordOrigin { bucket, key }).await;
            return Ok(Survey {
                bytes: read.load(Ordering::Relaxed),
                whole: true,
                ..survey
            });
        }
    };
    let mut survey = Survey::default();
    loop {
        if read.load(Ordering::Relaxed) >= max_bytes {
            survey.bytes = read.load(Ordering::Relaxed);
            return Ok(survey);
        }
        let Some(raw) = records
            .next_record()
            .await
            .map_err(|e| format!("{name}: {e}"))?
        else {
            break;
        };
        let origin = RecordOrigin { bucket, key };
        survey.count_record(&cfg.fields, &cfg.chunking, raw.value.ok(), origin);
    }
    survey.bytes = read.load(Ordering::Relaxed);
    survey.whole = true;
    Ok(survey)
}

/// What an object turned out to be.
enum Opened {
    Records(Box<RecordReader<BoxedBufRead>>),
    /// A document of this format (`None`: one no extractor reads).
    Document(Option<Format>, AsyncBody),
}

/// The sections of a document, each chunked as ingest chunks it (paragraphs of plain text,
/// which ingest gathers while they fit in a chunk, count one chunk or more each here: the
/// characters, and so the tokens and the cost, are the same). A document that cannot be read
/// counts as one rejected record.
async fn survey_document(
    cfg: &IngestConfig,
    format: Option<Format>,
    body: AsyncBody,
    origin: RecordOrigin<'_>,
) -> Survey {
    let mut survey = Survey::default();
    let Some(format) = format else {
        survey.rejected = 1;
        return survey;
    };
    let mut sections = SectionStream::spawn(format, body, cfg.documents.clone(), 0);
    while let Some(item) = sections.next().await {
        match item {
            Ok(section) => {
                let value = serde_json::json!({"text": section.text});
                let fields = crate::record::FieldSelection {
                    text_fields: vec!["text".into()],
                    ..cfg.fields.clone()
                };
                survey.count_record(&fields, &cfg.chunking, Some(value), origin);
            }
            Err(crate::documents::ExtractError::Row { .. }) => {
                survey.records += 1;
                survey.rejected += 1;
            }
            Err(_) => {
                survey.rejected += 1;
                break;
            }
        }
    }
    survey
}

/// Opens the object through a counter of the stored bytes read: its record stream, or its
/// body as a document.
async fn open_counted<S: ObjectStore>(
    store: &S,
    cfg: &IngestConfig,
    bucket: &str,
    key: &str,
    etag: Option<&str>,
) -> Result<(Opened, Arc<AtomicU64>), String> {
    let object = ObjectRef {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        version_id: None,
        etag: etag.map(str::to_owned),
        range_start: None,
    };
    let opened = store.open(&object).await.map_err(|e| e.to_string())?;
    let read = Arc::new(AtomicU64::new(0));
    let body: AsyncBody = Box::pin(Counted {
        inner: opened.body,
        read: read.clone(),
    });
    let body = match detect_body(key, opened.content_type.as_deref(), body).await {
        Ok((detection, body)) if detection.format == Format::Records => body,
        Ok((detection, body)) => return Ok((Opened::Document(Some(detection.format), body), read)),
        Err(DetectError::Unsupported(_)) => {
            let empty: AsyncBody = Box::pin(tokio::io::empty());
            return Ok((Opened::Document(None, empty), read));
        }
        Err(DetectError::Io(e)) => return Err(e.to_string()),
    };
    let records = open_records_at(body, key, cfg.max_record_bytes, &cfg.records_path)
        .await
        .map_err(|e| e.to_string())?;
    Ok((Opened::Records(Box::new(records)), read))
}

impl Survey {
    /// One record: rejected when it is not a document, else its chunks and their characters.
    fn count_record(
        &mut self,
        fields: &crate::record::FieldSelection,
        chunking: &crate::chunker::ChunkSettings,
        value: Option<Value>,
        origin: RecordOrigin,
    ) {
        self.records += 1;
        let Some(document) = value.and_then(|value| fields.document(value, origin).ok()) else {
            self.rejected += 1;
            return;
        };
        for chunk in chunk_text(&document.text, chunking) {
            self.chunks += 1;
            if self.texts.len() < TEXTS_KEPT_PER_OBJECT {
                self.texts.push(chunk.to_string());
            }
            let ascii = chunk.chars().filter(char::is_ascii).count() as u64;
            self.ascii_chars += ascii;
            self.other_chars += chunk.chars().count() as u64 - ascii;
        }
    }
}

/// Counts the bytes read through it.
struct Counted {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = self.inner.as_mut().poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use crate::store::{ListPage, ObjectHead, OpenedObject, StoreError};
    use async_compression::tokio::write::GzipEncoder;
    use tokio::io::AsyncWriteExt;

    /// One object, served whole.
    struct One(Vec<u8>);

    impl ObjectStore for One {
        async fn open(&self, _: &ObjectRef) -> Result<OpenedObject, StoreError> {
            Ok(OpenedObject {
                body: Box::pin(std::io::Cursor::new(self.0.clone())),
                etag: Some("e".into()),
                version_id: None,
                size: Some(self.0.len() as i64),
                content_type: None,
                offset: 0,
            })
        }
        async fn put(&self, _: &str, _: &str, _: Vec<u8>) -> Result<(), StoreError> {
            unreachable!("a survey writes nothing")
        }
        async fn put_if_absent(
            &self,
            _: &str,
            _: &str,
            _: Vec<u8>,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            unreachable!("a survey writes nothing")
        }
        async fn delete(&self, _: &str, _: &str) -> Result<(), StoreError> {
            unreachable!("a survey writes nothing")
        }
        async fn head(&self, _: &str, _: &str) -> Result<Option<ObjectHead>, StoreError> {
            unreachable!()
        }
        async fn list(&self, _: &str, _: &str, _: Option<&str>) -> Result<ListPage, StoreError> {
            unreachable!()
        }
    }

    fn config() -> IngestConfig {
        let vars = [
            ("CHUNK_QUEUE_URL", "q"),
            ("CHUNK_MAX_CHARS", "100"),
            ("CHUNK_OVERLAP_CHARS", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        IngestConfig::from_env(&mut Env::from_map(vars)).unwrap()
    }

    fn lines() -> Vec<u8> {
        let mut out = String::new();
        for i in 0..50 {
            // Ten sentences of 26 characters; three fit in a chunk of 100: four chunks.
            let text = format!("{i:03} {}. ", "文".repeat(20)).repeat(10);
            out.push_str(&serde_json::json!({"id": i, "text": text}).to_string());
            out.push('\n');
        }
        out.push_str("{broken\n");
        out.push_str("{\"id\": 99}\n");
        out.into_bytes()
    }

    #[tokio::test]
    async fn a_survey_counts_what_ingest_would_queue_and_bytes_as_stored() {
        let cfg = config();
        let plain = lines();
        let whole = survey_object(&One(plain.clone()), &cfg, "b", "x.jsonl", None, u64::MAX)
            .await
            .unwrap();
        assert!(whole.whole);
        assert_eq!((whole.records, whole.rejected), (52, 2));
        assert_eq!(whole.chunks, 200);
        assert_eq!(whole.bytes, plain.len() as u64);
        assert!(whole.other_chars > whole.ascii_chars);

        let mut enc = GzipEncoder::new(Vec::new());
        enc.write_all(&plain).await.unwrap();
        enc.shutdown().await.unwrap();
        let gz = enc.into_inner();
        let compressed = survey_object(&One(gz.clone()), &cfg, "b", "x.jsonl.gz", None, u64::MAX)
            .await
            .unwrap();
        assert_eq!(compressed.chunks, 200);
        assert_eq!(
            compressed.bytes,
            gz.len() as u64,
            "stored bytes, not content"
        );

        // A cap: the first part stands for the rest.
        let part = survey_object(&One(plain.clone()), &cfg, "b", "x.jsonl", None, 4096)
            .await
            .unwrap();
        assert!(
            !part.whole && part.records < 52 && part.bytes >= 4096,
            "{part:?}"
        );
    }

    #[tokio::test]
    async fn a_document_is_surveyed_as_ingest_reads_it() {
        let cfg = config();
        let samples =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/samples/documents");
        let pdf = std::fs::read(samples.join("manual.pdf")).unwrap();
        let survey = survey_object(&One(pdf.clone()), &cfg, "b", "manual.pdf", None, 10)
            .await
            .unwrap();
        // Read whole whatever the sample size: a PDF cannot be cut.
        assert_eq!((survey.records, survey.chunks, survey.rejected), (3, 3, 0));
        assert!(survey.whole && survey.bytes == pdf.len() as u64);
        assert!(survey.other_chars > 0 && survey.ascii_chars > 0);
        let encrypted = std::fs::read(samples.join("hostile/encrypted.pdf")).unwrap();
        let survey = survey_object(&One(encrypted), &cfg, "b", "secret.pdf", None, u64::MAX)
            .await
            .unwrap();
        assert_eq!((survey.records, survey.chunks, survey.rejected), (0, 0, 1));
    }
}
