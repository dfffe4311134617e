//! A Lambda Runtime API on loopback: runs a function's real binary as Lambda would (the same
//! environment variables, the same `/next`, `/response` and `/error` calls) and invokes it.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::http::{http_response, read_request};

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
        let shared = Arc::new(Shared {
            queue: Mutex::new(receiver),
            waiting: Mutex::new(HashMap::new()),
            first_next: Mutex::new(None),
            init_error: Mutex::new(None),
            function_name: name.to_owned(),
            tail: Default::default(),
            async_sender: Mutex::new(None),
            async_pending: Default::default(),
            async_results: Default::default(),
            next_async: Default::default(),
        });
        *shared.async_sender.lock().await = Some(sender.clone());
        let server = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, server.clone()));
            }
        });

        let log_file = match log {
            Some(path) => Some(Arc::new(std::sync::Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ))),
            None => None,
        };
        let spawned_at = Instant::now();
        let child = Command::new(binary)
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
            .spawn()?;
        let mut child = child;
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
                    let mut tail = shared.tail.lock().unwrap();
                    if tail.len() == 20 {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
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
        let deadline_ms =
            (SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + timeout).as_millis() as u64;
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
                outcome = &mut rx => return outcome.unwrap_or_else(|_| Err(FunctionError { error_type: "Runtime.ExitError".into(), error_message: "no response".into() })),
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

/// Serves one connection of the Runtime API (keep-alive: several requests in turn).
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let Some(request) = read_request(&mut reader).await else {
            return;
        };
        let response = route(&request.method, &request.path, request.body, &shared).await;
        if write.write_all(&response).await.is_err() {
            return;
        }
    }
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

async fn route(method: &str, path: &str, body: Vec<u8>, shared: &Arc<Shared>) -> Vec<u8> {
    let path = path.strip_prefix("/2018-06-01/runtime").unwrap_or(path);
    match (method, path) {
        ("GET", "/invocation/next") => {
            shared
                .first_next
                .lock()
                .await
                .get_or_insert_with(Instant::now);
            let next = shared.queue.lock().await.recv().await;
            match next {
                Some(inv) => {
                    let arn = format!(
                        "arn:aws:lambda:ap-northeast-1:123456789012:function:{}",
                        shared.function_name
                    );
                    let headers = [
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
                    ];
                    http_response(200, &headers, &inv.payload)
                }
                None => http_response(500, &[], b"{}"),
            }
        }
        ("POST", p) if p.starts_with("/invocation/") => {
            let rest = &p["/invocation/".len()..];
            let (id, kind) = rest.split_once('/').unwrap_or((rest, ""));
            let outcome = match kind {
                "response" => Ok(serde_json::from_slice(&body).unwrap_or(Value::Null)),
                _ => {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    Err(FunctionError {
                        error_type: v["errorType"].as_str().unwrap_or("Unknown").to_owned(),
                        error_message: v["errorMessage"].as_str().unwrap_or_default().to_owned(),
                    })
                }
            };
            if let Some(tx) = shared.waiting.lock().await.remove(id) {
                let _ = tx.send(outcome);
            }
            http_response(202, &[], b"{\"status\":\"OK\"}")
        }
        ("POST", p) if p.starts_with("/2015-03-31/functions/") && p.ends_with("/invocations") => {
            // Lambda's Invoke API with InvocationType=Event: queue it, answer 202 at once.
            let n = shared
                .next_async
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let id = format!(
                "async-{:04}-4000-8000-{:012x}",
                std::process::id() % 10000,
                n
            );
            let deadline_ms = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
                + Duration::from_secs(300))
            .as_millis() as u64;
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
                let outcome = rx.await.unwrap_or_else(|_| {
                    Err(FunctionError {
                        error_type: "Runtime.ExitError".into(),
                        error_message: "no response".into(),
                    })
                });
                results(outcome);
            });
            http_response(
                202,
                &[("X-Amz-Executed-Version", "$LATEST".to_owned())],
                b"",
            )
        }
        ("POST", "/init/error") => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let text = format!(
                "{}: {}",
                v["errorType"].as_str().unwrap_or("InitError"),
                v["errorMessage"].as_str().unwrap_or_default()
            );
            *shared.init_error.lock().await = Some(text);
            http_response(202, &[], b"{\"status\":\"OK\"}")
        }
        _ => http_response(404, &[], b"{\"errorMessage\":\"not found\"}"),
    }
}
