//! A fault-injecting proxy in front of the local Elasticsearch. It passes requests through until
//! told to misbehave the way a real cluster does: answer every request 503 (an outage), or
//! answer chosen `_bulk` items 429 (busy, for a number of attempts) or 400 (rejected for good).
//! Faulted items never reach the cluster, so what is stored is exactly what was accepted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::http::{Request, http_response, serve_connection};

/// What happens to a `_bulk` item for a given document id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemFault {
    /// 429 `es_rejected_execution_exception` for the next `times` attempts, then passed through.
    Busy { times: u32 },
    /// 400 `document_parsing_exception`, every time.
    Rejected,
}

/// How many faults the proxy has injected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Injected {
    pub busy_items: u64,
    pub rejected_items: u64,
    pub unavailable_requests: u64,
}

/// An older (or newer) release the proxy plays: what `GET /` says, and the vector index types
/// its mappings accept (others are refused as that release refuses them).
#[derive(Debug, Clone)]
struct Release {
    number: String,
    index_types: Vec<String>,
    /// `basic` (a self-managed cluster's default) refuses the `rrf` retriever as a paid feature.
    license: String,
}

/// The release that brought the `rrf` retriever (8.14).
const RRF_SINCE: (u32, u32) = (8, 14);

#[derive(Default)]
struct Plan {
    release: Option<Release>,
    down: bool,
    items: HashMap<String, ItemFault>,
    injected: Injected,
}

pub struct EsFaults {
    pub port: u16,
    plan: Arc<Mutex<Plan>>,
    task: JoinHandle<()>,
}

impl EsFaults {
    /// Listens on a free loopback port and forwards to Elasticsearch on `upstream_port`.
    pub async fn start(upstream_port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let plan = Arc::new(Mutex::new(Plan::default()));
        let upstream = Upstream {
            base: format!("http://127.0.0.1:{upstream_port}"),
            client: reqwest::Client::new(),
        };
        let shared = plan.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, shared.clone(), upstream.clone()));
            }
        });
        Ok(Self { port, plan, task })
    }

    /// An outage: every request is answered 503 until `set_down(false)`.
    pub fn set_down(&self, down: bool) {
        self.plan.lock().unwrap().down = down;
    }

    /// The next `times` bulk items for document `id` are answered 429.
    pub fn busy(&self, id: &str, times: u32) {
        let mut plan = self.plan.lock().unwrap();
        plan.items.insert(id.to_owned(), ItemFault::Busy { times });
    }

    /// Every bulk item for document `id` is answered 400.
    pub fn reject(&self, id: &str) {
        let mut plan = self.plan.lock().unwrap();
        plan.items.insert(id.to_owned(), ItemFault::Rejected);
    }

    /// Plays release `number`: `GET /` reports it, and creating an index whose `embedding` asks
    /// for an `index_options.type` outside `index_types` is refused with the 400 that release
    /// answers (`mapper_parsing_exception`, "Unknown vector index options type").
    /// The release's licence is `basic` until [`EsFaults::play_license`] says otherwise.
    pub fn play_release(&self, number: &str, index_types: &[&str]) {
        self.plan.lock().unwrap().release = Some(Release {
            number: number.to_owned(),
            index_types: index_types.iter().map(|t| t.to_string()).collect(),
            license: "basic".into(),
        });
    }

    /// The played release's licence type (`basic`, `trial`, `enterprise`, ...).
    pub fn play_license(&self, license: &str) {
        let mut plan = self.plan.lock().unwrap();
        let release = plan.release.as_mut().expect("play_release first");
        release.license = license.to_owned();
    }

    pub fn injected(&self) -> Injected {
        self.plan.lock().unwrap().injected
    }
}

impl Drop for EsFaults {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Upstream {
    base: String,
    client: reqwest::Client,
}

impl Upstream {
    async fn forward(&self, request: &Request, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|e| format!("method {}: {e}", request.method))?;
        let mut call = self
            .client
            .request(method, format!("{}{}", self.base, request.path));
        for (name, value) in &request.headers {
            if !["host", "content-length", "connection", "transfer-encoding"]
                .contains(&name.as_str())
            {
                call = call.header(name, value);
            }
        }
        let response = call.body(body).send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, bytes.to_vec()))
    }
}

async fn serve(stream: TcpStream, plan: Arc<Mutex<Plan>>, upstream: Upstream) {
    serve_connection(stream, move |request| {
        let (plan, upstream) = (plan.clone(), upstream.clone());
        async move {
            let (status, body) = answer(&request, &plan, &upstream).await;
            http_response(status, &[], &body)
        }
    })
    .await;
}

async fn answer(request: &Request, plan: &Mutex<Plan>, upstream: &Upstream) -> (u16, Vec<u8>) {
    let down = {
        let mut plan = plan.lock().unwrap();
        if plan.down {
            plan.injected.unavailable_requests += 1;
        }
        plan.down
    };
    if down {
        let error = json!({"error": {"root_cause": [{"type": "master_not_discovered_exception", "reason": null}], "type": "master_not_discovered_exception", "reason": null}, "status": 503});
        return (503, error.to_string().into_bytes());
    }
    let path = request.path.split('?').next().unwrap_or("");
    let release = plan.lock().unwrap().release.clone();
    if let Some(release) = release
        && let Some(answer) = play(&release, request, path, upstream).await
    {
        return answer;
    }
    let result = if request.method == "POST" && path.ends_with("/_bulk") {
        bulk(request, plan, upstream).await
    } else {
        upstream.forward(request, request.body.clone()).await
    };
    result.unwrap_or_else(|e| {
        let error = json!({"error": {"type": "proxy_exception", "reason": e}, "status": 502});
        (502, error.to_string().into_bytes())
    })
}

/// The answers of a played release that differ from the local cluster's: `GET /`, and the
/// creation of an index with a vector index type the release does not know.
async fn play(
    release: &Release,
    request: &Request,
    path: &str,
    upstream: &Upstream,
) -> Option<(u16, Vec<u8>)> {
    if request.method == "GET" && path == "/" {
        let (status, body) = upstream.forward(request, Vec::new()).await.ok()?;
        let mut root: Value = serde_json::from_slice(&body).ok()?;
        root["version"]["number"] = json!(release.number);
        return Some((status, root.to_string().into_bytes()));
    }
    if request.method == "POST" && path.ends_with("/_search") {
        return refuse_retriever(release, &request.body);
    }
    let creates_index = request.method == "PUT" && path.len() > 1 && !path[1..].contains('/');
    if !creates_index {
        return None;
    }
    let mapping: Value = serde_json::from_slice(&request.body).ok()?;
    let wanted = mapping
        .pointer("/mappings/properties/embedding/index_options/type")
        .and_then(Value::as_str)?;
    if release.index_types.iter().any(|t| t == wanted) {
        return None;
    }
    let reason = format!(
        "Failed to parse mapping: Unknown vector index options type [{wanted}] for field [embedding]"
    );
    let error = json!({"error": {"root_cause": [{"type": "mapper_parsing_exception", "reason": reason}],
        "type": "mapper_parsing_exception", "reason": reason}, "status": 400});
    Some((400, error.to_string().into_bytes()))
}

/// A search with a `retriever` as the release answers it: unknown before 8.14 (400), refused
/// under a basic licence (403), else `None` (forwarded).
fn refuse_retriever(release: &Release, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let search: Value = serde_json::from_slice(body).ok()?;
    search.get("retriever")?;
    let mut parts = release
        .number
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let (status, kind, reason) = if (major, minor) < RRF_SINCE {
        (
            400,
            "parsing_exception",
            "Unknown key for a START_OBJECT in [retriever].".to_owned(),
        )
    } else if !["trial", "enterprise"].contains(&release.license.as_str()) {
        (
            403,
            "security_exception",
            "current license is non-compliant for [rank-rrf]".to_owned(),
        )
    } else {
        return None;
    };
    let error = json!({"error": {"root_cause": [{"type": kind, "reason": reason}],
        "type": kind, "reason": reason}, "status": status});
    Some((status, error.to_string().into_bytes()))
}

/// One bulk action: its verb, index, id, and its lines (the source too, except for deletes).
struct Action<'a> {
    verb: String,
    index: String,
    id: String,
    lines: Vec<&'a [u8]>,
}

fn parse_actions(body: &[u8]) -> Result<Vec<Action<'_>>, String> {
    let mut lines = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    let mut actions = Vec::new();
    while let Some(line) = lines.next() {
        let meta: Value = serde_json::from_slice(line).map_err(|e| format!("action line: {e}"))?;
        let (verb, target) = meta
            .as_object()
            .and_then(|m| m.iter().next())
            .ok_or("empty action line")?;
        let mut action = Action {
            verb: verb.clone(),
            index: target["_index"].as_str().unwrap_or_default().to_owned(),
            id: target["_id"].as_str().unwrap_or_default().to_owned(),
            lines: vec![line],
        };
        if verb != "delete" {
            action
                .lines
                .push(lines.next().ok_or("action without a source line")?);
        }
        actions.push(action);
    }
    Ok(actions)
}

/// Answers the planned items itself and forwards the rest, then merges the answers in order.
async fn bulk(
    request: &Request,
    plan: &Mutex<Plan>,
    upstream: &Upstream,
) -> Result<(u16, Vec<u8>), String> {
    let actions = parse_actions(&request.body)?;
    let faults: Vec<Option<ItemAnswer>> = {
        let mut plan = plan.lock().unwrap();
        actions.iter().map(|a| plan.item_fault(&a.id)).collect()
    };
    let passed = passed_body(&actions, &faults);
    let mut cluster = BulkAnswer::default();
    if !passed.is_empty() {
        let (status, body) = upstream.forward(request, passed).await?;
        if status != 200 {
            return Ok((status, body));
        }
        cluster = BulkAnswer::read(&body)?;
    }
    let answer = merge_answers(&actions, &faults, cluster)?;
    Ok((200, answer.to_string().into_bytes()))
}

/// A `_bulk` item's answer made by the proxy: status, error type and reason.
type ItemAnswer = (u16, &'static str, &'static str);

impl Plan {
    /// The fault planned for the next item for document `id`, counted as injected: 429 while
    /// a busy item has attempts left, 400 for a rejected one, else none.
    fn item_fault(&mut self, id: &str) -> Option<ItemAnswer> {
        match self.items.get_mut(id) {
            Some(ItemFault::Busy { times }) if *times > 0 => {
                *times -= 1;
                self.injected.busy_items += 1;
                Some((
                    429,
                    "es_rejected_execution_exception",
                    "rejected execution of coordinating operation [queue capacity reached]",
                ))
            }
            Some(ItemFault::Rejected) => {
                self.injected.rejected_items += 1;
                Some((
                    400,
                    "document_parsing_exception",
                    "[1:42] failed to parse field [embedding] of type [dense_vector]",
                ))
            }
            _ => None,
        }
    }
}

/// The lines of the actions without a fault: the `_bulk` body the cluster is sent.
fn passed_body(actions: &[Action<'_>], faults: &[Option<ItemAnswer>]) -> Vec<u8> {
    actions
        .iter()
        .zip(faults)
        .filter(|(_, f)| f.is_none())
        .flat_map(|(a, _)| a.lines.iter().flat_map(|l| l.iter().chain(b"\n")))
        .copied()
        .collect()
}

/// What the cluster answered to the forwarded actions (nothing when none were forwarded).
#[derive(Default)]
struct BulkAnswer {
    took: u64,
    errors: bool,
    items: Vec<Value>,
}

impl BulkAnswer {
    /// Reads the cluster's `_bulk` answer.
    fn read(body: &[u8]) -> Result<Self, String> {
        let answer: Value =
            serde_json::from_slice(body).map_err(|e| format!("bulk answer: {e}"))?;
        Ok(Self {
            errors: answer["errors"].as_bool().unwrap_or(false),
            took: answer["took"].as_u64().unwrap_or(0),
            items: answer["items"].as_array().cloned().unwrap_or_default(),
        })
    }
}

/// The answer to the whole request, item by item in the order sent: the planned faults, and
/// the cluster's answers to the rest.
fn merge_answers(
    actions: &[Action<'_>],
    faults: &[Option<ItemAnswer>],
    cluster: BulkAnswer,
) -> Result<Value, String> {
    let mut errors = cluster.errors;
    let mut upstream_items = cluster.items.into_iter();
    let mut items = Vec::with_capacity(actions.len());
    for (action, fault) in actions.iter().zip(faults) {
        match fault {
            Some((status, kind, reason)) => {
                errors = true;
                items.push(json!({action.verb.as_str(): {
                    "_index": action.index, "_id": action.id, "status": status,
                    "error": {"type": kind, "reason": reason}}}));
            }
            None => items.push(
                upstream_items
                    .next()
                    .ok_or("the cluster answered fewer items than it was sent")?,
            ),
        }
    }
    Ok(json!({"took": cluster.took, "errors": errors, "items": items}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_bodies_split_into_actions_with_and_without_sources() {
        let body = b"{\"index\":{\"_index\":\"d\",\"_id\":\"a\"}}\n{\"text\":\"x\"}\n\
{\"delete\":{\"_index\":\"d\",\"_id\":\"b\"}}\n\
{\"update\":{\"_index\":\"d\",\"_id\":\"c\"}}\n{\"doc\":{}}\n";
        let actions = parse_actions(body).unwrap();
        let summary: Vec<(&str, &str, usize)> = actions
            .iter()
            .map(|a| (a.verb.as_str(), a.id.as_str(), a.lines.len()))
            .collect();
        assert_eq!(
            summary,
            vec![("index", "a", 2), ("delete", "b", 1), ("update", "c", 2)]
        );
        assert!(parse_actions(b"{\"index\":{\"_id\":\"a\"}}\n").is_err());
    }
}
