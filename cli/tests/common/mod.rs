//! Faults made real on loopback for the probe's tests: a mock Elasticsearch (plain or TLS),
//! certificates made with the `openssl` CLI, a listener that never accepts, and probe
//! dependencies built from literal settings.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sakuin::config::{Env, ProbeConfig};
use sakuin::probe::{AwsClients, ProbeDeps};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

pub const REGION: &str = "ap-northeast-1";

/// AWS clients for a given endpoint (moto, the Bedrock stand-in) or, with `None`, for a closed
/// loopback port: tests that only check Elasticsearch never call them.
pub async fn aws_clients(moto: Option<&str>, bedrock: Option<&str>) -> AwsClients {
    let conf = |endpoint: String| async move {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(endpoint)
            .load()
            .await
    };
    let closed = "http://127.0.0.1:9".to_owned();
    let moto_conf = conf(moto.map(str::to_owned).unwrap_or_else(|| closed.clone())).await;
    let bedrock_conf = conf(bedrock.map(str::to_owned).unwrap_or(closed)).await;
    let mut env = Env::from_map(HashMap::from([(
        "S3_FORCE_PATH_STYLE".to_owned(),
        "true".to_owned(),
    )]));
    let mut clients = AwsClients::from_sdk(&moto_conf, &mut env);
    clients.bedrock = sakuin::aws::bedrock_client(&bedrock_conf);
    clients
}

/// A probe configuration from literal variables.
pub fn config(vars: &[(&str, &str)]) -> ProbeConfig {
    let map = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ProbeConfig::from_env(&mut Env::from_map(map)).expect("valid probe configuration")
}

/// Dependencies for Elasticsearch-only checks.
pub async fn es_deps(vars: &[(&str, &str)]) -> ProbeDeps {
    ProbeDeps::new(config(vars), aws_clients(None, None).await)
}

/// A canned Elasticsearch answer: (status, JSON body).
pub type Responder = Arc<dyn Fn(&str, &str, &str) -> (u16, String) + Send + Sync>;

/// A loopback HTTP server answering each request with the responder's canned answer; TLS when
/// given an acceptor. Stops when dropped.
pub struct MockServer {
    pub addr: SocketAddr,
    /// (method, path with query, body) of every request.
    pub requests: Arc<Mutex<Vec<(String, String, String)>>>,
    task: JoinHandle<()>,
}

impl MockServer {
    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    pub fn paths(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(responder: Responder, tls: Option<tokio_rustls::TlsAcceptor>) -> MockServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (responder, log, tls) = (responder.clone(), log.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(Ok(s)) =
                            tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream))
                                .await
                        {
                            answer(s, &*responder, &log).await;
                        }
                    }
                    None => answer(stream, &*responder, &log).await,
                }
            });
        }
    });
    MockServer {
        addr,
        requests,
        task,
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    responder: &(dyn Fn(&str, &str, &str) -> (u16, String) + Send + Sync),
    log: &Mutex<Vec<(String, String, String)>>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        // Not HTTP (a TLS ClientHello, say): answer 400 and close, as Elasticsearch does.
        if buf.first().is_some_and(|b| !b.is_ascii_uppercase()) {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            let _ = stream.shutdown().await;
            return;
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let (method, path) = (
        first.next().unwrap_or("").to_owned(),
        first.next().unwrap_or("").to_owned(),
    );
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    log.lock()
        .unwrap()
        .push((method.clone(), path.clone(), body.clone()));
    let (status, text) = responder(&method, &path, &body);
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nx-elastic-product: Elasticsearch\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// How the mock cluster behaves.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// `Some(status)` answers every request with that status and a security exception.
    pub auth_status: Option<u16>,
    /// green, yellow, red, or "forbidden" (403 on cluster health).
    pub health: &'static str,
    /// `dims` of the `embedding` field; `None` = the index does not exist.
    pub dims: Option<u64>,
    pub count: u64,
    pub index: &'static str,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            auth_status: None,
            health: "green",
            dims: Some(1024),
            count: 42,
            index: "documents",
        }
    }
}

fn security_error(status: u16, reason: &str) -> (u16, String) {
    (
        status,
        json!({"error": {"type": "security_exception", "reason": reason}, "status": status})
            .to_string(),
    )
}

impl Cluster {
    pub fn responder(self) -> Responder {
        Arc::new(move |method, path, _body| {
            let route = path.split('?').next().unwrap_or(path);
            if let Some(status) = self.auth_status {
                return security_error(
                    status,
                    "unable to authenticate user [probe] for REST request [/]",
                );
            }
            let index = self.index;
            match (method, route) {
                ("GET", "/") => (200, json!({"name": "es-1", "cluster_name": "onprem", "version": {"number": "8.15.0"}, "tagline": "You Know, for Search"}).to_string()),
                ("GET", "/_security/_authenticate") => (200, json!({"username": "probe", "roles": ["sakuin_probe"], "authentication_type": "realm"}).to_string()),
                ("GET", "/_cluster/health") => match self.health {
                    "forbidden" => security_error(403, "action [cluster:monitor/health] is unauthorized for user [probe] with effective roles [sakuin_writer], this action is granted by the cluster privileges [monitor,manage,all]"),
                    "red" => (200, json!({"status": "red", "cluster_name": "onprem", "number_of_nodes": 2, "unassigned_shards": 3, "unassigned_primary_shards": 1,
                                          "indices": {index: {"status": "red"}, "logs-1": {"status": "green"}}}).to_string()),
                    status => (200, json!({"status": status, "number_of_nodes": 3, "unassigned_shards": 0, "indices": {index: {"status": status}}}).to_string()),
                },
                ("POST", "/_cluster/allocation/explain") => (200, json!({"index": index, "shard": 0, "primary": true, "current_state": "unassigned",
                    "unassigned_info": {"reason": "NODE_LEFT", "at": "2026-11-20T00:00:00Z"}, "can_allocate": "no_valid_shard_copy",
                    "allocate_explanation": "cannot allocate because a previous copy of the primary shard existed but can no longer be found on the nodes in the cluster"}).to_string()),
                ("GET", p) if p == format!("/{index}/_mapping") => match self.dims {
                    Some(d) => (200, json!({index: {"mappings": {"properties": {"embedding": {"type": "dense_vector", "dims": d, "similarity": "cosine", "index_options": {"type": "int8_hnsw"}}, "text": {"type": "text"}}}}}).to_string()),
                    None => (404, json!({"error": {"type": "index_not_found_exception", "reason": format!("no such index [{index}]")}, "status": 404}).to_string()),
                },
                ("GET", p) if p == format!("/{index}/_count") => (200, json!({"count": self.count}).to_string()),
                ("POST", p) if p == format!("/{index}/_search") => (200, json!({"hits": {"hits": [
                    {"_id": "a", "_score": 0.91, "_source": {"doc_id": "faq-1", "chunk_index": 0, "text": "パスワードを忘れた場合は\n再設定のリンクを使います。", "source": {"bucket": "b", "key": "faq/ja.jsonl"}}},
                    {"_id": "b", "_score": 0.5, "_source": {"doc_id": "faq-2", "chunk_index": 1, "text": "Export your data from the settings page.", "source": {"bucket": "b", "key": "faq/en.jsonl"}}}
                ]}}).to_string()),
                _ => (404, json!({"error": {"type": "not_found", "reason": format!("no route {method} {route}")}}).to_string()),
            }
        })
    }
}

/// A port that nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A listener whose accept queue is full and never drained: Linux drops further SYNs, so a new
/// connect hangs as it would behind a firewall that drops packets. Keep it alive while used.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _held: Vec<TcpStream>,
}

pub async fn blackhole() -> Blackhole {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    // Fill the accept queue until a connect stops completing.
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            _ => break,
        }
    }
    assert!(held.len() < 64, "the accept queue never filled");
    Blackhole {
        addr,
        _listener: listener,
        _held: held,
    }
}

/// Certificates for the TLS faults, made with the `openssl` CLI in a temporary directory.
pub struct Certs {
    pub dir: PathBuf,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    /// A CA, and leaf certificates for 127.0.0.1 signed by it: `good` (valid for 5 days),
    /// `wrong_host` (for es.other.example only), `expired` (2020), `not_yet` (from 2099), plus a
    /// `self_signed` one.
    pub fn make() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sakuin-probe-certs-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("newcerts")).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = d\n[d]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}/newcerts\nserial = {d}/serial\n\
                 certificate = {d}/ca.pem\nprivate_key = {d}/ca.key\ndefault_md = sha256\npolicy = p\nunique_subject = no\n\
                 [p]\ncommonName = supplied\n"
            ),
        )
        .unwrap();
        let leaf_ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
        std::fs::write(
            dir.join("local.ext"),
            format!("subjectAltName=IP:127.0.0.1,DNS:localhost\n{leaf_ext}"),
        )
        .unwrap();
        std::fs::write(
            dir.join("other.ext"),
            format!("subjectAltName=DNS:es.other.example,DNS:es2.other.example\n{leaf_ext}"),
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=Sakuin Test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&dir, &ca);
        let mut csr = vec!["req", "-new"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&dir, &csr);
        let sign = |out: &str, ext: &str, dates: &[&str]| {
            let mut args = vec![
                "ca", "-batch", "-notext", "-config", "ca.cnf", "-in", "leaf.csr", "-extfile", ext,
                "-out", out,
            ];
            args.extend(dates);
            openssl(&dir, &args);
        };
        sign("good.pem", "local.ext", &["-days", "5"]);
        // A client certificate the CA signed, and a stranger's (self-signed).
        std::fs::write(
            dir.join("client.ext"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        let mut client_csr = vec!["req", "-new"];
        client_csr.extend(ec);
        client_csr.extend([
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=sakuin-client",
        ]);
        openssl(&dir, &client_csr);
        openssl(
            &dir,
            &[
                "ca",
                "-batch",
                "-notext",
                "-config",
                "ca.cnf",
                "-in",
                "client.csr",
                "-extfile",
                "client.ext",
                "-out",
                "client.pem",
                "-days",
                "5",
            ],
        );
        let mut stranger = vec!["req", "-x509"];
        stranger.extend(ec);
        stranger.extend([
            "-keyout",
            "stranger.key",
            "-out",
            "stranger.pem",
            "-days",
            "5",
            "-subj",
            "/CN=stranger",
        ]);
        openssl(&dir, &stranger);
        sign("wrong_host.pem", "other.ext", &["-days", "30"]);
        sign(
            "expired.pem",
            "local.ext",
            &[
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20210101000000Z",
            ],
        );
        sign(
            "not_yet.pem",
            "local.ext",
            &[
                "-startdate",
                "20990101000000Z",
                "-enddate",
                "21000101000000Z",
            ],
        );
        // A self-signed server certificate (CA:FALSE), and the quick `req -x509` kind, which
        // is a CA certificate (CA:TRUE) used as the server's own.
        let mut self_csr = vec!["req", "-new"];
        self_csr.extend(ec);
        self_csr.extend([
            "-keyout",
            "self.key",
            "-out",
            "self.csr",
            "-subj",
            "/CN=es-self-signed",
        ]);
        openssl(&dir, &self_csr);
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "self.csr",
                "-signkey",
                "self.key",
                "-days",
                "30",
                "-extfile",
                "local.ext",
                "-out",
                "self_signed.pem",
            ],
        );
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-key",
                "self.key",
                "-out",
                "self_signed_ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=es-quick",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
            ],
        );
        Self { dir }
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca.pem")).unwrap()
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A TLS acceptor serving `good.pem` that requires a client certificate signed by the CA
    /// (`client_authentication: required`).
    pub fn acceptor_requiring_clients(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.dir.join("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.dir.join("good.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(self.dir.join("leaf.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// A TLS acceptor serving `cert` (a file in the directory) with its key.
    pub fn acceptor(&self, cert: &str) -> tokio_rustls::TlsAcceptor {
        let key = if cert.starts_with("self_signed") {
            "self.key"
        } else {
            "leaf.key"
        };
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.dir.join(cert))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(self.dir.join(key)).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// The check of that name in a report, or a panic listing what the report holds.
pub fn check<'a>(
    report: &'a sakuin::probe::ProbeReport,
    name: &str,
) -> &'a sakuin::probe::CheckResult {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{name} missing from {report:#?}"))
}

/// The last check of a report: where an Elasticsearch run stopped.
pub fn last(report: &sakuin::probe::ProbeReport) -> &sakuin::probe::CheckResult {
    report.checks.last().expect("a check ran")
}

pub fn as_json(report: &sakuin::probe::ProbeReport) -> Value {
    serde_json::to_value(report).unwrap()
}

/// Runs the `sakuin` binary with only `vars` (and PATH) in its environment: (exit status,
/// stdout, stderr).
pub fn sakuin_cli(args: Vec<String>, vars: Vec<(String, String)>) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sakuin"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .envs(vars)
        .output()
        .expect("the sakuin binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`sakuin_cli`] off the async runtime.
pub async fn run_cli(args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let args = args.iter().map(|s| s.to_string()).collect();
    let vars = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || sakuin_cli(args, vars))
        .await
        .unwrap()
}
