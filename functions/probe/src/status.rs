//! `sakuin status`: where the pipeline stands, on one screen — what each queue holds, what the
//! index holds and how fresh it is, and the probe's checks — and whether a person is needed.

use std::fmt::Write;

use aws_sdk_sqs::types::QueueAttributeName as A;
use sakuin::es::EsClient;
use sakuin::probe::{self, ProbeDeps, ProbeReport};
use serde_json::{Value, json};

/// One queue's messages, by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// `intake`, `intake DLQ`, `chunk`, `chunk DLQ`.
    pub name: &'static str,
    pub dead_letter: bool,
    /// The counts, or why they could not be read.
    pub depth: Result<Depth, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    pub waiting: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

/// What the index holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFigures {
    pub chunks: u64,
    /// Distinct `doc_id`s and `source.key`s (Elasticsearch's cardinality: approximate above
    /// a few thousand).
    pub documents: u64,
    pub objects: u64,
    /// The newest `indexed_at`.
    pub newest: Option<String>,
}

/// Everything `sakuin status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    pub queues: Vec<QueueDepth>,
    pub index_name: String,
    pub index: Result<IndexFigures, String>,
    pub probe: ProbeReport,
}

impl Status {
    /// Reads the queues and the index, and runs the probe's checks.
    pub async fn gather(deps: &ProbeDeps) -> Self {
        let config = &deps.config;
        let named = [
            ("intake", false, &config.intake_queue_url),
            ("intake DLQ", true, &config.intake_dead_letter_queue_url),
            ("chunk", false, &config.queue_url),
            ("chunk DLQ", true, &config.dead_letter_queue_url),
        ];
        let mut queues = Vec::new();
        for (name, dead_letter, url) in named {
            if let Some(url) = url {
                queues.push(QueueDepth {
                    name,
                    dead_letter,
                    // Bounded like the probe's own calls: a status must not hang on one queue.
                    depth: tokio::time::timeout(config.timeout, depth(&deps.aws.sqs, url))
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!("no answer within {} s", config.timeout.as_secs()))
                        }),
                });
            }
        }
        let index = match &deps.es {
            Ok(es) => index_figures(es).await,
            Err(e) => Err(e.clone()),
        };
        let (groups, _) = probe::select_groups(&[]);
        let probe = probe::run(deps, &groups).await;
        Self {
            queues,
            index_name: config.es.index.clone(),
            index,
            probe,
        }
    }

    /// What needs a person, in words; empty when nothing does.
    pub fn attention(&self) -> Vec<String> {
        let mut needs = Vec::new();
        for q in &self.queues {
            match &q.depth {
                Ok(d) if q.dead_letter && d.waiting + d.in_flight > 0 => {
                    let n = d.waiting + d.in_flight;
                    let plural = if n == 1 { "" } else { "s" };
                    needs.push(format!(
                        "the {} holds {n} message{plural}: fix the cause, then `sakuin redrive`",
                        q.name
                    ));
                }
                Ok(_) => {}
                Err(e) => needs.push(format!("the {} queue cannot be read: {e}", q.name)),
            }
        }
        if let Err(e) = &self.index {
            needs.push(format!("the index cannot be read: {e}"));
        }
        for check in self.probe.checks.iter().filter(|c| !c.ok && c.required) {
            needs.push(format!("{} failed: {}", check.name, check.detail));
        }
        needs
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<12} {:>10} {:>10} {:>10}",
            "queue", "waiting", "in flight", "delayed"
        );
        for q in &self.queues {
            match &q.depth {
                Ok(d) => {
                    let _ = writeln!(
                        out,
                        "{:<12} {:>10} {:>10} {:>10}",
                        q.name, d.waiting, d.in_flight, d.delayed
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "{:<12} unreadable: {e}", q.name);
                }
            }
        }
        let _ = writeln!(out);
        match &self.index {
            Ok(i) => {
                let _ = writeln!(
                    out,
                    "index {}: {} chunks of {} documents from {} objects; newest indexed at {}",
                    self.index_name,
                    i.chunks,
                    i.documents,
                    i.objects,
                    i.newest.as_deref().unwrap_or("-")
                );
            }
            Err(e) => {
                let _ = writeln!(out, "index {}: unreadable: {e}", self.index_name);
            }
        }
        let _ = writeln!(out);
        out.push_str(&crate::render_report(&self.probe));
        let needs = self.attention();
        let _ = writeln!(out);
        if needs.is_empty() {
            let _ = writeln!(out, "nothing needs a person");
        } else {
            for need in needs {
                let _ = writeln!(out, "NEEDS A PERSON: {need}");
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let queues: Vec<Value> = self
            .queues
            .iter()
            .map(|q| match &q.depth {
                Ok(d) => json!({
                    "queue": q.name, "dead_letter": q.dead_letter,
                    "waiting": d.waiting, "in_flight": d.in_flight, "delayed": d.delayed,
                }),
                Err(e) => json!({"queue": q.name, "dead_letter": q.dead_letter, "error": e}),
            })
            .collect();
        let index = match &self.index {
            Ok(i) => json!({
                "name": self.index_name, "chunks": i.chunks, "documents": i.documents,
                "objects": i.objects, "newest_indexed_at": i.newest,
            }),
            Err(e) => json!({"name": self.index_name, "error": e}),
        };
        json!({
            "queues": queues,
            "index": index,
            "probe": self.probe,
            "attention": self.attention(),
        })
    }
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<Depth, String> {
    let answer = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| sakuin::embed::bedrock::error_chain(&e))?;
    let attributes = answer.attributes.unwrap_or_default();
    let count = |name: A| {
        attributes
            .get(&name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Depth {
        waiting: count(A::ApproximateNumberOfMessages),
        in_flight: count(A::ApproximateNumberOfMessagesNotVisible),
        delayed: count(A::ApproximateNumberOfMessagesDelayed),
    })
}

/// One search: the chunk count, distinct documents and objects, and the newest chunk.
async fn index_figures(es: &EsClient) -> Result<IndexFigures, String> {
    let answer = es
        .search(&json!({
            "size": 1,
            "track_total_hits": true,
            "sort": [{"indexed_at": {"order": "desc"}}],
            "_source": ["indexed_at"],
            "aggs": {
                "documents": {"cardinality": {"field": "doc_id"}},
                "objects": {"cardinality": {"field": "source.key"}},
            },
        }))
        .await
        .map_err(|e| e.to_string())?;
    let count = |pointer: &str| answer.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    Ok(IndexFigures {
        chunks: count("/hits/total/value"),
        documents: count("/aggregations/documents/value"),
        objects: count("/aggregations/objects/value"),
        newest: answer
            .pointer("/hits/hits/0/_source/indexed_at")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}
