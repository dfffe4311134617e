//! `sakuin redrive`: moves a dead-letter queue's messages back to the queue they failed on.
//!
//! The way AWS offers is an SQS message move task (`StartMessageMoveTask`, followed with
//! `ListMessageMoveTasks`):
//! <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_StartMessageMoveTask.html>.
//! An endpoint that does not offer move tasks (moto, the local stack) gets the same result by
//! hand: receive, send to the source queue with body and message attributes, delete what was
//! sent.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, ListMessageMoveTasksResultEntry, Message, QueueAttributeName,
    SendMessageBatchRequestEntry, SendMessageBatchResultEntry,
};
use sakuin::config::QueuePair;
use sakuin::error::error_chain;
use serde_json::{Value, json};

/// How the messages went back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Way {
    /// Nothing was waiting and no move task was running.
    Nothing,
    /// An SQS message move task; `started` is false when one was already running and followed.
    MoveTask { handle: String, started: bool },
    /// Received, sent and deleted ten at a time, because the endpoint has no move tasks.
    ByHand { why: String },
}

/// One dead-letter queue's redrive.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub queue: &'static str,
    pub dead_letter_queue: String,
    pub source_queue: String,
    /// `ApproximateNumberOfMessages` of the dead-letter queue before the move.
    pub waiting: u64,
    pub way: Way,
    /// Messages moved (the task's `ApproximateNumberOfMessagesMoved`, or counted by hand).
    pub moved: u64,
    /// The task's final status (`COMPLETED`), or `RUNNING` when detached.
    pub status: String,
    /// False when `--detach` left a task running.
    pub finished: bool,
}

impl Outcome {
    pub fn to_json(&self) -> Value {
        let (way, handle, why) = match &self.way {
            Way::Nothing => ("none", None, None),
            Way::MoveTask { handle, .. } => ("move_task", Some(handle.as_str()), None),
            Way::ByHand { why } => ("by_hand", None, Some(why.as_str())),
        };
        json!({
            "queue": self.queue,
            "dead_letter_queue": self.dead_letter_queue,
            "source_queue": self.source_queue,
            "waiting": self.waiting,
            "way": way,
            "task_handle": handle,
            "by_hand_because": why,
            "moved": self.moved,
            "status": self.status,
            "finished": self.finished,
        })
    }

    /// One or two lines for the terminal.
    pub fn render(&self) -> String {
        let (dlq, source) = (
            queue_name(&self.dead_letter_queue),
            queue_name(&self.source_queue),
        );
        match &self.way {
            Way::Nothing => format!("{}: {dlq} is empty, nothing to move\n", self.queue),
            Way::MoveTask { handle, started } if !self.finished => format!(
                "{}: {} SQS message move task {handle} from {dlq} to {source} ({} waiting); it runs on without this command \
                 (follow it in the SQS console or with `aws sqs list-message-move-tasks`)\n",
                self.queue,
                if *started {
                    "started"
                } else {
                    "already running:"
                },
                self.waiting
            ),
            Way::MoveTask { .. } => format!(
                "{}: moved {} message(s) from {dlq} to {source} with an SQS message move task ({})\n",
                self.queue, self.moved, self.status
            ),
            Way::ByHand { why } => format!(
                "{}: moved {} message(s) from {dlq} to {source} by hand (receive, send, delete), because {why}\n",
                self.queue, self.moved
            ),
        }
    }
}

/// Why a redrive stopped, and what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{queue}: {problem}{}", hint.as_deref().map(|h| format!("\n  → {h}")).unwrap_or_default())]
pub struct RedriveError {
    pub queue: &'static str,
    pub problem: String,
    pub hint: Option<String>,
}

impl RedriveError {
    pub fn to_json(&self) -> Value {
        json!({"queue": self.queue, "error": self.problem, "hint": self.hint})
    }
}

/// How an SQS call failed, as far as the redrive cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    /// HTTP status, when there was an answer.
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
}

impl CallFailure {
    fn of<E>(err: &SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        Self {
            status: err.raw_response().map(|r| r.status().as_u16()),
            code: err.code().map(str::to_owned),
            message: err
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| error_chain(err)),
        }
    }

    /// The endpoint does not know the operation: an unknown-operation code, 501, or a server
    /// error without any AWS error code (moto answers an action it lacks with a bare HTML 500;
    /// SQS itself always names its errors).
    pub fn unsupported(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "UnknownOperationException"
                    | "UnknownOperation"
                    | "InvalidAction"
                    | "NotImplemented"
                    | "NotImplementedException"
            )
        ) || self.status == Some(501)
            || (self.code.is_none() && self.status.is_some_and(|s| s >= 500))
    }

    pub fn denied(&self) -> bool {
        self.status == Some(403)
            || self
                .code
                .as_deref()
                .is_some_and(|c| c.contains("AccessDenied"))
    }

    fn describe(&self) -> String {
        match (&self.code, self.status) {
            (Some(code), _) => format!("{code}: {}", self.message),
            // No AWS error document: the body is not worth quoting (moto's is an HTML page).
            (None, Some(status)) => format!("HTTP {status} without an AWS error code"),
            (None, None) => format!("no answer: {}", self.message),
        }
    }
}

/// What the redrive may do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Start the task and return without following it.
    pub detach: bool,
    /// Between two looks at a running task.
    pub poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            detach: false,
            poll: Duration::from_secs(2),
        }
    }
}

struct Redrive<'a> {
    sqs: &'a Client,
    pair: &'a QueuePair,
}

/// Moves `pair`'s dead letters back to their source queue. `progress` hears about a running
/// task (for stderr; stdout keeps the result).
pub async fn redrive(
    sqs: &Client,
    pair: &QueuePair,
    options: &Options,
    progress: &mut dyn FnMut(String),
) -> Result<Outcome, RedriveError> {
    Redrive { sqs, pair }.run(options, progress).await
}

/// The two queues of a pair, as SQS names them, and how many messages wait.
struct Queues {
    dlq_arn: String,
    source_arn: String,
    waiting: u64,
}

/// How the move begins.
enum Start {
    /// A move task: one already running (`started` false) or one just started.
    Task { handle: String, started: bool },
    /// Nothing waits and no task runs.
    Empty,
    /// The endpoint has no move tasks: receive, send and delete instead.
    ByHand { why: String },
}

impl Redrive<'_> {
    fn error(&self, problem: impl Into<String>, hint: impl Into<Option<String>>) -> RedriveError {
        RedriveError {
            queue: self.pair.name,
            problem: problem.into(),
            hint: hint.into(),
        }
    }

    /// The permissions a move task needs, for hints.
    fn permissions_hint(&self) -> String {
        format!(
            "the caller needs sqs:StartMessageMoveTask, sqs:ListMessageMoveTasks, sqs:ReceiveMessage, sqs:DeleteMessage and \
             sqs:GetQueueAttributes on {} ({}), and sqs:SendMessage and sqs:GetQueueAttributes on {} ({}); \
             check the IAM policy and the queues' policies",
            queue_name(&self.pair.dead_letter_queue_url),
            self.pair.dead_letter_queue_var,
            queue_name(&self.pair.queue_url),
            self.pair.queue_var
        )
    }

    fn call_error(&self, what: &str, url_var: &str, f: &CallFailure) -> RedriveError {
        let hint = if f.denied() {
            Some(self.permissions_hint())
        } else if f
            .code
            .as_deref()
            .is_some_and(|c| c.contains("NonExistentQueue") || c.contains("QueueDoesNotExist"))
        {
            Some(format!(
                "check {url_var}: the queue URL of this account and Region"
            ))
        } else if f.status.is_none() {
            Some("SQS could not be reached: check AWS_REGION, the credentials and the network path to the SQS endpoint".into())
        } else {
            None
        };
        self.error(format!("{what} failed: {}", f.describe()), hint)
    }

    async fn run(
        &self,
        options: &Options,
        progress: &mut dyn FnMut(String),
    ) -> Result<Outcome, RedriveError> {
        let pair = self.pair;
        let queues = self.queues().await?;
        let outcome = |way, moved, status: &str, finished| Outcome {
            queue: pair.name,
            dead_letter_queue: pair.dead_letter_queue_url.clone(),
            source_queue: pair.queue_url.clone(),
            waiting: queues.waiting,
            way,
            moved,
            status: status.to_owned(),
            finished,
        };
        let (handle, started) = match self.start_or_join(&queues).await? {
            Start::Task { handle, started } => (handle, started),
            Start::Empty => return Ok(outcome(Way::Nothing, 0, "EMPTY", true)),
            Start::ByHand { why } => {
                let moved = self.by_hand().await?;
                return Ok(outcome(Way::ByHand { why }, moved, "COMPLETED", true));
            }
        };
        let way = Way::MoveTask {
            handle: handle.clone(),
            started,
        };
        if options.detach {
            return Ok(outcome(way, 0, "RUNNING", false));
        }
        self.follow(
            &queues.dlq_arn,
            &queues.source_arn,
            &handle,
            options,
            progress,
        )
        .await
        .map(|(moved, status)| outcome(way, moved, &status, true))
    }

    /// The two queues' ARNs and how many messages wait; an error when the source's redrive
    /// policy names another dead-letter queue (the variables do not belong together).
    async fn queues(&self) -> Result<Queues, RedriveError> {
        use QueueAttributeName as A;
        let pair = self.pair;
        let read = async |url: &str, var: &str, names: [A; 2]| {
            self.sqs
                .get_queue_attributes()
                .queue_url(url)
                .set_attribute_names(Some(names.to_vec()))
                .send()
                .await
                .map(|out| out.attributes().cloned().unwrap_or_default())
                .map_err(|e| {
                    let what = format!("GetQueueAttributes on {url}");
                    self.call_error(&what, var, &CallFailure::of(&e))
                })
        };
        let dlq_names = [A::QueueArn, A::ApproximateNumberOfMessages];
        let dlq = read(
            &pair.dead_letter_queue_url,
            pair.dead_letter_queue_var,
            dlq_names,
        )
        .await?;
        let source_names = [A::QueueArn, A::RedrivePolicy];
        let source = read(&pair.queue_url, pair.queue_var, source_names).await?;
        let (Some(dlq_arn), Some(source_arn)) = (dlq.get(&A::QueueArn), source.get(&A::QueueArn))
        else {
            return Err(self.error("SQS did not name the queues' ARNs", None));
        };
        let waiting = dlq
            .get(&A::ApproximateNumberOfMessages)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        // Messages go back only to the queue that sent them.
        let target = source
            .get(&A::RedrivePolicy)
            .and_then(|p| serde_json::from_str::<Value>(p).ok())
            .and_then(|p| p["deadLetterTargetArn"].as_str().map(str::to_owned));
        if let Some(target) = target
            && target != *dlq_arn
        {
            return Err(self.error(
                format!(
                    "{}'s redrive policy sends failed messages to {target}, not to {dlq_arn}: the messages in {} did not come from {}",
                    queue_name(&pair.queue_url),
                    queue_name(&pair.dead_letter_queue_url),
                    queue_name(&pair.queue_url)
                ),
                Some(format!(
                    "check {} and {}: they must name a queue and its own dead-letter queue",
                    pair.queue_var, pair.dead_letter_queue_var
                )),
            ));
        }
        Ok(Queues {
            dlq_arn: dlq_arn.clone(),
            source_arn: source_arn.clone(),
            waiting,
        })
    }

    /// Only one task may run per queue: follow one that is already running, else start one
    /// (when anything waits), or move by hand where the endpoint has no move tasks.
    async fn start_or_join(&self, queues: &Queues) -> Result<Start, RedriveError> {
        let dlq_var = self.pair.dead_letter_queue_var;
        let no_tasks = |call: &str, f: &CallFailure| Start::ByHand {
            why: format!(
                "the SQS endpoint does not offer message move tasks ({call}: {})",
                f.describe()
            ),
        };
        let running = match self.tasks(&queues.dlq_arn).await {
            Err(f) if f.unsupported() => return Ok(no_tasks("ListMessageMoveTasks", &f)),
            Err(f) => return Err(self.call_error("ListMessageMoveTasks", dlq_var, &f)),
            Ok(tasks) => tasks
                .iter()
                .find(|t| t.status() == Some("RUNNING"))
                .and_then(|t| t.task_handle())
                .map(str::to_owned),
        };
        if let Some(handle) = running {
            return Ok(Start::Task {
                handle,
                started: false,
            });
        }
        if queues.waiting == 0 {
            return Ok(Start::Empty);
        }
        let answer = self
            .sqs
            .start_message_move_task()
            .source_arn(&queues.dlq_arn)
            .destination_arn(&queues.source_arn)
            .send()
            .await;
        match answer {
            Ok(out) => Ok(Start::Task {
                handle: out.task_handle().unwrap_or_default().to_owned(),
                started: true,
            }),
            Err(e) => {
                let f = CallFailure::of(&e);
                if f.unsupported() {
                    return Ok(no_tasks("StartMessageMoveTask", &f));
                }
                Err(self.call_error("StartMessageMoveTask", dlq_var, &f))
            }
        }
    }

    async fn tasks(
        &self,
        dlq_arn: &str,
    ) -> Result<Vec<ListMessageMoveTasksResultEntry>, CallFailure> {
        self.sqs
            .list_message_move_tasks()
            .source_arn(dlq_arn)
            .max_results(10)
            .send()
            .await
            .map(|out| out.results().to_vec())
            .map_err(|e| CallFailure::of(&e))
    }

    /// Looks at the task until it ends; returns (moved, final status).
    async fn follow(
        &self,
        dlq_arn: &str,
        source_arn: &str,
        handle: &str,
        options: &Options,
        progress: &mut dyn FnMut(String),
    ) -> Result<(u64, String), RedriveError> {
        let mut started_at = None;
        let mut reported = None;
        loop {
            let tasks = self.tasks(dlq_arn).await.map_err(|f| {
                self.call_error("ListMessageMoveTasks", self.pair.dead_letter_queue_var, &f)
            })?;
            let Some(task) = find_task(&tasks, handle, source_arn, &mut started_at) else {
                return Err(self.error(
                    format!("the move task {handle} is no longer listed for {dlq_arn}"),
                    Some("look at the dead-letter queue in the SQS console; run `sakuin redrive` again to move what is left".into()),
                ));
            };
            let moved = task.approximate_number_of_messages_moved().max(0) as u64;
            let status = task.status().unwrap_or("UNKNOWN").to_owned();
            match status.as_str() {
                "COMPLETED" => return Ok((moved, status)),
                "FAILED" | "CANCELLED" => {
                    return Err(self.error(
                        format!(
                            "the move task ended {status} after moving {moved} message(s){}",
                            task.failure_reason()
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default()
                        ),
                        Some(if status == "FAILED" {
                            self.permissions_hint()
                        } else {
                            "someone cancelled it; run `sakuin redrive` again to move what is left"
                                .into()
                        }),
                    ));
                }
                _ => {
                    if reported != Some(moved) {
                        let of = task
                            .approximate_number_of_messages_to_move()
                            .map(|n| format!(" of {n}"))
                            .unwrap_or_default();
                        progress(format!("{}: {moved}{of} moved ({status})", self.pair.name));
                        reported = Some(moved);
                    }
                    tokio::time::sleep(options.poll).await;
                }
            }
        }
    }

    /// Receive, send, delete until a receive comes back empty; returns how many were moved.
    async fn by_hand(&self) -> Result<u64, RedriveError> {
        let pair = self.pair;
        let mut tally = Tally::default();
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&pair.dead_letter_queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                // Long enough that a message being moved does not come back in this run.
                .visibility_timeout(120)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| {
                    let what = format!(
                        "ReceiveMessage on {} ({} moved so far)",
                        pair.dead_letter_queue_url, tally.moved
                    );
                    self.call_error(&what, pair.dead_letter_queue_var, &CallFailure::of(&e))
                })?;
            let messages = received.messages();
            if messages.is_empty() {
                break;
            }
            for pack in packs(messages, SEND_BATCH_BYTES) {
                self.move_pack(&pack, &mut tally).await?;
            }
        }
        if tally.unsent + tally.undeleted > 0 {
            return Err(self.error(
                format!(
                    "moved {} message(s) by hand, but {} could not be sent (they stay in {}) and {} sent could not be deleted \
                     (they are in both queues; ids are deterministic, so a second delivery is harmless); first: {}",
                    tally.moved,
                    tally.unsent,
                    queue_name(&pair.dead_letter_queue_url),
                    tally.undeleted,
                    tally.first_problem.unwrap_or_default()
                ),
                Some("run `sakuin redrive` again once the cause is fixed".into()),
            ));
        }
        Ok(tally.moved)
    }

    /// Sends one pack to the source queue and deletes from the dead-letter queue exactly the
    /// messages SQS says it took.
    async fn move_pack(&self, pack: &[&Message], tally: &mut Tally) -> Result<(), RedriveError> {
        let sent = self.send_pack(pack, tally).await?;
        // A 200 from SendMessageBatch is not success: only the entries it lists as successful
        // may leave the dead-letter queue.
        for failed in sent.failed() {
            tally.unsent += 1;
            tally.problem("sending", failed.code(), failed.message());
        }
        let deletes = deletes_of_sent(pack, sent.successful());
        tally.moved += sent.successful().len() as u64;
        if deletes.is_empty() {
            return Ok(());
        }
        self.delete_sent(deletes, tally).await
    }

    /// One SendMessageBatch of a pack to the source queue, each message with its body and
    /// attributes, its entry id its place in the pack.
    async fn send_pack(
        &self,
        pack: &[&Message],
        tally: &Tally,
    ) -> Result<SendMessageBatchOutput, RedriveError> {
        let pair = self.pair;
        let entries: Vec<SendMessageBatchRequestEntry> = pack
            .iter()
            .enumerate()
            .map(|(i, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(m.body().unwrap_or_default())
                    .set_message_attributes(m.message_attributes().cloned())
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        self.sqs
            .send_message_batch()
            .queue_url(&pair.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                let what = format!(
                    "SendMessageBatch to {} ({} moved so far; the rest stay in {})",
                    pair.queue_url,
                    tally.moved,
                    queue_name(&pair.dead_letter_queue_url)
                );
                self.call_error(&what, pair.queue_var, &CallFailure::of(&e))
            })
    }

    /// One DeleteMessageBatch on the dead-letter queue of the messages sent; those it could
    /// not delete are tallied.
    async fn delete_sent(
        &self,
        deletes: Vec<DeleteMessageBatchRequestEntry>,
        tally: &mut Tally,
    ) -> Result<(), RedriveError> {
        let pair = self.pair;
        let deleted = self
            .sqs
            .delete_message_batch()
            .queue_url(&pair.dead_letter_queue_url)
            .set_entries(Some(deletes))
            .send()
            .await
            .map_err(|e| {
                let what = format!(
                    "DeleteMessageBatch on {} after sending {}: those sent in this batch are now in both queues",
                    pair.dead_letter_queue_url, tally.moved
                );
                self.call_error(&what, pair.dead_letter_queue_var, &CallFailure::of(&e))
            })?;
        for failed in deleted.failed() {
            tally.undeleted += 1;
            tally.problem("deleting", failed.code(), failed.message());
        }
        Ok(())
    }
}

/// The deletes of the messages SendMessageBatch took: each successful entry's message of the
/// pack, by its receipt handle.
fn deletes_of_sent(
    pack: &[&Message],
    successful: &[SendMessageBatchResultEntry],
) -> Vec<DeleteMessageBatchRequestEntry> {
    successful
        .iter()
        .filter_map(|ok| {
            let m = pack.get(ok.id().parse::<usize>().ok()?)?;
            DeleteMessageBatchRequestEntry::builder()
                .id(ok.id())
                .receipt_handle(m.receipt_handle()?)
                .build()
                .ok()
        })
        .collect()
}

/// What a move by hand has done so far.
#[derive(Default)]
struct Tally {
    moved: u64,
    unsent: u64,
    undeleted: u64,
    first_problem: Option<String>,
}

impl Tally {
    fn problem(&mut self, doing: &str, code: &str, message: Option<&str>) {
        self.first_problem
            .get_or_insert_with(|| format!("{doing} failed: {code}: {}", message.unwrap_or("")));
    }
}

/// SendMessageBatch's limit for the whole batch, as old queues and emulators still have it
/// (new queues take 1 MiB); a single larger message goes alone.
const SEND_BATCH_BYTES: usize = 256 * 1024;

/// What a message weighs in a batch: its body and attributes (names, types and values).
fn weight(m: &Message) -> usize {
    let attributes: usize = m
        .message_attributes()
        .map(|a| {
            a.iter()
                .map(|(name, v)| {
                    name.len()
                        + v.data_type().len()
                        + v.string_value().map_or(0, str::len)
                        + v.binary_value().map_or(0, |b| b.as_ref().len())
                })
                .sum()
        })
        .unwrap_or(0);
    m.body().map_or(0, str::len) + attributes
}

/// Splits received messages into batches within `limit` bytes.
fn packs(messages: &[Message], limit: usize) -> Vec<Vec<&Message>> {
    let mut out: Vec<Vec<&Message>> = Vec::new();
    let mut size = 0;
    for m in messages {
        let w = weight(m);
        match out.last_mut() {
            Some(pack) if size + w <= limit && pack.len() < 10 => {
                pack.push(m);
                size += w;
            }
            _ => {
                out.push(vec![m]);
                size = w;
            }
        }
    }
    out
}

/// Our task in a listing: by its handle while it runs (SQS names handles only for running
/// tasks), then by the start time seen with it; a task that ended before it was ever seen is
/// the newest one moving to `source_arn`.
fn find_task<'a>(
    tasks: &'a [ListMessageMoveTasksResultEntry],
    handle: &str,
    source_arn: &str,
    started_at: &mut Option<i64>,
) -> Option<&'a ListMessageMoveTasksResultEntry> {
    if let Some(t) = tasks.iter().find(|t| t.task_handle() == Some(handle)) {
        *started_at = Some(t.started_timestamp());
        return Some(t);
    }
    match started_at {
        Some(at) => tasks.iter().find(|t| t.started_timestamp() == *at),
        // Listed newest first.
        None => tasks
            .iter()
            .find(|t| t.destination_arn().is_none_or(|d| d == source_arn)),
    }
}

pub fn queue_name(url: &str) -> String {
    url.trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(url)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::MessageAttributeValue;

    fn failure(status: Option<u16>, code: Option<&str>) -> CallFailure {
        CallFailure {
            status,
            code: code.map(str::to_owned),
            message: "m".into(),
        }
    }

    #[test]
    fn an_endpoint_without_move_tasks_is_told_from_a_refusal() {
        // moto: a bare HTML 500 without an AWS error code.
        assert!(failure(Some(500), None).unsupported());
        assert!(failure(Some(400), Some("UnknownOperationException")).unsupported());
        assert!(failure(Some(400), Some("InvalidAction")).unsupported());
        assert!(failure(Some(501), Some("Whatever")).unsupported());
        // SQS's own answers are not.
        assert!(!failure(Some(500), Some("InternalError")).unsupported());
        assert!(!failure(Some(400), Some("UnsupportedOperation")).unsupported());
        assert!(!failure(Some(403), Some("AccessDenied")).unsupported());
        assert!(!failure(None, None).unsupported());
        assert!(failure(Some(403), Some("AccessDenied")).denied());
        assert!(failure(Some(400), Some("AccessDeniedException")).denied());
    }

    fn message(body: &str, attribute: Option<(&str, &str)>) -> Message {
        let mut m = Message::builder().body(body).receipt_handle("r");
        if let Some((name, value)) = attribute {
            m = m.message_attributes(
                name,
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build()
                    .unwrap(),
            );
        }
        m.build()
    }

    #[test]
    fn batches_stay_within_the_size_and_count_limits() {
        let big = "x".repeat(100 * 1024);
        let messages: Vec<Message> = (0..5).map(|_| message(&big, None)).collect();
        let sizes: Vec<usize> = packs(&messages, SEND_BATCH_BYTES)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let small: Vec<Message> = (0..10)
            .map(|i| message(&i.to_string(), Some(("kind", "chunk"))))
            .collect();
        assert_eq!(packs(&small, SEND_BATCH_BYTES).len(), 1);
        // Attributes count too; a message over the limit goes alone.
        let huge = message(&"y".repeat(300 * 1024), Some(("kind", "chunk")));
        assert_eq!(weight(&huge), 300 * 1024 + 4 + 6 + 5);
        assert_eq!(packs(&[huge.clone(), huge], SEND_BATCH_BYTES).len(), 2);
    }

    fn task(
        handle: Option<&str>,
        status: &str,
        started: i64,
        moved: i64,
    ) -> ListMessageMoveTasksResultEntry {
        let mut t = ListMessageMoveTasksResultEntry::builder()
            .status(status)
            .started_timestamp(started)
            .approximate_number_of_messages_moved(moved)
            .destination_arn("arn:aws:sqs:ap-northeast-1:123456789012:chunks");
        if let Some(h) = handle {
            t = t.task_handle(h);
        }
        t.build()
    }

    #[test]
    fn the_task_is_found_by_handle_then_by_its_start() {
        let source = "arn:aws:sqs:ap-northeast-1:123456789012:chunks";
        let mut started = None;
        let running = [
            task(Some("h2"), "RUNNING", 200, 5),
            task(None, "COMPLETED", 100, 9),
        ];
        assert_eq!(
            find_task(&running, "h2", source, &mut started)
                .map(|t| t.approximate_number_of_messages_moved()),
            Some(5)
        );
        assert_eq!(started, Some(200));
        // Completed: no handle any more; someone else's newer task does not count.
        let done = [
            task(Some("h3"), "RUNNING", 300, 1),
            task(None, "COMPLETED", 200, 40),
            task(None, "COMPLETED", 100, 9),
        ];
        assert_eq!(
            find_task(&done, "h2", source, &mut started)
                .map(|t| t.approximate_number_of_messages_moved()),
            Some(40)
        );
        // Never seen running: the newest task to this destination.
        let mut never = None;
        assert_eq!(
            find_task(&done[1..], "h9", source, &mut never).map(|t| t.started_timestamp()),
            Some(200)
        );
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = RedriveError {
            queue: "chunk",
            problem: "StartMessageMoveTask failed: AccessDenied: no".into(),
            hint: Some("the caller needs sqs:StartMessageMoveTask".into()),
        };
        assert_eq!(
            e.to_string(),
            "chunk: StartMessageMoveTask failed: AccessDenied: no\n  → the caller needs sqs:StartMessageMoveTask"
        );
        assert_eq!(
            queue_name("http://127.0.0.1:5000/123456789012/sakuin-dlq"),
            "sakuin-dlq"
        );
        assert_eq!(
            queue_name("arn:aws:sqs:ap-northeast-1:123456789012:sakuin-dlq"),
            "sakuin-dlq"
        );
    }
}
