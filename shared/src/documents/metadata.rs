//! `<key>.metadata.json` beside a document: filterable fields for its chunks, in the shape
//! Amazon Bedrock Knowledge Bases reads, so a bucket prepared for one works with the other.
//! <https://docs.aws.amazon.com/bedrock/latest/userguide/kb-metadata.html>

use serde_json::{Map, Value};

/// What a metadata file's key ends with: `manual.pdf` → `manual.pdf.metadata.json`.
pub const METADATA_SUFFIX: &str = ".metadata.json";

/// The most bytes of a metadata file read. Bedrock Knowledge Bases allows 10 KB; more room
/// here costs nothing and refuses only what is plainly not a metadata file.
pub const MAX_METADATA_BYTES: usize = 1024 * 1024;

/// The key of the metadata file for `key`.
pub fn metadata_key(key: &str) -> String {
    format!("{key}{METADATA_SUFFIX}")
}

/// The document a metadata file describes, when `key` is one (`a/b.pdf.metadata.json` →
/// `a/b.pdf`). A key that is only the suffix describes nothing.
pub fn described_key(key: &str) -> Option<&str> {
    key.strip_suffix(METADATA_SUFFIX).filter(|k| !k.is_empty())
}

/// Why a metadata file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct BadMetadata {
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> BadMetadata {
    BadMetadata {
        reason: reason.into(),
    }
}

/// The fields a metadata file gives its document's chunks. `metadataAttributes` maps a name to
/// a plain JSON value (string, number, boolean, list of strings) or to Bedrock's typed form
/// `{"value": {"type": "STRING", "stringValue": "..."}, "includeForEmbedding": true}`
/// (types `STRING`, `NUMBER`, `BOOLEAN`, `STRING_LIST`); both become plain values.
pub fn parse_metadata(bytes: &[u8]) -> Result<Map<String, Value>, BadMetadata> {
    if bytes.len() > MAX_METADATA_BYTES {
        return Err(bad(format!(
            "larger than the {MAX_METADATA_BYTES}-byte limit"
        )));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(attributes) = value.get("metadataAttributes") else {
        return Err(bad("no \"metadataAttributes\" object"));
    };
    let Value::Object(attributes) = attributes else {
        return Err(bad("\"metadataAttributes\" is not an object"));
    };
    attributes
        .iter()
        .map(|(name, value)| Ok((name.clone(), plain(name, value)?)))
        .collect()
}

/// One attribute's value, typed form or plain.
fn plain(name: &str, value: &Value) -> Result<Value, BadMetadata> {
    let Some(typed) = value.get("value").filter(|_| value.is_object()) else {
        return match value {
            Value::Object(_) => Err(bad(format!(
                "attribute {name:?} is an object without a \"value\""
            ))),
            Value::Null => Err(bad(format!("attribute {name:?} is null"))),
            other => Ok(other.clone()),
        };
    };
    let kind = typed
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let field = match kind {
        "STRING" => "stringValue",
        "NUMBER" => "numberValue",
        "BOOLEAN" => "booleanValue",
        "STRING_LIST" => "stringListValue",
        other => {
            return Err(bad(format!(
                "attribute {name:?} has type {other:?}; expected STRING, NUMBER, BOOLEAN or STRING_LIST"
            )));
        }
    };
    typed
        .get(field)
        .filter(|v| !v.is_null())
        .cloned()
        .ok_or_else(|| {
            bad(format!(
                "attribute {name:?} of type {kind} has no {field:?}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_and_typed_attributes_become_plain_values() {
        let file = json!({"metadataAttributes": {
            "department": "経理",
            "year": 2024,
            "public": true,
            "tags": ["a", "b"],
            "owner": {"value": {"type": "STRING", "stringValue": "山田"}, "includeForEmbedding": true},
            "pages": {"value": {"type": "NUMBER", "numberValue": 14}},
            "draft": {"value": {"type": "BOOLEAN", "booleanValue": false}},
            "topics": {"value": {"type": "STRING_LIST", "stringListValue": ["x", "y"]}}
        }});
        let fields = parse_metadata(file.to_string().as_bytes()).unwrap();
        assert_eq!(
            Value::Object(fields),
            json!({"department": "経理", "year": 2024, "public": true, "tags": ["a", "b"],
                   "owner": "山田", "pages": 14, "draft": false, "topics": ["x", "y"]})
        );
    }

    #[test]
    fn a_bad_file_says_what_is_wrong() {
        let reason = |bytes: &[u8]| parse_metadata(bytes).unwrap_err().reason;
        assert!(reason(b"{").starts_with("not JSON"));
        assert_eq!(reason(b"{}"), "no \"metadataAttributes\" object");
        assert!(
            reason(br#"{"metadataAttributes": {"a": {"value": {"type": "DATE"}}}}"#)
                .contains("\"DATE\"")
        );
        assert!(
            reason(br#"{"metadataAttributes": {"a": {"value": {"type": "STRING"}}}}"#)
                .contains("stringValue")
        );
        assert!(
            reason(br#"{"metadataAttributes": {"a": {"b": 1}}}"#).contains("without a \"value\"")
        );
    }

    #[test]
    fn keys_of_metadata_files() {
        assert_eq!(metadata_key("a/b.pdf"), "a/b.pdf.metadata.json");
        assert_eq!(described_key("a/b.pdf.metadata.json"), Some("a/b.pdf"));
        assert_eq!(described_key(".metadata.json"), None);
        assert_eq!(described_key("a/b.pdf"), None);
    }
}
