//! A batch inference job's files: the JSONL input lines made from chunks, the output lines read
//! back into vectors or record errors, the manifest, and where the output is written.
//!
//! Input: one `{"recordId": "...", "modelInput": <InvokeModel body>}` per line, in `.jsonl`
//! objects; output: the same lines with `modelOutput` (the InvokeModel answer) or an `error`
//! object in its place, in no particular order, so they are joined on the record id.
//! <https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-data.html>,
//! <https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-results.html>

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::JobArn;
use crate::embed::{EmbeddingModel, InputPurpose};

/// An embedding model batch inference serves, the only kind whose input lines can be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchModel(EmbeddingModel);

/// A model [`EmbeddingModel::supports_batch`] says no to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0} has no batch inference on Bedrock (of the embedding models, only amazon.titan-embed-text-v2:0 has)"
)]
pub struct NoBatchInference(pub String);

impl BatchModel {
    pub fn new(model: EmbeddingModel) -> Result<Self, NoBatchInference> {
        if model.supports_batch() {
            Ok(Self(model))
        } else {
            Err(NoBatchInference(model.id))
        }
    }

    pub fn model(&self) -> &EmbeddingModel {
        &self.0
    }

    /// One input line (without its newline) for a chunk: its [`record_id`] and the very body
    /// InvokeModel would be sent for its text.
    pub fn input_line(&self, chunk_id: &str, text: &str) -> String {
        let body = self.0.request_body(&[text], InputPurpose::Document);
        let body = std::str::from_utf8(&body).expect("serde_json writes UTF-8");
        let id = serde_json::to_string(record_id(chunk_id).as_ref()).expect("a string serialises");
        let mut line = String::with_capacity(body.len() + id.len() + 28);
        line.push_str("{\"recordId\":");
        line.push_str(&id);
        line.push_str(",\"modelInput\":");
        line.push_str(body);
        line.push('}');
        line
    }

    /// One line of a `.jsonl.out` file: its record id and its vector, or the record's error.
    /// Fields other than `recordId`, `modelOutput` and `error` (the echoed `modelInput`, any
    /// added later) are passed over.
    pub fn output_line(&self, line: &str) -> Result<OutputRecord, LineError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Line {
            record_id: Option<Value>,
            model_output: Option<Value>,
            error: Option<Value>,
        }
        let parsed: Line =
            serde_json::from_str(line.trim_end()).map_err(|e| LineError::NotJson(e.to_string()))?;
        let record_id = match parsed.record_id {
            Some(Value::String(id)) => id,
            _ => return Err(LineError::NoRecordId),
        };
        let outcome = match (parsed.error, parsed.model_output) {
            (Some(error), _) if !error.is_null() => Err(RecordError::from_object(&error)),
            (_, Some(answer)) if !answer.is_null() => self
                .0
                .parse_response_value(answer, 1)
                .map(|mut out| Embedding {
                    vector: out.vectors.pop().unwrap_or_default(),
                    input_tokens: out.input_tokens,
                })
                .map_err(|e| RecordError::Unreadable(e.to_string())),
            _ => return Err(LineError::NoOutcome(record_id)),
        };
        Ok(OutputRecord { record_id, outcome })
    }
}

/// Starts a record id that carries its chunk id hex-encoded (see [`record_id`]).
const ENCODED: char = 'X';

/// The record id of a chunk: its id itself when that is ASCII letters and digits (every chunk
/// id sakuin makes is 32 hex digits), else `X` and the id's UTF-8 bytes in lowercase hex, so
/// [`chunk_id`] reads it back. Bedrock's own wording has gone from "11 character alphanumeric
/// string" (its examples still are) to "alphanumeric string" to just a string, with no length
/// in the API: letters and digits are what every version allows.
pub fn record_id(chunk_id: &str) -> Cow<'_, str> {
    if plain(chunk_id) && !chunk_id.starts_with(ENCODED) {
        Cow::Borrowed(chunk_id)
    } else {
        Cow::Owned(format!("{ENCODED}{}", hex::encode(chunk_id)))
    }
}

/// The chunk id a [`record_id`] stands for; `None` for a record id it does not make (one that
/// Bedrock gave a record without any, say).
pub fn chunk_id(record_id: &str) -> Option<Cow<'_, str>> {
    match record_id.strip_prefix(ENCODED) {
        Some(hexed) => {
            if hexed.bytes().any(|b| b.is_ascii_uppercase()) {
                return None;
            }
            let bytes = hex::decode(hexed).ok()?;
            String::from_utf8(bytes).ok().map(Cow::Owned)
        }
        None => plain(record_id).then_some(Cow::Borrowed(record_id)),
    }
}

fn plain(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// One record of a job's output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    pub record_id: String,
    pub outcome: Result<Embedding, RecordError>,
}

impl OutputRecord {
    /// The chunk the record was written for, if this module wrote its id.
    pub fn chunk_id(&self) -> Option<Cow<'_, str>> {
        chunk_id(&self.record_id)
    }
}

/// A record's vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub vector: Vec<f32>,
    /// Tokens the model read, where its answer says.
    pub input_tokens: Option<u64>,
}

/// Why a record has no vector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The line's `error` object: the HTTP status InvokeModel would have answered
    /// (`errorCode`, a number) and Bedrock's message.
    #[error("error {}: {message}", code.map_or_else(|| "(no code)".to_owned(), |c| c.to_string()))]
    Model { code: Option<u16>, message: String },
    /// A `modelOutput` this model's answer is not (another size of vector, say).
    #[error("modelOutput could not be read: {0}")]
    Unreadable(String),
}

impl RecordError {
    fn from_object(error: &Value) -> Self {
        let code = match error.get("errorCode") {
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let message = match error.get("errorMessage") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => error.to_string(),
        };
        RecordError::Model { code, message }
    }
}

/// A line that is not a record of the output at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("no recordId string")]
    NoRecordId,
    #[error("record {0} has neither modelOutput nor error")]
    NoOutcome(String),
}

/// `manifest.json.out`: the job's counts, written beside its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct Manifest {
    #[serde(rename = "totalRecordCount")]
    pub total_records: Option<u64>,
    #[serde(rename = "processedRecordCount")]
    pub processed_records: Option<u64>,
    #[serde(rename = "successRecordCount")]
    pub succeeded_records: Option<u64>,
    #[serde(rename = "errorRecordCount")]
    pub failed_records: Option<u64>,
    #[serde(rename = "inputTokenCount")]
    pub input_tokens: Option<u64>,
    #[serde(rename = "outputTokenCount")]
    pub output_tokens: Option<u64>,
}

impl Manifest {
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// Where a job writes its output: `<output s3Uri>/<job id>/`, holding `<input file>.out` for
/// each input file and `manifest.json.out`. AWS's pages do not spell this layout out; AWS's
/// sample orchestrator reads it so (`os.path.join(s3_uri_output, job_arn.split('/')[-1])`,
/// <https://github.com/aws-samples/amazon-bedrock-samples/blob/main/poc-to-prod/bedrock-batch-orchestrator/lambda/postprocess.py>),
/// so a reader had best list the folder rather than trust [`records_key`](Self::records_key)
/// alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLocation {
    pub bucket: String,
    /// Ends with `/`.
    pub prefix: String,
}

impl OutputLocation {
    /// For the job's output URI; `None` when it is not `s3://bucket[/prefix]`.
    pub fn new(output_uri: &str, job: &JobArn) -> Option<Self> {
        let rest = output_uri.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        let key = key.trim_end_matches('/');
        let prefix = if key.is_empty() {
            format!("{}/", job.id())
        } else {
            format!("{key}/{}/", job.id())
        };
        Some(Self {
            bucket: bucket.to_owned(),
            prefix,
        })
    }

    /// The output of one input file, named as it is under the input location (`part-0001.jsonl`
    /// for `s3://b/in/part-0001.jsonl` read through `s3://b/in/`).
    pub fn records_key(&self, input_file: &str) -> String {
        format!("{}{input_file}.out", self.prefix)
    }

    pub fn manifest_key(&self) -> String {
        format!("{}manifest.json.out", self.prefix)
    }

    /// Whether a key listed under the prefix holds records (not the manifest).
    pub fn holds_records(key: &str) -> bool {
        key.ends_with(".jsonl.out")
    }
}

impl fmt::Display for OutputLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn titan(dimensions: usize) -> BatchModel {
        BatchModel::new(
            EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", Some(dimensions)).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn only_titan_v2_writes_input_lines() {
        for id in [
            "amazon.titan-embed-text-v1",
            "cohere.embed-multilingual-v3",
            "us.cohere.embed-v4:0",
        ] {
            let refused = BatchModel::new(EmbeddingModel::resolve(id, None).unwrap()).unwrap_err();
            assert!(refused.to_string().contains(id), "{refused}");
        }
        assert!(titan(1024).model().supports_batch());
    }

    #[test]
    fn an_input_line_is_the_record_id_and_the_invoke_model_body() {
        let model = titan(256);
        let chunk = crate::ids::chunk_id("faq-001", 0);
        let line = model.input_line(&chunk, "こんにちは \"world\"\n");
        assert!(!line.contains('\n'), "one line: {line}");
        let parsed: Value = serde_json::from_str(&line).unwrap();
        let body: Value = serde_json::from_slice(
            &model
                .model()
                .request_body(&["こんにちは \"world\"\n"], InputPurpose::Document),
        )
        .unwrap();
        assert_eq!(parsed, json!({"recordId": chunk, "modelInput": body}));
        assert_eq!(
            parsed["modelInput"],
            json!({"inputText": "こんにちは \"world\"\n", "dimensions": 256, "normalize": true})
        );
    }

    #[test]
    fn record_ids_carry_any_chunk_id_and_read_back() {
        let chunk = crate::ids::chunk_id("faq-001", 0);
        assert_eq!(record_id(&chunk), chunk.as_str());
        for id in [
            chunk.as_str(),
            "abc",
            "s3://b/k.jsonl#0",
            "Xabc",
            "X",
            "",
            "日本語",
            "a b",
        ] {
            let rid = record_id(id);
            assert!(plain(&rid), "{id:?} → {rid:?} is not letters and digits");
            assert_eq!(chunk_id(&rid).as_deref(), Some(id), "{id:?} → {rid:?}");
        }
        assert_eq!(record_id("Xabc"), "X58616263");
        // Ids nobody wrote through here: Bedrock's own for a record without one, or a
        // hand-made file's.
        assert_eq!(chunk_id("CALL0000001").as_deref(), Some("CALL0000001"));
        assert_eq!(chunk_id("X3AB"), None);
        assert_eq!(chunk_id("Xzz"), None);
        assert_eq!(chunk_id("doc-1"), None);
    }

    #[test]
    fn an_output_line_reads_into_a_vector() {
        let model = titan(256);
        let line = json!({
            "recordId": "290dec4627c784edccef5f7584eb02ef",
            "modelInput": {"inputText": "hi", "dimensions": 256, "normalize": true},
            "modelOutput": {"embedding": vec![0.25; 256], "inputTextTokenCount": 3,
                            "embeddingsByType": {"float": vec![0.25; 256]}}
        })
        .to_string();
        let record = model.output_line(&format!("{line}\r\n")).unwrap();
        assert_eq!(record.record_id, "290dec4627c784edccef5f7584eb02ef");
        assert_eq!(
            record.chunk_id().as_deref(),
            Some("290dec4627c784edccef5f7584eb02ef")
        );
        let embedding = record.outcome.unwrap();
        assert_eq!(
            (embedding.vector.len(), embedding.input_tokens),
            (256, Some(3))
        );
    }

    #[test]
    fn an_error_line_reads_into_the_records_error() {
        let model = titan(256);
        let line = r#"{"recordId":"abc","modelInput":{"inputText":""},"error":{"errorCode":400,"errorMessage":"Malformed input request: expected minLength: 1"}}"#;
        let record = model.output_line(line).unwrap();
        assert_eq!(record.record_id, "abc");
        let error = record.outcome.unwrap_err();
        assert_eq!(
            error,
            RecordError::Model {
                code: Some(400),
                message: "Malformed input request: expected minLength: 1".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "error 400: Malformed input request: expected minLength: 1"
        );
        // The error wins over an answer, and a code written as text still reads.
        let both = json!({"recordId": "a", "modelOutput": {"embedding": [0.0]},
                          "error": {"errorCode": "500", "errorMessage": "m"}});
        assert_eq!(
            model.output_line(&both.to_string()).unwrap().outcome,
            Err(RecordError::Model {
                code: Some(500),
                message: "m".into()
            })
        );
        let bare = json!({"recordId": "a", "error": {"why": "?"}});
        assert!(matches!(
            model.output_line(&bare.to_string()).unwrap().outcome,
            Err(RecordError::Model { code: None, message }) if message.contains("why")
        ));
    }

    #[test]
    fn unknown_fields_are_passed_over() {
        let model = titan(256);
        let line = json!({
            "recordId": "abc", "modelInput": {"inputText": "t"},
            "modelOutput": {"embedding": vec![0.5; 256], "inputTextTokenCount": 1, "newField": [1, 2]},
            "usage": {"tokens": 1}, "processedAt": "2025-01-01T00:00:00Z"
        });
        let record = model.output_line(&line.to_string()).unwrap();
        assert_eq!(record.outcome.unwrap().vector.len(), 256);
    }

    #[test]
    fn lines_that_are_not_records_say_why() {
        let model = titan(256);
        assert!(matches!(
            model.output_line("not json"),
            Err(LineError::NotJson(_))
        ));
        assert!(matches!(
            model.output_line("[1,2]"),
            Err(LineError::NotJson(_))
        ));
        assert_eq!(
            model.output_line(r#"{"modelOutput": {}}"#),
            Err(LineError::NoRecordId)
        );
        assert_eq!(
            model.output_line(r#"{"recordId": 7, "modelOutput": {}}"#),
            Err(LineError::NoRecordId)
        );
        assert_eq!(
            model.output_line(r#"{"recordId": "r1", "modelInput": {}}"#),
            Err(LineError::NoOutcome("r1".into()))
        );
        // An answer of the wrong size is that record's error, not the line's.
        let short = json!({"recordId": "r2", "modelOutput": {"embedding": [0.1, 0.2]}});
        let record = model.output_line(&short.to_string()).unwrap();
        assert!(
            matches!(&record.outcome, Err(RecordError::Unreadable(m)) if m.contains("2-dimension")),
            "{record:?}"
        );
    }

    #[test]
    fn the_manifest_reads_and_tolerates_new_fields() {
        let m = Manifest::parse(
            br#"{"totalRecordCount":300,"processedRecordCount":300,"successRecordCount":290,
                 "errorRecordCount":10,"inputTokenCount":4567,"outputTokenCount":0,"extra":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            Manifest {
                total_records: Some(300),
                processed_records: Some(300),
                succeeded_records: Some(290),
                failed_records: Some(10),
                input_tokens: Some(4567),
                output_tokens: Some(0),
            }
        );
        assert_eq!(Manifest::parse(b"{}").unwrap(), Manifest::default());
        assert!(Manifest::parse(b"[]").is_err());
    }

    #[test]
    fn the_output_goes_under_the_job_id() {
        let job = JobArn::new(
            "arn:aws:bedrock:ap-northeast-1:123456789012:model-invocation-job/abc123def456",
        );
        let out = OutputLocation::new("s3://bucket/batch/out/", &job).unwrap();
        assert_eq!(out.bucket, "bucket");
        assert_eq!(out.prefix, "batch/out/abc123def456/");
        assert_eq!(
            out.records_key("part-0001.jsonl"),
            "batch/out/abc123def456/part-0001.jsonl.out"
        );
        assert_eq!(
            out.manifest_key(),
            "batch/out/abc123def456/manifest.json.out"
        );
        assert_eq!(out.to_string(), "s3://bucket/batch/out/abc123def456/");
        assert_eq!(
            OutputLocation::new("s3://bucket", &job).unwrap().prefix,
            "abc123def456/"
        );
        assert_eq!(
            OutputLocation::new("s3://bucket/", &job).unwrap().prefix,
            "abc123def456/"
        );
        assert!(OutputLocation::new("https://bucket/x", &job).is_none());
        assert!(OutputLocation::new("s3:///x", &job).is_none());
        assert!(OutputLocation::holds_records(&out.records_key("a.jsonl")));
        assert!(!OutputLocation::holds_records(&out.manifest_key()));
    }
}
