//! A Lambda Runtime API on loopback: runs a function's real binary as Lambda would (the same
//! environment variables, the same `/next`, `/response` and `/error` calls) and invokes it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::http::{Response, http_response, serve_connection};

/// A function's error response, as Lambda reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {error_message}")]
pub struct FunctionError {
    pub error_type: String,
    pub error_message: String,
}

type Outcome = Result<Value, FunctionError>;

struct Invocation {
    id: String,
    payload: Vec<u8>,
    deadline_ms: u64,
}

struct Shared {
    queue: Mutex<mpsc::Receiver<Invocation>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    first_next: Mutex<Option<Instant>>,
    init_error: Mutex<Option<String>>,
    function_name: String,
    /// The last lines the process wrote, for errors when it dies.
    tail: std::sync::Mutex<std::collections::VecDeque<String>>,
    /// Asynchronous invocations (the function invoking itself through the Lambda API).
    async_sender: Mutex<Option<mpsc::Sender<Invocation>>>,
    async_pending: std::sync::atomic::AtomicUsize,
    async_results: std::sync::Mutex<Vec<Outcome>>,
    next_async: std::sync::atomic::AtomicU64,
}

/// One running function process (a warm Lambda container) and its Runtime API.
pub struct FunctionProcess {
    pub name: String,
    child: Mutex<Child>,
    sender: mpsc::Sender<Invocation>,
    shared: Arc<Shared>,
    spawned_at: Instant,
    next_id: std::sync::atomic::AtomicU64,
}

impl FunctionProcess {
    /// Starts `binary` with the Lambda environment plus `env`. Its stdout and stderr (logs, EMF
    /// lines) go to `log` when given, else are discarded.
    pub async fn spawn(
        binary: &Path,
        name: &str,
        env: &[(String, String)],
        log: Option<&Path>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (sender, receiver) = mpsc::channel(16);
        let shared = Arc::new(Shared::new(name, receiver));
        *shared.async_sender.lock().await = Some(sender.clone());
        serve_runtime_api(listener, shared.clone());
        let log_file = open_log(log)?;
        let spawned_at = Instant::now();
        let mut child = start_binary(binary, name, env, addr)?;
        capture_output(&mut child, &shared, log_file);
        Ok(Self {
            name: name.to_owned(),
            child: Mutex::new(child),
            sender,
            shared,
            spawned_at,
            next_id: Default::default(),
        })
    }

    /// Process start → first `GET /next`: the cold start Lambda bills as init. Waits up to `limit`.
    pub async fn ready_after(&self, limit: Duration) -> Option<Duration> {
        let give_up = Instant::now() + limit;
        loop {
            if let Some(t) = *self.shared.first_next.lock().await {
                return Some(t - self.spawned_at);
            }
            if Instant::now() > give_up {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Invokes the function with `payload` and a deadline `timeout` away; returns its response or
    /// its error. A process that died (or never initialised) is an error too.
    pub async fn invoke(&self, payload: &Value, timeout: Duration) -> Outcome {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n);
        let deadline_ms = deadline_after(timeout);
        let (tx, rx) = oneshot::channel();
        self.shared.waiting.lock().await.insert(id.clone(), tx);
        let invocation = Invocation {
            id: id.clone(),
            payload: serde_json::to_vec(payload).unwrap(),
            deadline_ms,
        };
        if self.sender.send(invocation).await.is_err() {
            return Err(self.died("runtime closed").await);
        }
        // Lambda kills a function that overruns its timeout; give the process a little slack.
        let give_up = tokio::time::sleep(timeout + Duration::from_secs(5));
        tokio::pin!(give_up, rx);
        loop {
            tokio::select! {
                outcome = &mut rx => return outcome.unwrap_or_else(|_| Err(no_response())),
                _ = &mut give_up => return Err(FunctionError { error_type: "Sandbox.Timedout".into(), error_message: format!("{} timed out", self.name) }),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if let Ok(Some(status)) = self.child.lock().await.try_wait() {
                        let tail: Vec<String> = self.shared.tail.lock().unwrap().iter().cloned().collect();
                        return Err(FunctionError {
                            error_type: "Runtime.ExitError".into(),
                            error_message: format!("{} exited ({status}) before answering: {}", self.name, tail.join("\n")),
                        });
                    }
                }
            }
        }
    }

    async fn died(&self, what: &str) -> FunctionError {
        let init = self.shared.init_error.lock().await.clone();
        FunctionError {
            error_type: "Runtime.ExitError".into(),
            error_message: init.unwrap_or_else(|| format!("{}: {what}", self.name)),
        }
    }

    /// The function process's id (for CPU and memory figures).
    pub async fn pid(&self) -> Option<u32> {
        self.child.lock().await.id()
    }

    /// Waits until every asynchronous invocation the function made of itself has finished;
    /// returns their outcomes so far.
    pub async fn wait_async(&self, limit: Duration) -> Vec<Outcome> {
        let give_up = Instant::now() + limit;
        while self
            .shared
            .async_pending
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
            && Instant::now() < give_up
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.shared.async_results.lock().unwrap().clone()
    }

    /// An init error the function reported (bad configuration), if any.
    pub async fn init_error(&self) -> Option<String> {
        self.shared.init_error.lock().await.clone()
    }

    /// Kills the process where it stands, as a crash or Lambda's timeout does.
    pub async fn kill(&self) {
        let _ = self.child.lock().await.kill().await;
    }

    pub async fn stop(self) {
        self.kill().await;
    }
}

impl Shared {
    /// The state of function `name`'s Runtime API, its invocations arriving on `queue`.
    fn new(name: &str, queue: mpsc::Receiver<Invocation>) -> Self {
        Self {
            queue: Mutex::new(queue),
            waiting: Mutex::new(HashMap::new()),
            first_next: Mutex::new(None),
            init_error: Mutex::new(None),
            function_name: name.to_owned(),
            tail: Default::default(),
            async_sender: Mutex::new(None),
            async_pending: Default::default(),
            async_results: Default::default(),
            next_async: Default::default(),
        }
    }

    /// Keeps `line` among the last twenty the process wrote.
    fn remember(&self, line: String) {
        let mut tail = self.tail.lock().unwrap();
        if tail.len() == 20 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// Answers the Runtime API on `listener`, each connection in a task of its own.
fn serve_runtime_api(listener: TcpListener, shared: Arc<Shared>) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, shared.clone()));
        }
    });
}

/// The file a function's output is appended to.
type LogFile = Arc<std::sync::Mutex<std::fs::File>>;

/// Opens `log` for appending (created if missing), when given.
fn open_log(log: Option<&Path>) -> std::io::Result<Option<LogFile>> {
    match log {
        Some(path) => Ok(Some(Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        )))),
        None => Ok(None),
    }
}

/// Starts `binary` as Lambda starts a function: its variables, the Runtime API at `addr`, and
/// stdout and stderr piped.
fn start_binary(
    binary: &Path,
    name: &str,
    env: &[(String, String)],
    addr: SocketAddr,
) -> std::io::Result<Child> {
    Command::new(binary)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        // The same server answers the Lambda Invoke API, for functions that invoke themselves.
        .env("AWS_ENDPOINT_URL_LAMBDA", format!("http://{addr}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// Reads the process's stdout and stderr line by line: each line to the log file when there
/// is one, and the last lines kept for errors.
fn capture_output(child: &mut Child, shared: &Arc<Shared>, log_file: Option<LogFile>) {
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>);
    for stream in [stdout, stderr].into_iter().flatten() {
        let (shared, log_file) = (shared.clone(), log_file.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(file) = &log_file {
                    use std::io::Write;
                    let _ = writeln!(file.lock().unwrap(), "{line}");
                }
                shared.remember(line);
            }
        });
    }
}

/// Lambda's deadline for an invocation `timeout` from now, in milliseconds since the epoch.
fn deadline_after(timeout: Duration) -> u64 {
    (SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + timeout).as_millis() as u64
}

/// The error of an invocation the function never answered.
fn no_response() -> FunctionError {
    FunctionError {
        error_type: "Runtime.ExitError".into(),
        error_message: "no response".into(),
    }
}

/// The error a function posted (`errorType`, `errorMessage`); `default_type` when it names
/// no type.
fn reported_error(body: &[u8], default_type: &str) -> FunctionError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    FunctionError {
        error_type: v["errorType"].as_str().unwrap_or(default_type).to_owned(),
        error_message: v["errorMessage"].as_str().unwrap_or_default().to_owned(),
    }
}

/// Serves one connection of the Runtime API (keep-alive: several requests in turn).
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    serve_connection(stream, move |request| {
        let shared = shared.clone();
        async move { route(&request.method, &request.path, request.body, &shared).await }
    })
    .await;
}

/// Records an asynchronous invocation's outcome and counts it done.
fn shared_results(shared: &Arc<Shared>) -> impl FnOnce(Outcome) + Send + 'static {
    let shared = shared.clone();
    move |outcome| {
        shared.async_results.lock().unwrap().push(outcome);
        shared
            .async_pending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Answers one request: the Runtime API's calls, and Lambda's Invoke API for a function that
/// invokes itself.
async fn route(method: &str, path: &str, body: Vec<u8>, shared: &Arc<Shared>) -> Response {
    let path = path.strip_prefix("/2018-06-01/runtime").unwrap_or(path);
    match (method, path) {
        ("GET", "/invocation/next") => next_invocation(shared).await,
        ("POST", p) if p.starts_with("/invocation/") => {
            record_outcome(&p["/invocation/".len()..], &body, shared).await
        }
        ("POST", p) if p.starts_with("/2015-03-31/functions/") && p.ends_with("/invocations") => {
            invoke_async(body, shared).await
        }
        ("POST", "/init/error") => {
            let text = reported_error(&body, "InitError").to_string();
            *shared.init_error.lock().await = Some(text);
            http_response(202, &[], b"{\"status\":\"OK\"}")
        }
        _ => http_response(404, &[], b"{\"errorMessage\":\"not found\"}"),
    }
}

/// `GET /invocation/next`: notes the first call (the end of init), then waits for the next
/// invocation and hands it over with Lambda's headers.
async fn next_invocation(shared: &Shared) -> Response {
    shared
        .first_next
        .lock()
        .await
        .get_or_insert_with(Instant::now);
    let next = shared.queue.lock().await.recv().await;
    match next {
        Some(inv) => {
            let headers = invocation_headers(&inv, &shared.function_name);
            http_response(200, &headers, &inv.payload)
        }
        None => http_response(500, &[], b"{}"),
    }
}

/// The headers `/next` answers with: request id, deadline, function ARN and trace id.
fn invocation_headers(inv: &Invocation, function_name: &str) -> [(&'static str, String); 4] {
    let arn = format!("arn:aws:lambda:ap-northeast-1:123456789012:function:{function_name}");
    [
        ("Lambda-Runtime-Aws-Request-Id", inv.id.clone()),
        ("Lambda-Runtime-Deadline-Ms", inv.deadline_ms.to_string()),
        ("Lambda-Runtime-Invoked-Function-Arn", arn),
        (
            "Lambda-Runtime-Trace-Id",
            format!(
                "Root=1-00000000-{}",
                inv.id.replace('-', "")[..24].to_owned()
            ),
        ),
    ]
}

/// `POST /invocation/{id}/response` or `/error`: hands the function's answer (`rest` is what
/// follows `/invocation/`) to the invocation waiting for it.
async fn record_outcome(rest: &str, body: &[u8], shared: &Shared) -> Response {
    let (id, kind) = rest.split_once('/').unwrap_or((rest, ""));
    let outcome = match kind {
        "response" => Ok(serde_json::from_slice(body).unwrap_or(Value::Null)),
        _ => Err(reported_error(body, "Unknown")),
    };
    if let Some(tx) = shared.waiting.lock().await.remove(id) {
        let _ = tx.send(outcome);
    }
    http_response(202, &[], b"{\"status\":\"OK\"}")
}

/// Lambda's Invoke API with InvocationType=Event: queues the invocation, answers 202 at once,
/// and records its outcome when the function answers.
async fn invoke_async(body: Vec<u8>, shared: &Arc<Shared>) -> Response {
    let n = shared
        .next_async
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let id = format!(
        "async-{:04}-4000-8000-{:012x}",
        std::process::id() % 10000,
        n
    );
    let deadline_ms = deadline_after(Duration::from_secs(300));
    let (tx, rx) = oneshot::channel();
    shared.waiting.lock().await.insert(id.clone(), tx);
    shared
        .async_pending
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let sender = shared.async_sender.lock().await.clone();
    if let Some(sender) = sender {
        let _ = sender
            .send(Invocation {
                id,
                payload: body,
                deadline_ms,
            })
            .await;
    }
    let results = shared_results(shared);
    tokio::spawn(async move {
        let outcome = rx.await.unwrap_or_else(|_| Err(no_response()));
        results(outcome);
    });
    http_response(
        202,
        &[("X-Amz-Executed-Version", "$LATEST".to_owned())],
        b"",
    )
}
