//! Configuration from environment variables, validated once at start-up: every problem is
//! reported at once, each naming its variable; secrets are wrapped before anything can print them.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use crate::chunker::ChunkSettings;
use crate::embed::EmbeddingModel;
use crate::es::version::IndexType;
use crate::es::{EsAuth, EsSettings, VectorSettings};
use crate::record::FieldSelection;
use crate::secret::Secret;

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Reads variables, collecting problems instead of stopping at the first.
pub struct Env {
    vars: HashMap<String, String>,
    problems: Vec<String>,
}

impl Env {
    pub fn from_process() -> Self {
        Self::from_map(std::env::vars().collect())
    }

    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Self {
            vars,
            problems: Vec::new(),
        }
    }

    /// A variable's value; empty counts as unset (SAM declares unused variables as "").
    pub fn get(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        // Secrets are not trimmed: a trailing space could be part of a password.
        self.vars
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| Secret::new(v.clone()))
    }

    pub fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }

    pub fn required(&mut self, name: &str, meaning: &str) -> String {
        self.get(name).unwrap_or_else(|| {
            self.problem(format!("{name} is required ({meaning})"));
            String::new()
        })
    }

    pub fn parse<T: FromStr>(&mut self, name: &str, default: T) -> T
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|e| {
                self.problem(format!("{name}={v:?} is not valid: {e}"));
                default
            }),
        }
    }

    pub fn optional<T: FromStr>(&mut self, name: &str) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.get(name)?;
        match v.parse() {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                self.problem(format!("{name}={v:?} is not valid: {e}"));
                None
            }
        }
    }

    pub fn flag(&mut self, name: &str, default: bool) -> bool {
        match self.get(name).map(|v| v.to_ascii_lowercase()) {
            None => default,
            Some(v) if ["true", "1", "yes", "on"].contains(&v.as_str()) => true,
            Some(v) if ["false", "0", "no", "off"].contains(&v.as_str()) => false,
            Some(v) => {
                self.problem(format!("{name}={v:?} is not true or false"));
                default
            }
        }
    }

    /// `ES_TEXT_ANALYZER`: the analyzer of `text` in a new index (default `cjk`).
    pub fn text_analyzer(&mut self) -> String {
        let analyzer = self.get("ES_TEXT_ANALYZER").unwrap_or_else(|| "cjk".into());
        if !TEXT_ANALYZERS.contains(&analyzer.as_str()) {
            self.problem(format!(
                "ES_TEXT_ANALYZER={analyzer:?} is not one of {}",
                TEXT_ANALYZERS.join(", ")
            ));
        }
        analyzer
    }

    pub fn list(&self, name: &str, default: &str) -> Vec<String> {
        self.get(name)
            .unwrap_or_else(|| default.to_owned())
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Fails with every problem recorded so far.
    pub fn check(&mut self) -> Result<(), ConfigError> {
        let problems = std::mem::take(&mut self.problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// `EMBEDDING_MODEL_ID` and `EMBEDDING_DIMENSIONS`.
    pub fn model(&mut self) -> Option<EmbeddingModel> {
        let id = self
            .get("EMBEDDING_MODEL_ID")
            .unwrap_or_else(|| "amazon.titan-embed-text-v2:0".into());
        let dims = self.optional::<usize>("EMBEDDING_DIMENSIONS");
        match EmbeddingModel::resolve(&id, dims) {
            Ok(m) => Some(m),
            Err(e) => {
                self.problem(e.to_string());
                None
            }
        }
    }

    /// The `ES_*` variables. Credentials named by `ES_SECRET_ID` are fetched later, by the caller
    /// that has an AWS client.
    pub fn elasticsearch(&mut self) -> (EsSettings, Option<String>) {
        let host = self.required("ES_HOST", "the Elasticsearch host name or IP address");
        let port = self.parse::<u16>("ES_PORT", 9200);
        let use_ssl = self.flag("ES_USE_SSL", false);
        let verify_certs = self.flag("ES_VERIFY_CERTS", true);
        let ca_cert_pem = self
            .get("ES_CA_CERT")
            .and_then(|v| self.pem("ES_CA_CERT", &v));
        let client_identity = self.client_identity();
        let username = self.get("ES_USERNAME");
        let password = self.secret("ES_PASSWORD");
        let api_key = self.secret("ES_API_KEY");
        let auth = match (username, password, api_key) {
            (_, _, Some(key)) => Some(EsAuth::ApiKey(key)),
            (Some(username), Some(password), None) => Some(EsAuth::Basic { username, password }),
            (Some(_), None, None) => {
                self.problem("ES_USERNAME is set without ES_PASSWORD");
                None
            }
            (None, Some(_), None) => {
                self.problem("ES_PASSWORD is set without ES_USERNAME");
                None
            }
            (None, None, None) => None,
        };
        if host.contains("://") || host.contains('/') {
            self.problem(format!("ES_HOST={host:?} must be a host name or IP address, without scheme or path (use ES_USE_SSL for https)"));
        }
        let timeout = Duration::from_secs(self.parse::<u64>("ES_TIMEOUT_SECS", 30).max(1));
        let connect_timeout =
            Duration::from_secs(self.parse::<u64>("ES_CONNECT_TIMEOUT_SECS", 5).max(1));
        let index = self.get("ES_INDEX").unwrap_or_else(|| "documents".into());
        let secret_id = self.get("ES_SECRET_ID");
        let tcp_mss = self.optional::<u32>("ES_TCP_MSS");
        if let Some(mss) = tcp_mss.filter(|m| !crate::net::MSS_RANGE.contains(m)) {
            self.problem(format!(
                "ES_TCP_MSS={mss} must be between {} and {} bytes (or empty: the path's own)",
                crate::net::MSS_RANGE.start(),
                crate::net::MSS_RANGE.end()
            ));
        }
        (
            EsSettings {
                host,
                port,
                use_ssl,
                verify_certs,
                ca_cert_pem,
                auth,
                index,
                timeout,
                connect_timeout,
                tcp_mss,
                client_identity,
            },
            secret_id,
        )
    }

    /// Inline PEM text, or a path to a PEM file, from variable `name`.
    fn pem(&mut self, name: &str, value: &str) -> Option<String> {
        if value.contains("-----BEGIN") {
            return Some(value.replace("\\n", "\n"));
        }
        match std::fs::read_to_string(value) {
            Ok(text) => Some(text),
            Err(e) => {
                self.problem(format!("{name} names {value:?}, which cannot be read: {e}"));
                None
            }
        }
    }

    /// `ES_CLIENT_CERT` and `ES_CLIENT_KEY` (each PEM text or a path), both or neither. In a
    /// deployment the pair comes from the `ES_SECRET_ID` secret instead.
    fn client_identity(&mut self) -> Option<crate::es::ClientIdentity> {
        let cert = self.get("ES_CLIENT_CERT");
        let key = self.secret("ES_CLIENT_KEY");
        match (cert, key) {
            (Some(cert), Some(key)) => {
                let certificate_pem = self.pem("ES_CLIENT_CERT", &cert)?;
                let key = key.expose();
                let key_pem = if key.contains("-----BEGIN") {
                    key.replace("\\n", "\n")
                } else {
                    match std::fs::read_to_string(key) {
                        Ok(text) => text,
                        Err(e) => {
                            // The value is a path here, not the key itself.
                            self.problem(format!(
                                "ES_CLIENT_KEY names a file that cannot be read: {e}"
                            ));
                            return None;
                        }
                    }
                };
                let identity = crate::es::ClientIdentity {
                    certificate_pem,
                    key_pem: Secret::new(key_pem),
                };
                if let Err(e) = identity.parse() {
                    self.problem(format!("ES_CLIENT_CERT / ES_CLIENT_KEY: {e}"));
                    return None;
                }
                Some(identity)
            }
            (Some(_), None) => {
                self.problem("ES_CLIENT_CERT is set without ES_CLIENT_KEY");
                None
            }
            (None, Some(_)) => {
                self.problem("ES_CLIENT_KEY is set without ES_CLIENT_CERT");
                None
            }
            (None, None) => None,
        }
    }
}

/// What a Secrets Manager secret holds for Elasticsearch: `{"username","password"}` or
/// `{"api_key"}`, and, for a cluster that requires client certificates, `client_certificate`
/// and `client_key` (PEM) — with credentials or alone.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretCredentials {
    pub auth: Option<EsAuth>,
    pub identity: Option<crate::es::ClientIdentity>,
}

/// Reads the secret's JSON; the errors name the secret and what is missing, never a value.
pub fn credentials_from_secret(
    secret_id: &str,
    secret_string: &str,
) -> Result<SecretCredentials, ConfigError> {
    let problem = |text: &str| ConfigError {
        problems: vec![format!("secret {secret_id}: {text}")],
    };
    let value: serde_json::Value = serde_json::from_str(secret_string)
        .map_err(|_| problem("is not JSON ({\"username\",\"password\"} or {\"api_key\"})"))?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    let auth = match (field("api_key"), field("username"), field("password")) {
        (Some(key), _, _) => Some(EsAuth::ApiKey(Secret::new(key))),
        (None, Some(u), Some(p)) => Some(EsAuth::Basic {
            username: u.to_owned(),
            password: Secret::new(p),
        }),
        _ => None,
    };
    let identity = match (field("client_certificate"), field("client_key")) {
        (Some(cert), Some(key)) => {
            let identity = crate::es::ClientIdentity {
                certificate_pem: cert.replace("\\n", "\n"),
                key_pem: Secret::new(key.replace("\\n", "\n")),
            };
            identity.parse().map_err(|e| problem(&e))?;
            Some(identity)
        }
        (None, None) => None,
        _ => {
            return Err(problem(
                "holds one of client_certificate and client_key without the other",
            ));
        }
    };
    if auth.is_none() && identity.is_none() {
        return Err(problem(
            "holds neither api_key nor username and password (nor client_certificate and client_key)",
        ));
    }
    Ok(SecretCredentials { auth, identity })
}

/// The credentials a secret holds (see [`credentials_from_secret`]); an error when it holds
/// only a client certificate.
pub fn auth_from_secret(secret_id: &str, secret_string: &str) -> Result<EsAuth, ConfigError> {
    credentials_from_secret(secret_id, secret_string)?
        .auth
        .ok_or_else(|| ConfigError {
            problems: vec![format!(
                "secret {secret_id}: holds neither api_key nor username and password"
            )],
        })
}

/// What `ingest` needs.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub queue_url: String,
    /// The intake queue (`INGEST_QUEUE_URL`): continuations and backfill pages become messages
    /// on it; unset, a continuation is an asynchronous invocation of the function itself.
    pub intake_queue_url: Option<String>,
    pub fields: FieldSelection,
    pub chunking: ChunkSettings,
    pub message_max_bytes: usize,
    pub sqs_max_payload_bytes: usize,
    pub max_record_bytes: usize,
    /// Where rejected records are written, in the source bucket; keys under it are never ingested.
    pub rejects_prefix: String,
    /// The field path of the records array inside each JSON document (`RECORDS_PATH`, dotted);
    /// empty: the document itself is the records.
    pub records_path: Vec<String>,
    /// At most this long per invocation before handing over to a fresh one (`INGEST_TIME_LIMIT_SECS`);
    /// it always stops 30 s before the Lambda deadline.
    pub time_limit: Option<std::time::Duration>,
    pub model: EmbeddingModel,
    /// How documents (PDF, Word, Excel, CSV, HTML, Markdown, text) are read: the table mapping
    /// (`TABLE_TEXT_COLUMNS`, `TABLE_ID_COLUMN`) and the limits.
    pub documents: crate::documents::ExtractSettings,
}

impl IngestConfig {
    /// Time kept back before the Lambda deadline to hand the rest over.
    pub const HAND_OVER_RESERVE: Duration = Duration::from_secs(30);

    /// When an invocation stops reading and hands over, from the Lambda deadline (epoch ms).
    pub fn work_deadline(&self, lambda_deadline_ms: u64) -> crate::retry::Deadline {
        let by_lambda = crate::retry::Deadline::from_lambda_deadline_ms(
            lambda_deadline_ms,
            Self::HAND_OVER_RESERVE,
        );
        match self.time_limit {
            Some(limit) if limit < by_lambda.remaining() => crate::retry::Deadline::after(limit),
            _ => by_lambda,
        }
    }

    pub fn batch_limits(&self) -> crate::queue::BatchLimits {
        crate::queue::BatchLimits {
            max_payload_bytes: self.sqs_max_payload_bytes,
            max_attempts: 5,
            delay_seconds: 0,
        }
    }
}

impl IngestConfig {
    pub fn from_env(env: &mut Env) -> Result<Self, ConfigError> {
        let queue_url = env.required("CHUNK_QUEUE_URL", "the SQS queue chunks are sent to");
        let intake_queue_url = env.get("INGEST_QUEUE_URL");
        let fields = fields(env);
        let model = env.model();
        let chunking = chunking(env, model.as_ref());
        let message_max_bytes = env.parse::<usize>("MESSAGE_MAX_BYTES", 64 * 1024);
        let sqs_max_payload_bytes = env.parse::<usize>("SQS_MAX_PAYLOAD_BYTES", 256 * 1024);
        let max_record_bytes = env.parse::<usize>("MAX_RECORD_BYTES", 4 * 1024 * 1024);
        let rejects_prefix = env
            .get("REJECTS_PREFIX")
            .unwrap_or_else(|| "rejects/".into());
        let time_limit = env
            .optional::<u64>("INGEST_TIME_LIMIT_SECS")
            .map(Duration::from_secs);
        let records_path: Vec<String> = env
            .get("RECORDS_PATH")
            .map(|p| p.split('.').map(str::to_owned).collect())
            .unwrap_or_default();
        let documents = crate::documents::ExtractSettings {
            table: crate::documents::TableMapping {
                text_columns: env.list("TABLE_TEXT_COLUMNS", ""),
                id_column: env.get("TABLE_ID_COLUMN"),
            },
            max_section_bytes: max_record_bytes.max(1024),
            ..Default::default()
        };
        if records_path.iter().any(String::is_empty) {
            env.problem("RECORDS_PATH has an empty segment (write it like data.items)");
        }
        if !(4096..=1024 * 1024).contains(&message_max_bytes) {
            env.problem(format!("MESSAGE_MAX_BYTES={message_max_bytes} must be between 4096 and 1048576 (SQS's limit)"));
        }
        if sqs_max_payload_bytes < message_max_bytes || sqs_max_payload_bytes > 1024 * 1024 {
            env.problem(format!(
                "SQS_MAX_PAYLOAD_BYTES={sqs_max_payload_bytes} must be at least MESSAGE_MAX_BYTES and at most 1048576"
            ));
        }
        env.check()?;
        Ok(Self {
            queue_url,
            intake_queue_url,
            fields,
            chunking,
            message_max_bytes,
            sqs_max_payload_bytes,
            max_record_bytes: max_record_bytes.max(1024),
            rejects_prefix,
            records_path,
            time_limit,
            model: model.expect("check() fails when the model is invalid"),
            documents,
        })
    }
}

fn fields(env: &mut Env) -> FieldSelection {
    let text_fields = env.list("TEXT_FIELDS", "text");
    if text_fields.is_empty() {
        env.problem("TEXT_FIELDS names no field");
    }
    let id_field = env.get("ID_FIELD").unwrap_or_else(|| "id".into());
    let id_scope = env.parse("ID_SCOPE", crate::ids::IdScope::Object);
    FieldSelection {
        text_fields,
        id_field,
        id_scope,
    }
}

fn chunking(env: &mut Env, model: Option<&EmbeddingModel>) -> ChunkSettings {
    let max_chars = env.parse::<usize>("CHUNK_MAX_CHARS", 1000);
    let overlap_chars = env.parse::<usize>("CHUNK_OVERLAP_CHARS", 100);
    if max_chars < 50 {
        env.problem(format!(
            "CHUNK_MAX_CHARS={max_chars} is too small (at least 50)"
        ));
    }
    if overlap_chars >= max_chars {
        env.problem(format!(
            "CHUNK_OVERLAP_CHARS={overlap_chars} must be smaller than CHUNK_MAX_CHARS={max_chars}"
        ));
    }
    if let Some(model) = model
        && max_chars > model.max_input_chars()
    {
        env.problem(format!(
            "CHUNK_MAX_CHARS={max_chars} is more than {} takes in one input ({} characters)",
            model.id,
            model.max_input_chars()
        ));
    }
    ChunkSettings {
        max_chars,
        overlap_chars,
    }
}

/// What `embed-index` needs.
#[derive(Debug, Clone)]
pub struct EmbedIndexConfig {
    pub es: EsSettings,
    pub es_secret_id: Option<String>,
    pub model: EmbeddingModel,
    pub vectors: VectorSettings,
    /// The most Bedrock calls in flight per container (`EMBED_CONCURRENCY`).
    pub concurrency: usize,
    /// Whether calls adapt to throttling below that ceiling (`EMBED_ADAPTIVE`, on by default),
    /// or always run `concurrency` at a time.
    pub adaptive: bool,
    /// Input tokens a second this container may send, when the deployment has a tokens budget:
    /// `BEDROCK_TPM` / 60 shared by the most containers that can run (`EMBED_MAX_CONTAINERS`,
    /// the template's EmbedMaxConcurrency).
    pub token_budget: Option<f64>,
    pub bulk_max_bytes: usize,
    /// Where chunks go back, with their vectors, when Elasticsearch stays unavailable
    /// (`CHUNK_QUEUE_URL`); without it such messages just fail and are retried.
    pub requeue_url: Option<String>,
    /// How long requeued chunks wait the first time (`REQUEUE_DELAY_SECS`, SQS's
    /// `DelaySeconds`: 0–900); the wait doubles with each requeue up to
    /// `requeue_max_delay_secs` (`REQUEUE_MAX_DELAY_SECS`).
    pub requeue_delay_secs: i32,
    pub requeue_max_delay_secs: i32,
    /// Requeues one message may make before it goes to the dead-letter queue (`MAX_REQUEUES`):
    /// the hop limit of embed-index's own loop.
    pub max_requeues: u32,
    pub message_max_bytes: usize,
    pub sqs_max_payload_bytes: usize,
    /// How often the index's model and a migration under way are read again
    /// (`MIGRATION_CHECK_SECS`): a migration's second writes start, and a swapped alias's model
    /// is followed, within this.
    pub migration_check: Duration,
}

/// The analyzers `text` may be created with: Elasticsearch's built-in ones that suit the
/// documents sakuin reads, and the Japanese (`kuromoji`) and ICU ones where the plugin is
/// installed.
pub const TEXT_ANALYZERS: &[&str] = &["cjk", "standard", "english", "kuromoji", "icu_analyzer"];

impl EmbedIndexConfig {
    pub fn from_env(env: &mut Env) -> Result<Self, ConfigError> {
        let (es, es_secret_id) = env.elasticsearch();
        let model = env.model();
        let vectors = env.vector_settings();
        let (concurrency, adaptive, token_budget) = env.embed_pace();
        let bulk_max_bytes = env
            .parse::<usize>("ES_BULK_MAX_BYTES", 10 * 1024 * 1024)
            .max(64 * 1024);
        let requeue_url = env.get("CHUNK_QUEUE_URL");
        let (requeue_delay_secs, requeue_max_delay_secs) = env.requeue_delays();
        let max_requeues = env.parse::<u32>("MAX_REQUEUES", 288);
        let message_max_bytes = env
            .parse::<usize>("MESSAGE_MAX_BYTES", 64 * 1024)
            .clamp(4096, 1024 * 1024);
        let sqs_max_payload_bytes = env
            .parse::<usize>("SQS_MAX_PAYLOAD_BYTES", 256 * 1024)
            .clamp(message_max_bytes, 1024 * 1024);
        let migration_check =
            Duration::from_secs(env.parse::<u64>("MIGRATION_CHECK_SECS", 30).clamp(1, 3600));
        // Lambda does not tell a function its timeout; the template passes the same value.
        if let Some(secs) = env.optional::<u64>("FUNCTION_TIMEOUT_SECS") {
            let function_time = Duration::from_secs(secs);
            let setting = format!("FUNCTION_TIMEOUT_SECS={secs}");
            if let Some(problem) = Self::time_problem(function_time, es.timeout, &setting) {
                env.problem(problem);
            }
        }
        env.check()?;
        Ok(Self {
            es,
            es_secret_id,
            model: model.expect("checked"),
            vectors,
            concurrency,
            adaptive,
            token_budget,
            bulk_max_bytes,
            requeue_url,
            requeue_delay_secs,
            requeue_max_delay_secs,
            max_requeues,
            message_max_bytes,
            sqs_max_payload_bytes,
            migration_check,
        })
    }
}

impl EmbedIndexConfig {
    /// Time kept back from the Lambda deadline to send the response.
    pub const RESPONSE_RESERVE: Duration = Duration::from_secs(2);

    /// The Elasticsearch requests on a batch's shortest complete path: look up what is stored,
    /// claim the markers, write (`_bulk`), read the markers again, refresh, remove.
    pub const BATCH_REQUESTS: u32 = 6;

    /// The shortest function timeout that works with `ES_TIMEOUT_SECS` = `es_timeout`. The rule:
    /// after [`Self::RESPONSE_RESERVE`], one request may take its full `ES_TIMEOUT_SECS` (the
    /// cluster is allowed that long), each of the other [`Self::BATCH_REQUESTS`] − 1 requests
    /// gets at least the least useful time ([`crate::retry::MIN_REQUEST_TIME`]), and the last one
    /// still ends [`crate::retry::ANSWER_MARGIN`] before the deadline, so what did not land can
    /// be put back on the queue: `ES_TIMEOUT_SECS` + 19 s for a timeout of 3 s or more (49 s
    /// for the default 30 s; the template's 120 s takes up to 101 s). Shorter functions are not
    /// merely slower: a slow but healthy cluster would leave no batch room to finish, so its
    /// messages would circle until `MAX_REQUEUES`.
    pub fn least_function_timeout(es_timeout: Duration) -> Duration {
        let others = crate::retry::MIN_REQUEST_TIME.min(es_timeout) * (Self::BATCH_REQUESTS - 1);
        Self::RESPONSE_RESERVE + crate::retry::ANSWER_MARGIN + es_timeout + others
    }

    /// Why a function that runs `function_time` (named `setting` in the message) cannot work
    /// with `ES_TIMEOUT_SECS` = `es_timeout`, naming both and what would fit; `None` when it can.
    pub fn time_problem(
        function_time: Duration,
        es_timeout: Duration,
        setting: &str,
    ) -> Option<String> {
        let least = Self::least_function_timeout(es_timeout);
        if function_time >= least {
            return None;
        }
        let fits = (1..=function_time.as_secs())
            .rev()
            .find(|s| Self::least_function_timeout(Duration::from_secs(*s)) <= function_time);
        let lower = match fits {
            Some(s) => format!(" or lower ES_TIMEOUT_SECS to at most {s}"),
            None => String::new(),
        };
        Some(format!(
            "{setting} is too short for ES_TIMEOUT_SECS={}: a batch needs one Elasticsearch \
             request of up to ES_TIMEOUT_SECS, {} more of at least {} s each and {} s to answer, \
             {} s in all; raise the function's timeout to at least {} s{lower}",
            es_timeout.as_secs(),
            Self::BATCH_REQUESTS - 1,
            crate::retry::MIN_REQUEST_TIME.as_secs(),
            (Self::RESPONSE_RESERVE + crate::retry::ANSWER_MARGIN).as_secs(),
            least.as_secs(),
            least.as_secs(),
        ))
    }
}

/// `ES_VECTOR_INDEX_TYPE` as the probe reads it: a value that is no index type is kept as the
/// finding its index check reports.
fn vector_index_type(env: &mut Env) -> Result<Option<IndexType>, String> {
    env.get("ES_VECTOR_INDEX_TYPE")
        .map(|t| {
            t.parse()
                .map_err(|e| format!("ES_VECTOR_INDEX_TYPE={t} is {e}"))
        })
        .transpose()
}

impl Env {
    /// How a new index stores, compares and analyses: `ES_SIMILARITY`, `ES_VECTOR_INDEX_TYPE`
    /// (empty: the best type the cluster's release takes, decided when the index is created)
    /// and `ES_TEXT_ANALYZER`.
    pub fn vector_settings(&mut self) -> VectorSettings {
        let similarity = self
            .optional::<crate::es::Similarity>("ES_SIMILARITY")
            .unwrap_or_default();
        let index_type = self.optional::<IndexType>("ES_VECTOR_INDEX_TYPE");
        VectorSettings {
            similarity,
            index_type,
            text_analyzer: self.text_analyzer(),
        }
    }

    /// How hard one container pushes Bedrock: `EMBED_CONCURRENCY`, `EMBED_ADAPTIVE`, and its
    /// share of `BEDROCK_TPM` among `EMBED_MAX_CONTAINERS` (tokens a second).
    fn embed_pace(&mut self) -> (usize, bool, Option<f64>) {
        let concurrency = self.parse::<usize>("EMBED_CONCURRENCY", 8);
        if !(1..=256).contains(&concurrency) {
            self.problem(format!(
                "EMBED_CONCURRENCY={concurrency} must be between 1 and 256"
            ));
        }
        let adaptive = self.flag("EMBED_ADAPTIVE", true);
        let tpm = self.parse::<u64>("BEDROCK_TPM", 0);
        let containers = self.parse::<u64>("EMBED_MAX_CONTAINERS", 1);
        if containers == 0 {
            self.problem("EMBED_MAX_CONTAINERS=0 must be at least 1");
        }
        let token_budget = (tpm > 0).then(|| tpm as f64 / 60.0 / containers.max(1) as f64);
        (concurrency, adaptive, token_budget)
    }

    /// `REQUEUE_DELAY_SECS` and `REQUEUE_MAX_DELAY_SECS`, within SQS's 0–900 s.
    fn requeue_delays(&mut self) -> (i32, i32) {
        let delay = self.parse::<i32>("REQUEUE_DELAY_SECS", 60);
        if !(0..=900).contains(&delay) {
            self.problem(format!(
                "REQUEUE_DELAY_SECS={delay} must be between 0 and 900 (SQS DelaySeconds)"
            ));
        }
        let max_delay = self.parse::<i32>("REQUEUE_MAX_DELAY_SECS", 900);
        if !(delay..=900).contains(&max_delay) {
            self.problem(format!(
                "REQUEUE_MAX_DELAY_SECS={max_delay} must be between REQUEUE_DELAY_SECS ({delay}) and 900"
            ));
        }
        (delay, max_delay)
    }
}

/// What `probe` needs; every dependency it is not told about is skipped.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub es: EsSettings,
    /// `ES_TIMEOUT_SECS` as the workers use it (`es.timeout` is cut to the probe's budget), and
    /// their `ES_BULK_MAX_BYTES`: whether one `_bulk` crosses the link in time.
    pub worker_es_timeout: Duration,
    pub bulk_max_bytes: usize,
    pub es_secret_id: Option<String>,
    pub model: EmbeddingModel,
    pub bucket: Option<String>,
    pub queue_url: Option<String>,
    pub dead_letter_queue_url: Option<String>,
    /// `INGEST_QUEUE_URL`: the intake queue S3 notifications, continuations and backfill pages
    /// go through.
    pub intake_queue_url: Option<String>,
    /// `INGEST_DEAD_LETTER_QUEUE_URL`: the intake queue's dead-letter queue.
    pub intake_dead_letter_queue_url: Option<String>,
    pub timeout: Duration,
    /// `PROBE_REQUIRED_CHECKS`: groups or check names whose failure fails the invocation
    /// (`all`, the default, or `none`); other failing checks are reported but tolerated.
    pub required_checks: Vec<String>,
    /// `PROBE_CERT_WARN_DAYS`: the TLS check warns when the certificate expires sooner.
    pub cert_warn_days: u32,
    /// `SUBNET_IDS` and `SECURITY_GROUP_IDS`: the functions' own network, which the probe
    /// reads (EC2 `Describe*`) when TCP to the cluster fails. `None` outside a VPC.
    pub placement: Option<crate::probe::vpc_path::Placement>,
    /// `ES_VECTOR_INDEX_TYPE`, as embed-index reads it: checked against the cluster's release.
    /// A value that is no index type is the index check's finding, not a refusal to start.
    pub vector_index_type: Result<Option<IndexType>, String>,
    /// `ES_TEXT_ANALYZER`, as embed-index reads it: before the index exists, the probe asks the
    /// cluster whether it has this analyzer (a plugin's, for kuromoji and icu_analyzer).
    pub text_analyzer: String,
}

impl ProbeConfig {
    pub fn from_env(env: &mut Env) -> Result<Self, ConfigError> {
        let (mut es, es_secret_id) = env.elasticsearch();
        let model = env.model();
        let timeout = Duration::from_secs(env.parse::<u64>("PROBE_TIMEOUT_SECS", 5).max(1));
        // The workers' request timeout and bulk size, for the link check.
        let worker_es_timeout = es.timeout;
        let bulk_max_bytes = env.parse::<usize>("ES_BULK_MAX_BYTES", 10 * 1024 * 1024);
        // A probe answers quickly or says where it hangs; it never waits out a 30 s default.
        es.timeout = es.timeout.min(timeout);
        es.connect_timeout = es.connect_timeout.min(timeout);
        let bucket = env.get("SOURCE_BUCKET");
        let queue_url = env.get("CHUNK_QUEUE_URL");
        let dead_letter_queue_url = env.get("DEAD_LETTER_QUEUE_URL");
        let intake_queue_url = env.get("INGEST_QUEUE_URL");
        let intake_dead_letter_queue_url = env.get("INGEST_DEAD_LETTER_QUEUE_URL");
        let required_checks = env.list("PROBE_REQUIRED_CHECKS", "all");
        for name in &required_checks {
            if !crate::checks::is_known_selector(name) {
                env.problem(format!(
                    "PROBE_REQUIRED_CHECKS names {name:?}, which is not all, none, a group ({}) or a check ({})",
                    crate::checks::GROUPS.join(", "),
                    crate::checks::CHECKS.join(", ")
                ));
            }
        }
        let cert_warn_days = env.parse::<u32>("PROBE_CERT_WARN_DAYS", 14);
        let subnets = env.list("SUBNET_IDS", "");
        let placement = (!subnets.is_empty()).then(|| crate::probe::vpc_path::Placement {
            subnets,
            security_groups: env.list("SECURITY_GROUP_IDS", ""),
        });
        let text_analyzer = env.text_analyzer();
        env.check()?;
        Ok(Self {
            es,
            es_secret_id,
            model: model.expect("checked"),
            bucket,
            queue_url,
            dead_letter_queue_url,
            intake_queue_url,
            intake_dead_letter_queue_url,
            timeout,
            worker_es_timeout,
            bulk_max_bytes,
            required_checks,
            cert_warn_days,
            placement,
            vector_index_type: vector_index_type(env),
            text_analyzer,
        })
    }
}

/// A dead-letter queue and the queue its messages go back to, for `sakuin redrive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePair {
    /// `chunk` or `intake`.
    pub name: &'static str,
    pub dead_letter_queue_url: String,
    pub queue_url: String,
    /// The variables the two URLs come from, for messages.
    pub dead_letter_queue_var: &'static str,
    pub queue_var: &'static str,
}

/// What `sakuin redrive` needs: the queue pairs to move, from the functions' own variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveConfig {
    pub pairs: Vec<QueuePair>,
    /// Pairs `all` left out because neither of their variables is set.
    pub not_configured: Vec<&'static str>,
}

impl RedriveConfig {
    /// The pairs named by `queues`: `chunk`, `intake`, or `all` (every pair whose variables are
    /// set). A named pair needs both variables; with `all`, a pair with only one set is an error
    /// too, since moving messages to a guessed queue could mix chunk and intake messages.
    pub fn from_env(env: &mut Env, queues: &str) -> Result<Self, ConfigError> {
        let known = [
            ("chunk", "DEAD_LETTER_QUEUE_URL", "CHUNK_QUEUE_URL"),
            ("intake", "INGEST_DEAD_LETTER_QUEUE_URL", "INGEST_QUEUE_URL"),
        ];
        if queues != "all" && !known.iter().any(|(name, _, _)| *name == queues) {
            env.problem(format!("--queue {queues:?} is not chunk, intake or all"));
        }
        let mut pairs = Vec::new();
        let mut not_configured = Vec::new();
        for (name, dlq_var, queue_var) in known {
            if queues != "all" && queues != name {
                continue;
            }
            match (env.get(dlq_var), env.get(queue_var)) {
                (Some(dead_letter_queue_url), Some(queue_url)) => pairs.push(QueuePair {
                    name,
                    dead_letter_queue_url,
                    queue_url,
                    dead_letter_queue_var: dlq_var,
                    queue_var,
                }),
                (None, None) if queues == "all" => not_configured.push(name),
                (dlq, queue) => {
                    let missing: Vec<&str> =
                        [(dlq_var, dlq.is_none()), (queue_var, queue.is_none())]
                            .into_iter()
                            .filter_map(|(var, missing)| missing.then_some(var))
                            .collect();
                    env.problem(format!(
                        "redriving the {name} dead-letter queue needs {dlq_var} and {queue_var}; {} not set",
                        missing.join(" and ")
                    ));
                }
            }
        }
        if pairs.is_empty() && queues == "all" && not_configured.len() == known.len() {
            env.problem(
                "no dead-letter queue is configured: set DEAD_LETTER_QUEUE_URL and CHUNK_QUEUE_URL, \
                 or INGEST_DEAD_LETTER_QUEUE_URL and INGEST_QUEUE_URL",
            );
        }
        env.check()?;
        Ok(Self {
            pairs,
            not_configured,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variables the code reads: string literals of upper-case words joined by `_` passed
    /// straight to a call (`env.get("ES_HOST")`, `env.parse::<u32>("MAX_REQUEUES", 288)`), in
    /// the sources of the library, the functions and the command line, tests left out.
    fn variables_read() -> std::collections::BTreeSet<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        let mut dirs = vec![
            root.join("shared/src"),
            root.join("cli/src"),
            root.join("functions"),
        ];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
                let path = entry.path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() && !name.starts_with("test") {
                    dirs.push(path);
                } else if name.ends_with(".rs") && !name.starts_with("test") {
                    files.push(path);
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (at, _) in code.match_indices("(\"") {
                let called = code[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '>');
                let rest = &code[at + 2..];
                let word: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let closed = rest[word.len()..].starts_with('"');
                if called
                    && closed
                    && word.contains('_')
                    && !word.ends_with('_')
                    && word.starts_with(|c: char| c.is_ascii_uppercase())
                {
                    names.insert(word);
                }
            }
        }
        names
    }

    /// `docs/configuration.md` and the code cannot drift: every variable the code reads is in
    /// the page, and every variable the page's table lists is read (or is the AWS SDK's own).
    #[test]
    fn the_configuration_reference_lists_every_variable_the_code_reads() {
        let page = include_str!("../../docs/configuration.md");
        let read = variables_read();
        assert!(
            read.len() > 40,
            "the scan found too few variables: {read:?}"
        );
        let missing: Vec<&String> = read
            .iter()
            .filter(|name| !page.contains(&format!("`{name}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md lacks {missing:?}"
        );
        let listed: Vec<&str> = page
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .flat_map(|row| row.split(" |").next())
            .flat_map(|cell| cell.split(", "))
            .map(|name| name.trim_matches('`'))
            .filter(|name| {
                name.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .collect();
        let stale: Vec<&&str> = listed
            .iter()
            // The AWS SDK's own (`AWS_ENDPOINT_URL_S3`, `_SQS`, ...) are read by the SDK.
            .filter(|name| {
                !read.contains(**name) && !name.starts_with("AWS_") && !name.starts_with('_')
            })
            .collect();
        assert!(
            stale.is_empty(),
            "docs/configuration.md lists {stale:?}, which no code reads"
        );
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_follow_the_contract() {
        let cfg = EmbedIndexConfig::from_env(&mut env(&[("ES_HOST", "10.0.0.5")])).unwrap();
        assert_eq!(cfg.es.base_url(), "http://10.0.0.5:9200");
        assert_eq!(cfg.es.index, "documents");
        assert!(cfg.es.verify_certs);
        assert_eq!(cfg.model.id, "amazon.titan-embed-text-v2:0");
        assert_eq!(cfg.model.dimensions, 1024);

        let cfg = IngestConfig::from_env(&mut env(&[("CHUNK_QUEUE_URL", "http://q")])).unwrap();
        assert_eq!(cfg.fields.text_fields, vec!["text"]);
        assert_eq!(cfg.fields.id_field, "id");
        assert_eq!(
            cfg.chunking,
            ChunkSettings {
                max_chars: 1000,
                overlap_chars: 100
            }
        );
        assert!(cfg.message_max_bytes < 256 * 1024);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = EmbedIndexConfig::from_env(&mut env(&[
            ("ES_PORT", "ninety"),
            ("ES_USE_SSL", "maybe"),
            ("EMBEDDING_MODEL_ID", "amazon.titan-embed-text-v2:0"),
            ("EMBEDDING_DIMENSIONS", "300"),
            ("ES_USERNAME", "elastic"),
            ("ES_SIMILARITY", "dots"),
            ("ES_TCP_MSS", "100"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "ES_HOST is required",
            "ES_PORT",
            "ES_USE_SSL",
            "EMBEDDING_DIMENSIONS 300",
            "ES_USERNAME is set without",
            "ES_SIMILARITY=\"dots\" is not valid: not one of cosine, dot_product, l2_norm, max_inner_product",
            "ES_TCP_MSS=100 must be between 536 and 8961",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(err.problems.len(), 7);
    }

    #[test]
    fn chunk_size_must_fit_the_model() {
        let err = IngestConfig::from_env(&mut env(&[
            ("CHUNK_QUEUE_URL", "http://q"),
            ("EMBEDDING_MODEL_ID", "cohere.embed-multilingual-v3"),
            ("CHUNK_MAX_CHARS", "3000"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("2048"), "{err}");
        let err = IngestConfig::from_env(&mut env(&[
            ("CHUNK_QUEUE_URL", "q"),
            ("CHUNK_OVERLAP_CHARS", "1000"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("CHUNK_OVERLAP_CHARS"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_errors_or_debug() {
        let mut e = env(&[
            ("ES_HOST", "h"),
            ("ES_USERNAME", "u"),
            ("ES_PASSWORD", "pa55-w0rd-x"),
            ("ES_PORT", "x"),
        ]);
        let err = EmbedIndexConfig::from_env(&mut e).unwrap_err();
        assert!(!err.to_string().contains("pa55-w0rd-x"));
        let cfg = EmbedIndexConfig::from_env(&mut env(&[
            ("ES_HOST", "h"),
            ("ES_API_KEY", "a2V5LWlkOmtleQ=="),
        ]))
        .unwrap();
        assert!(!format!("{cfg:?}").contains("a2V5LWlkOmtleQ=="));
        assert!(matches!(cfg.es.auth, Some(EsAuth::ApiKey(_))));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let cfg = EmbedIndexConfig::from_env(&mut env(&[
            ("ES_HOST", "h"),
            ("ES_INDEX", ""),
            ("EMBEDDING_DIMENSIONS", ""),
        ]))
        .unwrap();
        assert_eq!(cfg.es.index, "documents");
        assert_eq!(cfg.model.dimensions, 1024);
    }

    #[test]
    fn host_with_scheme_is_refused_with_a_hint() {
        let err =
            EmbedIndexConfig::from_env(&mut env(&[("ES_HOST", "https://es:9200")])).unwrap_err();
        assert!(err.to_string().contains("ES_USE_SSL"), "{err}");
    }

    #[test]
    fn secret_payloads() {
        assert!(matches!(
            auth_from_secret("s", r#"{"api_key":"k"}"#),
            Ok(EsAuth::ApiKey(_))
        ));
        assert!(matches!(
            auth_from_secret("s", r#"{"username":"u","password":"p"}"#),
            Ok(EsAuth::Basic { .. })
        ));
        let err = auth_from_secret("arn:s", r#"{"user":"u"}"#).unwrap_err();
        // A client certificate beside the credentials, or alone; never half of one.
        let cert =
            "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUDvJ2\n-----END CERTIFICATE-----\n";
        let half = serde_json::json!({"api_key": "k", "client_certificate": cert}).to_string();
        let e = credentials_from_secret("arn:s", &half).unwrap_err();
        assert!(e.to_string().contains("without the other"), "{e}");
        let key = "-----BEGIN PRIVATE KEY-----\n@@ not base64 @@\n-----END PRIVATE KEY-----\n";
        let bad = serde_json::json!({"client_certificate": cert, "client_key": key}).to_string();
        let e = credentials_from_secret("arn:s", &bad)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("@@"), "the key never shows: {e}");
        assert!(err.to_string().contains("arn:s"));
        let err = auth_from_secret("arn:s", "hunter2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn redrive_pairs_come_from_the_functions_variables() {
        let vars = [
            ("DEAD_LETTER_QUEUE_URL", "http://q/dlq"),
            ("CHUNK_QUEUE_URL", "http://q/chunks"),
            ("INGEST_QUEUE_URL", "http://q/intake"),
        ];
        let cfg = RedriveConfig::from_env(&mut env(&vars), "chunk").unwrap();
        assert_eq!(cfg.pairs.len(), 1);
        assert_eq!(
            (
                cfg.pairs[0].dead_letter_queue_url.as_str(),
                cfg.pairs[0].queue_url.as_str()
            ),
            ("http://q/dlq", "http://q/chunks")
        );
        // Half an intake pair: named or under `all`, it is refused with the missing variable.
        for which in ["intake", "all"] {
            let err = RedriveConfig::from_env(&mut env(&vars), which).unwrap_err();
            assert!(
                err.to_string()
                    .contains("INGEST_DEAD_LETTER_QUEUE_URL not set"),
                "{err}"
            );
        }
        let cfg = RedriveConfig::from_env(&mut env(&vars[..2]), "all").unwrap();
        assert_eq!(cfg.pairs[0].name, "chunk");
        assert_eq!(cfg.not_configured, vec!["intake"]);
        let err = RedriveConfig::from_env(&mut env(&[]), "all").unwrap_err();
        assert!(err.to_string().contains("no dead-letter queue"), "{err}");
        assert!(RedriveConfig::from_env(&mut env(&vars), "dlq").is_err());
    }
}
