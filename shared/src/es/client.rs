//! A small Elasticsearch REST client over reqwest: auth, TLS with a private CA, timeouts, and
//! the handful of calls the functions make.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tracing::warn;

pub use super::auth::EsAuth;
use super::auth::{AuthFuture, Credentials};
use super::bulk::{BulkOutcome, parse_bulk_answer};
use super::document::{index_mapping, mapped_dimensions};
use crate::error::error_chain;
use crate::net::MssRelay;
use crate::retry::Deadline;

/// How to reach and authenticate to the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct EsSettings {
    pub host: String,
    pub port: u16,
    pub use_ssl: bool,
    pub verify_certs: bool,
    /// PEM text trusted besides the system roots.
    pub ca_cert_pem: Option<String>,
    pub auth: Option<EsAuth>,
    pub index: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// `ES_TCP_MSS`: every connection to the cluster sets this TCP maximum segment size before
    /// connecting, to pass a path-MTU blackhole until the network is fixed ([`crate::net`]).
    pub tcp_mss: Option<u32>,
    /// The client certificate offered to a cluster that asks for one.
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate (with any intermediates) and its private key, PEM, for clusters whose
/// HTTP layer requires one (`xpack.security.http.ssl.client_authentication: required`): from the
/// `ES_SECRET_ID` secret's `client_certificate` and `client_key`, or `ES_CLIENT_CERT` and
/// `ES_CLIENT_KEY`. The key is a [`Secret`]: never in a log, an error or `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub certificate_pem: String,
    pub key_pem: crate::secret::Secret,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field(
                "certificate_pem",
                &format!("{} bytes", self.certificate_pem.len()),
            )
            .field("key_pem", &self.key_pem)
            .finish()
    }
}

impl ClientIdentity {
    /// The certificates and the key, DER; the error names what is wrong, never the key.
    pub fn parse(
        &self,
    ) -> Result<
        (
            Vec<rustls::pki_types::CertificateDer<'static>>,
            rustls::pki_types::PrivateKeyDer<'static>,
        ),
        String,
    > {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> =
            rustls::pki_types::CertificateDer::pem_slice_iter(self.certificate_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("the client certificate is not PEM: {e}"))?;
        if certs.is_empty() {
            return Err("the client certificate holds no CERTIFICATE block".into());
        }
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.expose().as_bytes())
                .map_err(|_| {
                    "the client key is not a PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned()
                })?;
        Ok((certs, key))
    }
}

impl EsSettings {
    pub fn base_url(&self) -> String {
        let scheme = if self.use_ssl { "https" } else { "http" };
        // Bracket IPv6 literals so the port is not read as part of the address.
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EsError {
    /// The request never got an HTTP answer: DNS, connect, TLS or a timeout.
    #[error("Elasticsearch at {url} is unreachable: {detail}")]
    Unreachable {
        url: String,
        detail: String,
        timeout: bool,
    },
    /// The invocation's time ran out, not the cluster's: the request was not sent (too little
    /// time left to be worth it), or was cut short by the deadline before Elasticsearch
    /// answered (see [`within_deadline`]). The work waits for a fresh invocation.
    #[error("out of time for {what}: {detail}")]
    OutOfTime { what: String, detail: String },
    #[error("Elasticsearch answered {status} to {what}: {kind}: {reason}")]
    Status {
        what: String,
        status: u16,
        kind: String,
        reason: String,
    },
    #[error("Elasticsearch answer to {what} could not be read: {detail}")]
    Decode { what: String, detail: String },
    #[error(
        "index {index} maps `embedding` with {mapped} dimensions but {model} produces {wanted}; point \
         ES_INDEX at a new index (or an alias to one) for this model, switch the index to it without downtime \
         (`sakuin migrate start`), or set EMBEDDING_DIMENSIONS to {mapped} if the model offers it"
    )]
    DimensionMismatch {
        index: String,
        mapped: u64,
        wanted: usize,
        model: String,
    },
    #[error(
        "index {index} exists but `embedding` is not a dense_vector; point ES_INDEX at a new index"
    )]
    NoVectorField { index: String },
    #[error("the Elasticsearch client could not be built: {0}")]
    Setup(String),
    /// The cluster's release cannot do what the configuration asks (see `es::version`).
    #[error("{0}")]
    Unsupported(String),
}

impl EsError {
    /// Whether a later attempt may succeed: no answer, 429, or a 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            EsError::Unreachable { .. } | EsError::OutOfTime { .. } => true,
            EsError::Status { status, .. } => *status == 429 || *status >= 500,
            EsError::Decode { .. } => true,
            _ => false,
        }
    }
}

/// How the vectors of a new index are compared (`ES_SIMILARITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Similarity {
    #[default]
    Cosine,
    /// Needs unit-length vectors (Titan v2 normalises by default).
    DotProduct,
    L2Norm,
    /// From Elasticsearch 8.11.
    MaxInnerProduct,
}

impl Similarity {
    pub const ALL: [Similarity; 4] = [
        Similarity::Cosine,
        Similarity::DotProduct,
        Similarity::L2Norm,
        Similarity::MaxInnerProduct,
    ];

    /// The name Elasticsearch's mapping uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Similarity::Cosine => "cosine",
            Similarity::DotProduct => "dot_product",
            Similarity::L2Norm => "l2_norm",
            Similarity::MaxInnerProduct => "max_inner_product",
        }
    }
}

impl std::str::FromStr for Similarity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                format!("not one of {}", names.join(", "))
            })
    }
}

/// How a new index is laid out: how it stores and compares vectors, how it analyses text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorSettings {
    pub similarity: Similarity,
    /// `index_options.type`; `None`: the best the cluster's release takes
    /// ([`super::version::choose_index_type`]).
    pub index_type: Option<super::version::IndexType>,
    /// The analyzer of `text` (`ES_TEXT_ANALYZER`): a built-in one, or `kuromoji` /
    /// `icu_analyzer` where the cluster has the plugin.
    pub text_analyzer: String,
}

/// The plugin an analyzer needs, if any.
pub fn analyzer_plugin(analyzer: &str) -> Option<&'static str> {
    match analyzer {
        "kuromoji" => Some("analysis-kuromoji"),
        "icu_analyzer" => Some("analysis-icu"),
        _ => None,
    }
}

/// The cluster's answer to `_cluster/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    pub status: String,
    pub nodes: u64,
    pub unassigned_shards: u64,
}

/// A search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub score: f64,
    pub source: Value,
    /// The passage of `text` the words of a keyword search matched, with the matched terms
    /// between `«` and `»`, when the search asked for it.
    pub highlight: Option<String>,
}

impl Hit {
    /// The hits of a `_search` answer, in its order.
    pub fn all_of(answer: &Value) -> Vec<Hit> {
        answer["hits"]["hits"]
            .as_array()
            .map(|hits| {
                hits.iter()
                    .map(|h| Hit {
                        id: h["_id"].as_str().unwrap_or_default().to_owned(),
                        score: h["_score"].as_f64().unwrap_or(0.0),
                        source: h["_source"].clone(),
                        highlight: h["highlight"]["text"][0].as_str().map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct EsClient {
    http: reqwest::Client,
    /// Without a pool: the one retry after a pooled connection turned out dead.
    fresh: reqwest::Client,
    /// Those retries so far, shared by the clones (see [`EsClient::stale_connections`]).
    stale: Arc<AtomicU64>,
    base: String,
    /// The `Authorization` header, shared by every clone so a refresh after a 401 serves all.
    auth: Arc<Credentials>,
    /// With `ES_TCP_MSS`: the relay every connection goes through, shared by the clones.
    relay: Option<Arc<MssRelay>>,
    /// `ES_TIMEOUT_SECS`: the longest one request waits; shorter near a [`within_deadline`].
    timeout: Duration,
    pub index: String,
    /// The marker index, when not `<index>-sources` (see [`EsClient::with_markers`]).
    pub(crate) markers: Option<String>,
}

/// How long a pooled connection may sit idle (see [`EsClient::new`]).
pub const POOL_IDLE: Duration = Duration::from_secs(50);
/// Keepalive probes: the first after this long idle, then every interval, this many unanswered
/// before the connection is given up.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// Whether `e` is a connection that existed and died under the request, before the request's
/// own timeout (`budget`) could have run out: not a connect failure, not the cluster slow to
/// answer.
fn dead_connection(e: &reqwest::Error, elapsed: Duration, budget: Duration) -> bool {
    !e.is_connect() && !e.is_builder() && !e.is_status() && elapsed < budget.mul_f64(0.9)
}

tokio::task_local! {
    /// The deadline of the invocation the current task works for, if any.
    static REQUEST_DEADLINE: Deadline;
}

/// Runs `work` with every Elasticsearch request it makes bounded by `deadline`: each request's
/// timeout is `ES_TIMEOUT_SECS`, shortened to end a margin before the deadline
/// ([`Deadline::request_timeout`]); one with too little time left is not sent. Either way the
/// error is [`EsError::OutOfTime`], never "unreachable": the invocation ran out, not the
/// cluster.
///
/// A task-local rather than a parameter: the deadline belongs to the invocation, not to the
/// index, and this way every request the handler makes — through the `SearchIndex` seam or the
/// client's own helpers, today's and those added later — is bounded without threading a
/// deadline through each trait method, each fake index and each caller outside an invocation
/// (the probe, the command line, which set none and keep the plain timeout). It does not cross
/// `tokio::spawn`: a request made on a spawned task falls back to `ES_TIMEOUT_SECS`.
pub async fn within_deadline<F: std::future::Future>(deadline: Deadline, work: F) -> F::Output {
    REQUEST_DEADLINE.scope(deadline, work).await
}

impl std::fmt::Debug for EsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsClient")
            .field("base", &self.base)
            .field("index", &self.index)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl EsClient {
    pub fn new(settings: &EsSettings) -> Result<Self, EsError> {
        let relay = match settings.tcp_mss {
            Some(mss) => Some(Arc::new(Self::relay(settings, mss)?)),
            None => None,
        };
        let socket = relay.as_ref().map(|r| r.path().to_owned());
        let http = Self::http(settings, socket.as_deref(), true)?;
        let fresh = Self::http(settings, socket.as_deref(), false)?;
        Ok(Self {
            http,
            fresh,
            stale: Arc::new(AtomicU64::new(0)),
            base: settings.base_url(),
            auth: Arc::new(Credentials::new(settings.auth.as_ref())),
            relay,
            timeout: settings.timeout,
            index: settings.index.clone(),
            markers: None,
        })
    }

    /// The HTTP client: `pooled` keeps idle connections for reuse, the other opens a fresh
    /// connection for every request (the retry after a pooled one turned out dead).
    ///
    /// Connections that a NAT, firewall or VPN concentrator forgets while idle must not cost a
    /// request its whole timeout: keepalive probes every 15 s keep the path's state alive while
    /// the process runs; a pooled connection is closed after 50 s idle, below common cut-offs
    /// (a NAT gateway's 350 s, firewalls' 300–3,600 s); and data left unacknowledged for
    /// `ES_CONNECT_TIMEOUT_SECS` (`TCP_USER_TIMEOUT`) ends a connection the path has dropped
    /// (after a Lambda freeze, say) in seconds — data on a live path is acknowledged within a
    /// round trip, however long Elasticsearch takes to answer.
    fn http(
        settings: &EsSettings,
        socket: Option<&std::path::Path>,
        pooled: bool,
    ) -> Result<reqwest::Client, EsError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .pool_idle_timeout(POOL_IDLE)
            .tcp_keepalive(KEEPALIVE)
            .tcp_keepalive_interval(KEEPALIVE_INTERVAL)
            .tcp_keepalive_retries(KEEPALIVE_RETRIES)
            .tcp_user_timeout(settings.connect_timeout)
            .user_agent(concat!("sakuin/", env!("CARGO_PKG_VERSION")));
        if !pooled {
            builder = builder.pool_max_idle_per_host(0);
        }
        if let Some(pem) = &settings.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                EsError::Setup(format!("ES_CA_CERT is not a PEM certificate bundle: {e}"))
            })?;
            if certs.is_empty() {
                return Err(EsError::Setup("ES_CA_CERT holds no certificate".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        if settings.use_ssl && !settings.verify_certs {
            if pooled {
                warn!(
                    host = %settings.host,
                    "ES_VERIFY_CERTS=false: TLS certificates and host names are NOT verified; anyone on the path can \
                     read and change the traffic. Use ES_CA_CERT to trust a private CA instead."
                );
            }
            builder = builder
                .tls_danger_accept_invalid_certs(true)
                .tls_danger_accept_invalid_hostnames(true);
        }
        if let Some(identity) = &settings.client_identity {
            // Checked here so a bad PEM is named; reqwest's own error would not say which.
            identity.parse().map_err(EsError::Setup)?;
            let mut pem = identity.certificate_pem.clone();
            pem.push('\n');
            pem.push_str(identity.key_pem.expose());
            let identity = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|_| {
                EsError::Setup("the client certificate and key could not be used together".into())
            })?;
            builder = builder.identity(identity);
        }
        if let Some(path) = socket {
            builder = builder.unix_socket(path);
        }
        builder.build().map_err(|e| EsError::Setup(error_chain(&e)))
    }

    /// Requests retried on a fresh connection because the pooled one was dead (cut while idle
    /// by something on the path), since this client was made.
    pub fn stale_connections(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }

    fn relay(settings: &EsSettings, mss: u32) -> Result<MssRelay, EsError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EsError::Setup(
                "ES_TCP_MSS needs the client built inside the Tokio runtime".into(),
            ));
        }
        let host = settings.host.trim_matches(['[', ']']);
        MssRelay::start(host, settings.port, mss, settings.connect_timeout).map_err(|e| {
            EsError::Setup(format!(
                "ES_TCP_MSS={mss}: could not open the relay's socket in {}: {e}",
                std::env::temp_dir().display()
            ))
        })
    }

    /// `ES_TCP_MSS`, when the connections clamp their segment size.
    pub fn tcp_mss(&self) -> Option<u32> {
        self.relay.as_ref().map(|r| r.mss())
    }

    /// Re-read the credentials with `refresh` (the start-up code path, e.g. the secret named by
    /// `ES_SECRET_ID`) when Elasticsearch answers 401, at most once per `every` for this client
    /// and its later clones, and send the refused request again once with them. Set it before
    /// cloning the client.
    pub fn with_auth_refresh<F>(mut self, every: Duration, refresh: F) -> Self
    where
        F: Fn() -> AuthFuture + Send + Sync + 'static,
    {
        self.auth = Arc::new(self.auth.with_refresh(every, refresh));
        self
    }

    /// How long after one re-read of the credentials another 401 may trigger the next.
    pub const AUTH_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends one request; any HTTP answer comes back, only a missing answer is an error. A 401
    /// re-reads the credentials when a refresher is set (see [`EsClient::with_auth_refresh`])
    /// and sends the request once more when they changed; a second 401 is the answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> Result<(StatusCode, Vec<u8>), EsError> {
        let url = format!("{}{}", self.base, path);
        let what = format!("{method} {path}");
        let limit = self.time_limit(&what)?;
        let mut request = self.http.request(method, &url);
        let sent = self.auth.current();
        if let Some(auth) = &sent {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if let Some((bytes, content_type)) = body {
            request = request.header(CONTENT_TYPE, content_type).body(bytes);
        }
        let request = request.build().map_err(|e| self.unreachable(e))?;
        // The copy shares the body's bytes; it is kept only when a 401 can be answered.
        let again = if self.auth.can_refresh() {
            request.try_clone()
        } else {
            None
        };
        let (status, bytes) = self.execute(request, limit, &what).await?;
        if status == StatusCode::UNAUTHORIZED
            && let Some(mut again) = again
            && let Some(fresh) = self.auth.after_unauthorized(sent.as_ref()).await
        {
            again.headers_mut().insert(AUTHORIZATION, fresh);
            let limit = self.time_limit(&what)?;
            return self.execute(again, limit, &what).await;
        }
        Ok((status, bytes))
    }

    /// The timeout of a request about to start: `None` outside a [`within_deadline`] (the
    /// client's `ES_TIMEOUT_SECS` applies), else the time the deadline leaves it, or
    /// [`EsError::OutOfTime`] when that is too little to be worth sending.
    fn time_limit(&self, what: &str) -> Result<Option<Duration>, EsError> {
        let Ok(deadline) = REQUEST_DEADLINE.try_with(|d| *d) else {
            return Ok(None);
        };
        match deadline.request_timeout(self.timeout) {
            Some(limit) => Ok(Some(limit)),
            None => Err(EsError::OutOfTime {
                what: what.to_owned(),
                detail: format!(
                    "{} ms left in this invocation: not sent",
                    deadline.remaining().as_millis()
                ),
            }),
        }
    }

    /// Sends `request` with `limit` as its timeout when given; a timeout that the deadline made
    /// shorter than `ES_TIMEOUT_SECS` is the invocation's, not the cluster's.
    ///
    /// A request that fails on a connection that existed, before its own timeout (the socket
    /// gave up: reset, closed, or `TCP_USER_TIMEOUT` on data the path dropped), went out on a
    /// pooled connection something on the path had forgotten while it sat idle. It is sent
    /// once more at once on a fresh connection: every request sakuin makes is idempotent (reads,
    /// and writes by id under compare-and-set), so a request that did arrive the first time is
    /// answered as a conflict, which the callers already settle.
    async fn execute(
        &self,
        mut request: reqwest::Request,
        limit: Option<Duration>,
        what: &str,
    ) -> Result<(StatusCode, Vec<u8>), EsError> {
        if let Some(limit) = limit {
            *request.timeout_mut() = Some(limit);
        }
        let again = request.try_clone();
        let started = tokio::time::Instant::now();
        let first = Self::attempt(&self.http, request).await;
        let budget = limit.unwrap_or(self.timeout);
        let first = match (first, again) {
            (Err(e), Some(again)) if dead_connection(&e, started.elapsed(), budget) => {
                self.stale.fetch_add(1, Ordering::Relaxed);
                warn!(
                    request = %what,
                    after_ms = started.elapsed().as_millis() as u64,
                    error = %error_chain(&e),
                    "a pooled connection to Elasticsearch was dead (something on the path dropped it while idle: \
                     a NAT, firewall or VPN idle timeout); sent again on a fresh connection"
                );
                Self::attempt(&self.fresh, again).await
            }
            (first, _) => first,
        };
        first.map_err(|e| self.classify(e, limit, what))
    }

    async fn attempt(
        client: &reqwest::Client,
        request: reqwest::Request,
    ) -> Result<(StatusCode, Vec<u8>), reqwest::Error> {
        let response = client.execute(request).await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        Ok((status, bytes.to_vec()))
    }

    /// A failed request as the error callers see: out of the invocation's time when the
    /// deadline cut its timeout short, else the cluster unreachable.
    fn classify(&self, e: reqwest::Error, limit: Option<Duration>, what: &str) -> EsError {
        match limit.filter(|l| *l < self.timeout) {
            Some(limit) if e.is_timeout() => EsError::OutOfTime {
                what: what.to_owned(),
                detail: format!(
                    "no answer within the {} ms the invocation's deadline left (ES_TIMEOUT_SECS is {} s)",
                    limit.as_millis(),
                    self.timeout.as_secs()
                ),
            },
            _ => self.unreachable(e),
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> EsError {
        let mut detail = error_chain(&e);
        // Through the relay, the client sees only its Unix connection close; the reason is the
        // relay's TCP connect.
        if let Some(relay) = &self.relay
            && let Some(why) = relay.take_error()
        {
            detail = format!(
                "{why} (connecting with ES_TCP_MSS={}; the client saw: {detail})",
                relay.mss()
            );
        }
        EsError::Unreachable {
            url: self.base.clone(),
            timeout: e.is_timeout(),
            detail,
        }
    }

    /// Like `send`, but a non-2xx answer is an `EsError::Status` with Elasticsearch's reason.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
        what: &str,
    ) -> Result<Vec<u8>, EsError> {
        let (status, bytes) = self.send(method, path, body).await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(status_error(what, status, &bytes))
        }
    }

    /// [`Self::call`] with a JSON body.
    pub(super) async fn call_json(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        what: &str,
    ) -> Result<Vec<u8>, EsError> {
        let body = serde_json::to_vec(body).expect("a JSON value serialises");
        self.call(method, path, Some((body, "application/json")), what)
            .await
    }

    pub(super) fn json(what: &str, bytes: &[u8]) -> Result<Value, EsError> {
        serde_json::from_slice(bytes).map_err(|e| EsError::Decode {
            what: what.to_owned(),
            detail: e.to_string(),
        })
    }

    /// Creates the index with the chunk mapping when it is missing, and checks that an existing
    /// one holds vectors of the model's size. Safe to race with another container.
    pub async fn ensure_index(
        &self,
        dimensions: usize,
        vectors: &VectorSettings,
        model_id: &str,
    ) -> Result<(), EsError> {
        // Once per container: a release older than sakuin supports is a clear error, whether
        // the index exists or not.
        let version = self.version().await?;
        let index_type = super::version::choose_index_type(vectors.index_type, version)
            .map_err(EsError::Unsupported)?;
        let path = format!("/{}", encode_path(&self.index));
        let (status, _) = self.send(Method::HEAD, &path, None).await?;
        if status == StatusCode::NOT_FOUND {
            tracing::info!(index = %self.index, %version, %index_type, "creating the index");
            self.create_index(dimensions, vectors, index_type, model_id, None)
                .await?;
        } else if !status.is_success() {
            return Err(status_error(
                &format!("checking index {}", self.index),
                status,
                &[],
            ));
        }
        let mapping = self.mapping().await?;
        for (index, dims) in mapped_dimensions(&mapping) {
            match dims {
                Some(d) if d as usize == dimensions => {}
                Some(d) => {
                    return Err(EsError::DimensionMismatch {
                        index,
                        mapped: d,
                        wanted: dimensions,
                        model: model_id.to_owned(),
                    });
                }
                None => return Err(EsError::NoVectorField { index }),
            }
        }
        Ok(())
    }

    /// Creates `self.index`, a concrete index, with the chunk mapping and the model in its
    /// `_meta`, and `alias` as its alias when given (for the release's vector index type).
    pub(crate) async fn create_versioned_index(
        &self,
        dimensions: usize,
        vectors: &VectorSettings,
        model_id: &str,
        alias: Option<&str>,
    ) -> Result<(), EsError> {
        let version = self.version().await?;
        let index_type = super::version::choose_index_type(vectors.index_type, version)
            .map_err(EsError::Unsupported)?;
        self.create_index(dimensions, vectors, index_type, model_id, alias)
            .await
    }

    /// Creates the index with the chunk mapping; another container creating it first is fine,
    /// a missing analyzer plugin is named.
    async fn create_index(
        &self,
        dimensions: usize,
        vectors: &VectorSettings,
        index_type: super::version::IndexType,
        model_id: &str,
        alias: Option<&str>,
    ) -> Result<(), EsError> {
        let path = format!("/{}", encode_path(&self.index));
        let analyzer = &vectors.text_analyzer;
        let mut mapping = index_mapping(
            dimensions,
            vectors.similarity.as_str(),
            index_type.as_str(),
            analyzer,
        );
        mapping["mappings"]["_meta"] = super::migration::created_meta(model_id, dimensions);
        if let Some(alias) = alias {
            mapping["aliases"] = json!({ alias: {} });
        }
        let body = serde_json::to_vec(&mapping).expect("mapping serialises");
        let (status, bytes) = self
            .send(Method::PUT, &path, Some((body, "application/json")))
            .await?;
        let text = String::from_utf8_lossy(&bytes);
        let lost_race =
            status == StatusCode::BAD_REQUEST && text.contains("resource_already_exists_exception");
        if let Some(plugin) = analyzer_plugin(analyzer)
            && status == StatusCode::BAD_REQUEST
            && text.contains(&format!("analyzer [{analyzer}]"))
        {
            return Err(EsError::Unsupported(format!(
                "ES_TEXT_ANALYZER={analyzer} needs the {plugin} plugin on every node of the cluster \
                 (bin/elasticsearch-plugin install {plugin}), or choose cjk (built in)"
            )));
        }
        if !status.is_success() && !lost_race {
            let what = format!("creating index {}", self.index);
            return Err(status_error(&what, status, &bytes));
        }
        Ok(())
    }

    /// The cluster's release (`GET /`). OpenSearch, which answers the same request, is named as
    /// such: its vector fields are another type.
    pub async fn version(&self) -> Result<super::version::Version, EsError> {
        let what = "GET / (the cluster's version)";
        let bytes = self.call(Method::GET, "/", None, what).await?;
        let root = Self::json(what, &bytes)?;
        if root
            .pointer("/version/distribution")
            .and_then(Value::as_str)
            == Some("opensearch")
        {
            return Err(EsError::Unsupported(
                "the cluster is OpenSearch, not Elasticsearch: sakuin writes Elasticsearch's dense_vector and knn".into(),
            ));
        }
        let number = root
            .pointer("/version/number")
            .and_then(Value::as_str)
            .unwrap_or_default();
        super::version::Version::parse(number).ok_or_else(|| EsError::Decode {
            what: what.into(),
            detail: format!("no version number in the answer ({number:?})"),
        })
    }

    /// `GET <index>/_mapping`, keyed by concrete index (an alias may name several).
    /// Whether the cluster knows `analyzer` (`POST /_analyze` with it): a plugin's analyzer is
    /// missing where the plugin is not installed ("failed to find global analyzer").
    pub async fn has_analyzer(&self, analyzer: &str) -> Result<bool, EsError> {
        let body = serde_json::to_vec(&json!({"analyzer": analyzer, "text": "東京 search"}))
            .expect("a small JSON body");
        let (status, bytes) = self
            .send(Method::POST, "/_analyze", Some((body, "application/json")))
            .await?;
        if status.is_success() {
            return Ok(true);
        }
        let missing = status == StatusCode::BAD_REQUEST
            && String::from_utf8_lossy(&bytes).contains(&format!("analyzer [{analyzer}]"));
        if missing {
            Ok(false)
        } else {
            Err(status_error(
                &format!("asking for the {analyzer} analyzer"),
                status,
                &bytes,
            ))
        }
    }

    pub async fn mapping(&self) -> Result<Value, EsError> {
        let what = format!("reading the mapping of {}", self.index);
        let bytes = self
            .call(
                Method::GET,
                &format!("/{}/_mapping", encode_path(&self.index)),
                None,
                &what,
            )
            .await?;
        Self::json(&what, &bytes)
    }

    /// Sends a `_bulk` body of `actions` actions and reads every item.
    pub async fn bulk(&self, body: Vec<u8>, actions: usize) -> Result<BulkOutcome, EsError> {
        let bytes = self
            .call(
                Method::POST,
                "/_bulk",
                Some((body, "application/x-ndjson")),
                "_bulk",
            )
            .await?;
        parse_bulk_answer(&bytes, actions).map_err(|detail| EsError::Decode {
            what: "_bulk".into(),
            detail,
        })
    }

    /// `GET /_cluster/health`.
    pub async fn cluster_health(&self) -> Result<ClusterHealth, EsError> {
        let what = "_cluster/health";
        let bytes = self
            .call(Method::GET, "/_cluster/health", None, what)
            .await?;
        let v = Self::json(what, &bytes)?;
        Ok(ClusterHealth {
            status: v["status"].as_str().unwrap_or("unknown").to_owned(),
            nodes: v["number_of_nodes"].as_u64().unwrap_or(0),
            unassigned_shards: v["unassigned_shards"].as_u64().unwrap_or(0),
        })
    }

    /// `_delete_by_query` on the chunk index; returns how many chunks it deleted. A 200 answer
    /// that stopped part-way (`failures`, `timed_out`) is an error: see
    /// [`delete_by_query_outcome`].
    pub async fn delete_by_query(&self, query: &Value) -> Result<u64, EsError> {
        let what = format!("_delete_by_query on {}", self.index);
        let path = format!(
            "/{}/_delete_by_query?conflicts=proceed",
            encode_path(&self.index)
        );
        let body = serde_json::to_vec(&json!({ "query": query })).expect("query serialises");
        let bytes = self
            .call(Method::POST, &path, Some((body, "application/json")), &what)
            .await?;
        delete_by_query_outcome(&what, &Self::json(&what, &bytes)?)
    }

    /// Documents in the index.
    pub async fn count(&self) -> Result<u64, EsError> {
        let what = format!("counting {}", self.index);
        let bytes = self
            .call(
                Method::GET,
                &format!("/{}/_count", encode_path(&self.index)),
                None,
                &what,
            )
            .await?;
        Ok(Self::json(&what, &bytes)?["count"].as_u64().unwrap_or(0))
    }

    /// Makes recent writes visible to search (tests and the demo; the pipeline never waits).
    pub async fn refresh(&self) -> Result<(), EsError> {
        let what = format!("refreshing {}", self.index);
        self.call(
            Method::POST,
            &format!("/{}/_refresh", encode_path(&self.index)),
            None,
            &what,
        )
        .await?;
        Ok(())
    }

    /// Runs a search body against the index.
    pub async fn search(&self, body: &Value) -> Result<Value, EsError> {
        let what = format!("searching {}", self.index);
        let bytes = serde_json::to_vec(body).expect("query serialises");
        let answer = self
            .call(
                Method::POST,
                &format!("/{}/_search", encode_path(&self.index)),
                Some((bytes, "application/json")),
                &what,
            )
            .await?;
        Self::json(&what, &answer)
    }

    /// Top-`k` chunks nearest to `vector`.
    pub async fn knn(&self, vector: &[f32], k: usize) -> Result<Vec<Hit>, EsError> {
        let body = json!({
            "knn": {"field": "embedding", "query_vector": vector, "k": k, "num_candidates": (k * 10).max(50)},
            "_source": ["doc_id", "chunk_index", "text", "source", "metadata", "citation"],
            "size": k
        });
        Ok(Hit::all_of(&self.search(&body).await?))
    }
}

/// Reads a 200 answer to `_delete_by_query`: the number deleted, or the reason it stopped
/// part-way. Elasticsearch aborts at the first unrecoverable batch and still answers 200, with
/// `failures` (bulk failures with `cause` and `status`, search failures with `reason` and
/// `status`) or `timed_out: true`; either way some matching documents are left, so the caller
/// must not take the delete as done. `version_conflicts` are expected with `conflicts=proceed`
/// (a chunk rewritten meanwhile) and are not a failure.
/// <https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-delete-by-query.html#docs-delete-by-query-api-response-body>
///
/// A failure becomes `EsError::Status` with that failure's own status (429 and 5xx are
/// retryable, a 4xx is not; none given counts as 500); a timeout becomes a retryable 504.
pub fn delete_by_query_outcome(what: &str, answer: &Value) -> Result<u64, EsError> {
    let deleted = answer["deleted"].as_u64().unwrap_or(0);
    let total = answer["total"].as_u64();
    let progress = match total {
        Some(total) => format!("{deleted} of {total} deleted before it stopped"),
        None => format!("{deleted} deleted before it stopped"),
    };
    if let Some(first) = answer["failures"].as_array().and_then(|f| f.first()) {
        let count = answer["failures"].as_array().map_or(0, Vec::len);
        // Bulk failures name their cause in `cause`, search (shard) failures in `reason`.
        let cause = first
            .get("cause")
            .filter(|c| c.is_object())
            .or_else(|| first.get("reason").filter(|r| r.is_object()));
        let kind = cause
            .and_then(|c| c["type"].as_str())
            .unwrap_or("failure")
            .to_owned();
        let reason = cause
            .and_then(|c| c["reason"].as_str())
            .or_else(|| first["reason"].as_str())
            .unwrap_or("no reason given");
        let place = failure_place(first);
        return Err(EsError::Status {
            what: what.to_owned(),
            status: first["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(500),
            kind,
            reason: format!("{reason}{place}; {count} failure(s) in a 200 answer, {progress}"),
        });
    }
    if answer["timed_out"].as_bool() == Some(true) {
        return Err(EsError::Status {
            what: what.to_owned(),
            status: 504,
            kind: "timed_out".into(),
            reason: format!("timed_out: true in a 200 answer, {progress}"),
        });
    }
    Ok(deleted)
}

/// Where a `_delete_by_query` failure happened, as " (index i, id d, shard 0, node n)"; empty
/// when the failure does not say.
fn failure_place(failure: &Value) -> String {
    let place: Vec<String> = ["index", "id", "shard", "node"]
        .into_iter()
        .filter_map(|field| match &failure[field] {
            Value::String(v) => Some(format!("{field} {v}")),
            Value::Number(v) => Some(format!("{field} {v}")),
            _ => None,
        })
        .collect();
    if place.is_empty() {
        String::new()
    } else {
        format!(" ({})", place.join(", "))
    }
}

#[cfg(test)]
mod delete_by_query_tests {
    use super::*;

    const WHAT: &str = "_delete_by_query on documents";

    #[test]
    fn a_clean_answer_counts_what_it_deleted_and_conflicts_are_fine() {
        let answer = json!({"took": 147, "timed_out": false, "total": 12, "deleted": 9, "batches": 1,
            "version_conflicts": 3, "noops": 0, "retries": {"bulk": 0, "search": 0},
            "throttled_millis": 0, "requests_per_second": -1.0, "throttled_until_millis": 0, "failures": []});
        assert_eq!(delete_by_query_outcome(WHAT, &answer).unwrap(), 9);
        assert_eq!(
            delete_by_query_outcome(WHAT, &json!({"deleted": 0})).unwrap(),
            0
        );
    }

    #[test]
    fn a_bulk_failure_names_its_cause_and_keeps_its_status() {
        let answer = json!({"took": 30, "timed_out": false, "total": 40, "deleted": 10, "batches": 1,
        "version_conflicts": 0, "failures": [
            {"index": "documents", "id": "c-17", "cause": {"type": "es_rejected_execution_exception",
             "reason": "rejected execution of coordinating operation"}, "status": 429},
            {"index": "documents", "id": "c-18", "cause": {"type": "es_rejected_execution_exception",
             "reason": "rejected execution of coordinating operation"}, "status": 429}
        ]});
        let err = delete_by_query_outcome(WHAT, &answer).unwrap_err();
        let text = err.to_string();
        for needle in [
            "429",
            "es_rejected_execution_exception",
            "rejected execution of coordinating operation",
            "id c-17",
            "2 failure(s)",
            "10 of 40 deleted",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
        assert!(err.is_retryable());

        let forbidden = json!({"deleted": 0, "total": 3, "failures": [{"index": "documents", "id": "c-1",
            "cause": {"type": "security_exception", "reason": "action [indices:data/write/bulk[s]] is unauthorized"},
            "status": 403}]});
        let err = delete_by_query_outcome(WHAT, &forbidden).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("security_exception"), "{err}");
    }

    #[test]
    fn a_search_failure_names_its_shard_and_reason() {
        let answer = json!({"timed_out": false, "total": 0, "deleted": 0, "failures": [
            {"index": "documents", "shard": 2, "node": "n1", "status": 503,
             "reason": {"type": "no_shard_available_action_exception", "reason": "No shard available for [documents][2]"}}
        ]});
        let err = delete_by_query_outcome(WHAT, &answer).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("no_shard_available_action_exception")
                && text.contains("shard 2")
                && text.contains("503"),
            "{text}"
        );
        assert!(err.is_retryable());
        // No status given: taken as a server-side failure, so retried.
        let bare = json!({"deleted": 0, "failures": [{"reason": {"type": "node_disconnected_exception", "reason": "gone"}}]});
        assert!(
            delete_by_query_outcome(WHAT, &bare)
                .unwrap_err()
                .is_retryable()
        );
    }

    #[test]
    fn a_timeout_is_retryable() {
        let answer =
            json!({"took": 60001, "timed_out": true, "total": 500, "deleted": 120, "failures": []});
        let err = delete_by_query_outcome(WHAT, &answer).unwrap_err();
        assert!(err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains("timed_out") && text.contains("120 of 500"),
            "{text}"
        );
    }
}

/// Builds an `EsError::Status` from Elasticsearch's error body (`{"error":{"type","reason"}}`).
pub(super) fn status_error(what: &str, status: StatusCode, body: &[u8]) -> EsError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let (kind, reason) = match parsed.as_ref().map(|v| &v["error"]) {
        Some(Value::Object(e)) => (
            e.get("type")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_owned(),
            e.get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        ),
        Some(Value::String(s)) => ("error".to_owned(), s.clone()),
        _ => {
            let text = String::from_utf8_lossy(body);
            ("http".to_owned(), text.chars().take(200).collect())
        }
    };
    EsError::Status {
        what: what.to_owned(),
        status: status.as_u16(),
        kind,
        reason,
    }
}

/// Index names cannot hold most reserved characters; percent-encode the few that may appear in
/// an alias or pattern so they stay one path segment.
pub(crate) fn encode_path(name: &str) -> String {
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    const SEGMENT: &AsciiSet = &CONTROLS.add(b' ').add(b'/').add(b'?').add(b'#').add(b'%');
    utf8_percent_encode(name, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn settings() -> EsSettings {
        EsSettings {
            tcp_mss: None,
            host: "es.internal".into(),
            port: 9200,
            use_ssl: true,
            verify_certs: true,
            ca_cert_pem: None,
            auth: Some(EsAuth::Basic {
                username: "elastic".into(),
                password: Secret::new("s3cr3t-pass"),
            }),
            index: "documents".into(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            client_identity: None,
        }
    }

    #[test]
    fn urls_and_ipv6() {
        assert_eq!(settings().base_url(), "https://es.internal:9200");
        let v6 = EsSettings {
            host: "fd00::10".into(),
            use_ssl: false,
            ..settings()
        };
        assert_eq!(v6.base_url(), "http://[fd00::10]:9200");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = settings();
        let client = EsClient::new(&s).unwrap();
        for text in [
            format!("{s:?}"),
            format!("{client:?}"),
            format!("{:?}", client.auth),
        ] {
            assert!(!text.contains("s3cr3t-pass"), "{text}");
            assert!(
                !text.contains(&base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    b"elastic:s3cr3t-pass"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn a_bad_ca_bundle_is_a_setup_error() {
        let s = EsSettings {
            ca_cert_pem: Some("not a pem".into()),
            ..settings()
        };
        let err = EsClient::new(&s).unwrap_err();
        assert!(err.to_string().contains("ES_CA_CERT"), "{err}");
    }

    #[test]
    fn status_errors_carry_the_elasticsearch_reason() {
        let body = br#"{"error":{"type":"security_exception","reason":"action [cluster:monitor/health] is unauthorized"},"status":403}"#;
        let err = status_error("_cluster/health", StatusCode::FORBIDDEN, body);
        let text = err.to_string();
        assert!(
            text.contains("403")
                && text.contains("security_exception")
                && text.contains("unauthorized"),
            "{text}"
        );
        assert!(!err.is_retryable());
        assert!(status_error("_bulk", StatusCode::TOO_MANY_REQUESTS, b"").is_retryable());
        assert!(status_error("_bulk", StatusCode::BAD_GATEWAY, b"<html>").is_retryable());
    }

    /// A cluster that accepts connections and never answers. Inside an invocation's deadline a
    /// request is cut short (or not sent) and is out of time; outside one it waits
    /// `ES_TIMEOUT_SECS` and the cluster is unreachable.
    #[tokio::test]
    async fn a_request_cut_short_by_the_deadline_is_out_of_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let silent = EsSettings {
            host: "127.0.0.1".into(),
            port,
            use_ssl: false,
            auth: None,
            timeout: Duration::from_secs(30),
            ..settings()
        };
        let client = EsClient::new(&silent).unwrap();

        let err = within_deadline(Deadline::after(Duration::from_secs(1)), client.refresh())
            .await
            .unwrap_err();
        assert!(matches!(err, EsError::OutOfTime { .. }), "{err}");
        assert!(err.to_string().contains("not sent"), "{err}");

        let started = std::time::Instant::now();
        let err = within_deadline(
            Deadline::after(Duration::from_millis(5500)),
            client.refresh(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, EsError::OutOfTime { .. }), "{err}");
        assert!(err.is_retryable() && err.to_string().contains("ES_TIMEOUT_SECS is 30 s"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "cut to 3.5 s, not 30"
        );

        let plain = EsClient::new(&EsSettings {
            timeout: Duration::from_secs(1),
            ..silent
        })
        .unwrap();
        let err = plain.refresh().await.unwrap_err();
        assert!(
            matches!(err, EsError::Unreachable { timeout: true, .. }),
            "{err}"
        );
        held.abort();
    }
}
