//! Turns one parsed record into a document: its id, the text to embed, and the rest as metadata.

use serde_json::{Map, Value};

use crate::ids::{IdScope, derived_doc_id};

/// Which fields of a record hold its text and its id (dotted paths into nested objects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSelection {
    pub text_fields: Vec<String>,
    pub id_field: String,
    /// Where an `id_field` value is unique (`ID_SCOPE`): within its object unless declared
    /// unique across the bucket.
    pub id_scope: IdScope,
}

/// A record ready for chunking.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub doc_id: String,
    pub text: String,
    pub metadata: Map<String, Value>,
}

/// Why a well-formed JSON record still cannot be indexed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    #[error("record is a JSON {0}, not an object")]
    NotAnObject(&'static str),
    #[error("no text in field(s) {0}")]
    NoText(String),
    #[error("id field {field:?} holds a {kind}; it must be a string or a number")]
    BadId { field: String, kind: &'static str },
}

/// The object a record came from, for the ids of records without one.
#[derive(Debug, Clone, Copy)]
pub struct RecordOrigin<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
}

impl FieldSelection {
    /// Builds the document for one record; a record that cannot be indexed comes back whole
    /// with the reason, so it can be kept for replay.
    pub fn document(
        &self,
        value: Value,
        origin: RecordOrigin<'_>,
    ) -> Result<Document, (DocumentError, Value)> {
        let Value::Object(mut fields) = value else {
            let kind = kind(&value);
            return Err((DocumentError::NotAnObject(kind), value));
        };

        let doc_id = match get_path(&fields, &self.id_field) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                derived_doc_id(origin.bucket, origin.key, &fields)
            }
            Some(other) => {
                let error = DocumentError::BadId {
                    field: self.id_field.clone(),
                    kind: kind(other),
                };
                return Err((error, Value::Object(fields)));
            }
        };

        let mut parts = Vec::new();
        for field in &self.text_fields {
            if let Some(value) = get_path(&fields, field) {
                collect_text(value, &mut parts);
            }
        }
        let text = parts.join("\n\n");
        if text.trim().is_empty() {
            return Err((
                DocumentError::NoText(self.text_fields.join(", ")),
                Value::Object(fields),
            ));
        }
        // Only now take the id and text out, leaving the rest as metadata.
        take_path(&mut fields, &self.id_field);
        for field in &self.text_fields {
            take_path(&mut fields, field);
        }
        Ok(Document {
            doc_id,
            text,
            metadata: fields,
        })
    }
}

/// The value at a dotted path (an exact key wins, so a flat field named "a.b" still works).
fn get_path<'v>(map: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    if let Some(v) = map.get(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    match map.get(head)? {
        Value::Object(inner) => get_path(inner, rest),
        _ => None,
    }
}

/// Removes and returns the value at a dotted path, leaving the rest of the record as metadata.
fn take_path(map: &mut Map<String, Value>, path: &str) -> Option<Value> {
    // An exact key wins over a nested path, so a flat field named "a.b" still works.
    if let Some(v) = map.remove(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    match map.get_mut(head)? {
        Value::Object(inner) => take_path(inner, rest),
        _ => None,
    }
}

fn collect_text(value: &Value, parts: &mut Vec<String>) {
    match value {
        Value::String(s) if !s.trim().is_empty() => parts.push(s.clone()),
        Value::Number(n) => parts.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| collect_text(v, parts)),
        _ => {}
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(text: &[&str], id: &str) -> FieldSelection {
        FieldSelection {
            text_fields: text.iter().map(|s| s.to_string()).collect(),
            id_field: id.into(),
            id_scope: IdScope::Object,
        }
    }

    const ORIGIN: RecordOrigin<'static> = RecordOrigin {
        bucket: "b",
        key: "k.jsonl",
    };

    #[test]
    fn id_text_and_metadata() {
        let doc = sel(&["text"], "id")
            .document(
                json!({"id": "a-1", "text": "本文", "title": "題", "tags": ["x"]}),
                ORIGIN,
            )
            .unwrap();
        assert_eq!(doc.doc_id, "a-1");
        assert_eq!(doc.text, "本文");
        assert_eq!(
            Value::Object(doc.metadata),
            json!({"title": "題", "tags": ["x"]})
        );
    }

    #[test]
    fn numeric_id_and_derived_id() {
        let s = sel(&["text"], "id");
        assert_eq!(
            s.document(json!({"id": 42, "text": "t"}), ORIGIN)
                .unwrap()
                .doc_id,
            "42"
        );
        let derived = s.document(json!({"text": "t"}), ORIGIN).unwrap().doc_id;
        assert!(derived.starts_with("s3://b/k.jsonl#"), "{derived}");
        assert_ne!(
            s.document(json!({"id": " ", "text": "t"}), ORIGIN)
                .unwrap()
                .doc_id,
            derived,
            "a blank id is content too"
        );
        let (err, record) = s
            .document(json!({"id": {"x": 1}, "text": "t"}), ORIGIN)
            .unwrap_err();
        assert!(err.to_string().contains("object"));
        assert_eq!(
            record,
            json!({"id": {"x": 1}, "text": "t"}),
            "the record comes back whole"
        );
    }

    #[test]
    fn several_and_nested_text_fields() {
        let doc = sel(&["title", "body.text", "notes"], "meta.id")
            .document(
                json!({"title": "T", "body": {"text": "B", "lang": "ja"}, "notes": ["n1", "n2"], "meta": {"id": "m"}}),
                ORIGIN,
            )
            .unwrap();
        assert_eq!(doc.doc_id, "m");
        assert_eq!(doc.text, "T\n\nB\n\nn1\n\nn2");
        assert_eq!(
            Value::Object(doc.metadata),
            json!({"body": {"lang": "ja"}, "meta": {}})
        );
    }

    #[test]
    fn rejects_what_cannot_be_indexed() {
        let s = sel(&["text"], "id");
        let err = |v: Value| s.document(v, ORIGIN).unwrap_err();
        assert_eq!(
            err(json!([1])),
            (DocumentError::NotAnObject("array"), json!([1]))
        );
        assert_eq!(err(json!("x")).0, DocumentError::NotAnObject("string"));
        assert_eq!(
            err(json!({"text": "  "})),
            (DocumentError::NoText("text".into()), json!({"text": "  "}))
        );
        assert_eq!(
            err(json!({"body": "x"})).0,
            DocumentError::NoText("text".into())
        );
    }
}
