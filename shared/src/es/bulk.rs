//! `_bulk` request encoding and the item-by-item reading of its answer: a 200 with
//! `"errors": true` is not success.

use serde::{Deserialize, Serialize};

/// A stored document's version, for compare-and-set writes: the `_seq_no` and `_primary_term`
/// Elasticsearch returns from `_mget` and `_bulk`. A write conditioned on it fails with 409 when
/// the document changed (or vanished) since.
/// <https://www.elastic.co/guide/en/elasticsearch/reference/current/optimistic-concurrency-control.html>
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DocVersion {
    pub seq_no: u64,
    pub primary_term: u64,
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Anything: the write wins (documents no other writer races for).
    Any,
    /// No document with that id (`create`: 409 if one appeared).
    Absent,
    /// The document exactly as it was read.
    Version(DocVersion),
}

impl From<Option<DocVersion>> for Expect {
    fn from(version: Option<DocVersion>) -> Self {
        version.map_or(Expect::Absent, Expect::Version)
    }
}

/// Appends one write of a whole document: `create` when it must be absent, else `index`.
pub fn push_index(body: &mut Vec<u8>, index: &str, id: &str, expect: Expect, doc: &impl Serialize) {
    let action = if expect == Expect::Absent {
        "create"
    } else {
        "index"
    };
    push_action(body, action, index, id, expect);
    serde_json::to_writer(&mut *body, doc).expect("documents always serialise");
    body.push(b'\n');
}

/// Appends a `delete` of one document, only if it is still the version given.
pub fn push_delete(body: &mut Vec<u8>, index: &str, id: &str, version: DocVersion) {
    push_action(body, "delete", index, id, Expect::Version(version));
}

fn push_action(body: &mut Vec<u8>, action: &str, index: &str, id: &str, expect: Expect) {
    #[derive(Serialize)]
    struct Meta<'a> {
        _index: &'a str,
        _id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        if_seq_no: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        if_primary_term: Option<u64>,
    }
    let version = match expect {
        Expect::Version(v) => Some(v),
        Expect::Any | Expect::Absent => None,
    };
    body.extend_from_slice(b"{\"");
    body.extend_from_slice(action.as_bytes());
    body.extend_from_slice(b"\":");
    serde_json::to_writer(
        &mut *body,
        &Meta {
            _index: index,
            _id: id,
            if_seq_no: version.map(|v| v.seq_no),
            if_primary_term: version.map(|v| v.primary_term),
        },
    )
    .expect("ids always serialise");
    body.extend_from_slice(b"}\n");
}

/// What happened to one bulk item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Written; with the document's new version (absent for a delete).
    Stored { version: Option<DocVersion> },
    /// The document is not as the write expected (409), or an `update` found none (404): read
    /// it again and decide anew.
    Conflict { reason: String },
    /// Worth another try: 429 (rejected execution), 5xx, or a timeout.
    Retry {
        status: u16,
        kind: String,
        reason: String,
    },
    /// The cluster will never take this document as it is (mapping, dimensions, parsing).
    Reject {
        status: u16,
        kind: String,
        reason: String,
    },
}

impl ItemOutcome {
    /// The one place that decides which item failures are transient.
    pub fn classify(status: u16, kind: &str, reason: &str) -> Self {
        match status {
            200..=299 => ItemOutcome::Stored { version: None },
            // Every write is conditioned on what was read: 409 means another writer came first,
            // 404 that an `update` lost its document. Neither is an error to retry blindly.
            404 | 409 => ItemOutcome::Conflict {
                reason: reason.to_owned(),
            },
            408 | 429 | 500..=599 => ItemOutcome::Retry {
                status,
                kind: kind.to_owned(),
                reason: reason.to_owned(),
            },
            _ => ItemOutcome::Reject {
                status,
                kind: kind.to_owned(),
                reason: reason.to_owned(),
            },
        }
    }
}

/// The items of one `_bulk` answer, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkOutcome {
    pub items: Vec<(String, ItemOutcome)>,
}

#[derive(Deserialize)]
struct BulkAnswer {
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    #[serde(rename = "_id", default)]
    id: String,
    status: u16,
    #[serde(rename = "_seq_no", default)]
    seq_no: Option<u64>,
    #[serde(rename = "_primary_term", default)]
    primary_term: Option<u64>,
    #[serde(default)]
    error: Option<ItemErrorBody>,
}

#[derive(Deserialize)]
struct ItemErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    caused_by: Option<Box<ItemErrorBody>>,
}

impl ItemErrorBody {
    fn full_reason(&self) -> String {
        let mut reason = self.reason.clone().unwrap_or_default();
        if let Some(cause) = &self.caused_by {
            let inner = cause.full_reason();
            if !inner.is_empty() && !reason.contains(&inner) {
                reason = format!("{reason} (caused by {}: {inner})", cause.kind);
            }
        }
        reason
    }
}

/// Reads a `_bulk` answer; `expected` is the number of actions sent, and a short answer is an
/// error rather than silent success for the missing items.
pub fn parse_bulk_answer(body: &[u8], expected: usize) -> Result<BulkOutcome, String> {
    let answer: BulkAnswer =
        serde_json::from_slice(body).map_err(|e| format!("unreadable _bulk answer: {e}"))?;
    if answer.items.len() != expected {
        return Err(format!(
            "_bulk answered {} items for {expected} actions",
            answer.items.len()
        ));
    }
    let items = answer
        .items
        .into_iter()
        .map(|mut item| {
            let (_, it) = item
                .drain()
                .next()
                .expect("each bulk item has one action key");
            let (kind, reason) = it
                .error
                .map(|e| (e.kind.clone(), e.full_reason()))
                .unwrap_or_default();
            let mut outcome = ItemOutcome::classify(it.status, &kind, &reason);
            if let ItemOutcome::Stored { version } = &mut outcome
                && let (Some(seq_no), Some(primary_term)) = (it.seq_no, it.primary_term)
            {
                *version = Some(DocVersion {
                    seq_no,
                    primary_term,
                });
            }
            (it.id, outcome)
        })
        .collect();
    Ok(BulkOutcome { items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn encodes_ndjson_actions() {
        let mut body = Vec::new();
        push_index(
            &mut body,
            "docs",
            "a\"1",
            Expect::Any,
            &json!({"text": "日本\n語"}),
        );
        push_index(
            &mut body,
            "docs",
            "b",
            Expect::Absent,
            &json!({"chunk_count": 2}),
        );
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            json!({"index": {"_index": "docs", "_id": "a\"1"}})
        );
        assert_eq!(lines[1]["text"], "日本\n語");
        assert_eq!(lines[2], json!({"create": {"_index": "docs", "_id": "b"}}));
        assert_eq!(lines[3], json!({"chunk_count": 2}));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn conditional_writes_carry_the_version_they_expect() {
        let v = DocVersion {
            seq_no: 7,
            primary_term: 2,
        };
        let mut body = Vec::new();
        push_index(&mut body, "docs", "new", Expect::Absent, &json!({}));
        push_index(&mut body, "docs", "seen", Expect::Version(v), &json!({}));
        push_delete(&mut body, "docs", "stale", v);
        let lines: Vec<Value> = String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            json!({"create": {"_index": "docs", "_id": "new"}})
        );
        assert_eq!(
            lines[2],
            json!({"index": {"_index": "docs", "_id": "seen", "if_seq_no": 7, "if_primary_term": 2}})
        );
        assert_eq!(
            lines[4],
            json!({"delete": {"_index": "docs", "_id": "stale", "if_seq_no": 7, "if_primary_term": 2}})
        );
        assert_eq!(lines.len(), 5, "a delete has no document line");
    }

    #[test]
    fn classifies_each_item() {
        let answer = json!({"took": 3, "errors": true, "items": [
            {"index": {"_index": "docs", "_id": "ok", "status": 201, "result": "created", "_seq_no": 12, "_primary_term": 1}},
            {"index": {"_index": "docs", "_id": "busy", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}},
            {"index": {"_index": "docs", "_id": "dims", "status": 400, "error": {"type": "document_parsing_exception", "reason": "[1:1] failed to parse",
                "caused_by": {"type": "illegal_argument_exception", "reason": "different number of dimensions [3] than defined in the mapping [1024]"}}}},
            {"update": {"_index": "docs", "_id": "gone", "status": 404, "error": {"type": "document_missing_exception", "reason": "missing"}}},
            {"index": {"_index": "docs", "_id": "down", "status": 503, "error": {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}}}
        ]});
        let out = parse_bulk_answer(answer.to_string().as_bytes(), 5).unwrap();
        assert_eq!(
            out.items[0],
            (
                "ok".into(),
                ItemOutcome::Stored {
                    version: Some(DocVersion {
                        seq_no: 12,
                        primary_term: 1
                    })
                }
            )
        );
        assert!(
            matches!(&out.items[1].1, ItemOutcome::Retry { status: 429, kind, .. } if kind == "es_rejected_execution_exception")
        );
        match &out.items[2].1 {
            ItemOutcome::Reject {
                status: 400,
                kind,
                reason,
            } => {
                assert_eq!(kind, "document_parsing_exception");
                assert!(
                    reason.contains("different number of dimensions"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(out.items[3].1, ItemOutcome::Conflict { .. }));
        assert!(matches!(
            out.items[4].1,
            ItemOutcome::Retry { status: 503, .. }
        ));
    }

    #[test]
    fn short_or_garbled_answers_are_errors() {
        let answer = json!({"errors": false, "items": [{"index": {"_id": "a", "status": 201}}]});
        assert!(
            parse_bulk_answer(answer.to_string().as_bytes(), 2)
                .unwrap_err()
                .contains("1 items for 2")
        );
        assert!(parse_bulk_answer(b"<html>502</html>", 1).is_err());
    }
}
