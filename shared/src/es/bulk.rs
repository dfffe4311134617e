//! `_bulk` request encoding and the item-by-item reading of its answer: a 200 with
//! `"errors": true` is not success.

use serde::{Deserialize, Serialize};

/// Appends one `index` action and its document to an NDJSON bulk body.
pub fn push_index(body: &mut Vec<u8>, index: &str, id: &str, doc: &impl Serialize) {
    push_action(body, "index", index, id);
    serde_json::to_writer(&mut *body, doc).expect("documents always serialise");
    body.push(b'\n');
}

/// Appends an `update` with a partial document: refreshes everything but the stored vector.
pub fn push_update(body: &mut Vec<u8>, index: &str, id: &str, partial: &impl Serialize) {
    #[derive(Serialize)]
    struct Update<'a, T> {
        doc: &'a T,
    }
    push_action(body, "update", index, id);
    serde_json::to_writer(&mut *body, &Update { doc: partial })
        .expect("documents always serialise");
    body.push(b'\n');
}

fn push_action(body: &mut Vec<u8>, action: &str, index: &str, id: &str) {
    #[derive(Serialize)]
    struct Meta<'a> {
        _index: &'a str,
        _id: &'a str,
    }
    body.extend_from_slice(b"{\"");
    body.extend_from_slice(action.as_bytes());
    body.extend_from_slice(b"\":");
    serde_json::to_writer(
        &mut *body,
        &Meta {
            _index: index,
            _id: id,
        },
    )
    .expect("ids always serialise");
    body.extend_from_slice(b"}\n");
}

/// What happened to one bulk item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Stored,
    /// Worth another try: 429 (rejected execution), 5xx, or a document that vanished under a
    /// partial update.
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
            200..=299 => ItemOutcome::Stored,
            // 404 only comes from `update` of a chunk deleted since it was looked up; 409 from a
            // concurrent write of the same id. Both resolve on the next attempt.
            404 | 408 | 409 | 429 | 500..=599 => ItemOutcome::Retry {
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
            let outcome = ItemOutcome::classify(it.status, &kind, &reason);
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
        push_index(&mut body, "docs", "a\"1", &json!({"text": "日本\n語"}));
        push_update(&mut body, "docs", "b", &json!({"chunk_count": 2}));
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
        assert_eq!(lines[2], json!({"update": {"_index": "docs", "_id": "b"}}));
        assert_eq!(lines[3], json!({"doc": {"chunk_count": 2}}));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn classifies_each_item() {
        let answer = json!({"took": 3, "errors": true, "items": [
            {"index": {"_index": "docs", "_id": "ok", "status": 201, "result": "created"}},
            {"index": {"_index": "docs", "_id": "busy", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}},
            {"index": {"_index": "docs", "_id": "dims", "status": 400, "error": {"type": "document_parsing_exception", "reason": "[1:1] failed to parse",
                "caused_by": {"type": "illegal_argument_exception", "reason": "different number of dimensions [3] than defined in the mapping [1024]"}}}},
            {"update": {"_index": "docs", "_id": "gone", "status": 404, "error": {"type": "document_missing_exception", "reason": "missing"}}},
            {"index": {"_index": "docs", "_id": "down", "status": 503, "error": {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}}}
        ]});
        let out = parse_bulk_answer(answer.to_string().as_bytes(), 5).unwrap();
        assert_eq!(out.items[0], ("ok".into(), ItemOutcome::Stored));
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
        assert!(matches!(
            out.items[3].1,
            ItemOutcome::Retry { status: 404, .. }
        ));
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
