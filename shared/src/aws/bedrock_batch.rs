//! A small client of Bedrock's batch inference jobs (CreateModelInvocationJob, Get…, List…,
//! Stop… of the `bedrock` control plane), signed with SigV4 as [`super::ec2`] signs the EC2
//! API; [`records`] writes the jobs' input lines and reads their output. Four REST JSON calls
//! (API version 2023-04-20) do not warrant `aws-sdk-bedrock`, one more of the SDK's slow
//! crates to compile:
//! <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_CreateModelInvocationJob.html>.

pub mod records;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};

/// The SDK's service id for the control plane: its endpoint variable is
/// `AWS_ENDPOINT_URL_BEDROCK` (as "Bedrock Runtime" gives `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`).
const SERVICE_ID: &str = "Bedrock";
/// SigV4's name for it, and its endpoints' prefix.
const SIGNING_NAME: &str = "bedrock";

/// What a path segment or query value may hold unencoded (RFC 3986's unreserved characters):
/// a job's ARN goes in the path with its `:` and `/` encoded, as the SDKs send it.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Bedrock's batch inference jobs in one Region.
#[derive(Clone)]
pub struct BedrockBatch {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: Option<SharedCredentialsProvider>,
    /// The last credentials, reused until five minutes before they expire: a job is polled
    /// for hours, and a profile's role would otherwise be assumed again at every call.
    cached: Arc<Mutex<Option<Credentials>>>,
}

impl fmt::Debug for BedrockBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BedrockBatch")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// A call's time limit: each call carries a few hundred bytes each way.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl BedrockBatch {
    /// From the shared SDK configuration: its Region and credentials, and the endpoint
    /// `aws-sdk-bedrock` would use: one set on the configuration itself, else
    /// `AWS_ENDPOINT_URL_BEDROCK` or the profile's `services` section, then `AWS_ENDPOINT_URL`
    /// (none of these under `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`), read as the runtime's client
    /// reads `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`; else the Region's public one.
    pub fn from_sdk(conf: &aws_config::SdkConfig) -> Self {
        let region = conf
            .region()
            .map(ToString::to_string)
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = configured_endpoint(conf)
            .unwrap_or_else(|| format!("https://{SIGNING_NAME}.{region}.amazonaws.com"));
        Self {
            http: http_client(CALL_TIMEOUT),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            region,
            credentials: conf.credentials_provider(),
            cached: Arc::default(),
        }
    }

    /// The same API with another time limit per call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.http = http_client(timeout);
        self
    }

    /// The endpoint calls go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Submits a job; its ARN. With a `client_request_token` Bedrock has seen, it answers the
    /// first request's job and creates none, so a create whose answer was lost can be sent
    /// again with the same token.
    pub async fn create(&self, job: &NewJob) -> Result<JobArn, BatchError> {
        let at = At::new(Operation::Create, &job.name);
        let mut body = json!({
            "jobName": job.name,
            "roleArn": job.role_arn,
            "modelId": job.model_id,
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": job.input_uri, "s3InputFormat": "JSONL"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": job.output_uri}},
        });
        if let Some(token) = &job.client_request_token {
            body["clientRequestToken"] = json!(token);
        }
        if let Some(hours) = job.timeout_hours {
            body["timeoutDurationInHours"] = json!(hours);
        }
        let body = serde_json::to_vec(&body).expect("a JSON value always serialises");
        let answer = self
            .call(&at, "POST", "/model-invocation-job", Some(body))
            .await?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            job_arn: String,
        }
        let created: Created = read(&at, &answer)?;
        Ok(JobArn(created.job_arn))
    }

    /// A job by its id or ARN.
    pub async fn get(&self, job: &str) -> Result<Job, BatchError> {
        let at = At::new(Operation::Get, job);
        let path = format!("/model-invocation-job/{}", encode(job));
        let answer = self.call(&at, "GET", &path, None).await?;
        let wire: WireJob = read(&at, &answer)?;
        Ok(wire.into())
    }

    /// One page of jobs, newest first, after `next_token` (from the previous page).
    pub async fn list(
        &self,
        filter: &JobFilter,
        next_token: Option<&str>,
    ) -> Result<JobPage, BatchError> {
        let at = At::list(filter);
        let mut query = Vec::new();
        if let Some(status) = &filter.status {
            query.push(("statusEquals", status.as_str().to_owned()));
        }
        if let Some(name) = &filter.name_contains {
            query.push(("nameContains", name.clone()));
        }
        if let Some(most) = filter.max_results {
            query.push(("maxResults", most.to_string()));
        }
        if let Some(token) = next_token {
            query.push(("nextToken", token.to_owned()));
        }
        let mut path = "/model-invocation-jobs".to_owned();
        for (i, (name, value)) in query.iter().enumerate() {
            path.push(if i == 0 { '?' } else { '&' });
            path.push_str(name);
            path.push('=');
            path.push_str(&encode(value));
        }
        let answer = self.call(&at, "GET", &path, None).await?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            invocation_job_summaries: Vec<WireJob>,
            next_token: Option<String>,
        }
        let page: Page = read(&at, &answer)?;
        Ok(JobPage {
            jobs: page
                .invocation_job_summaries
                .into_iter()
                .map(Job::from)
                .collect(),
            next_token: page.next_token.filter(|t| !t.is_empty()),
        })
    }

    /// Every job the filter matches, page after page.
    pub async fn list_all(&self, filter: &JobFilter) -> Result<Vec<Job>, BatchError> {
        let mut jobs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list(filter, token.as_deref()).await?;
            jobs.extend(page.jobs);
            match page.next_token {
                // A token that does not move on would page forever.
                Some(next) if token.as_ref() != Some(&next) => token = Some(next),
                _ => return Ok(jobs),
            }
        }
    }

    /// Asks a job to stop; it goes Stopping, then Stopped, and only the tokens it already
    /// processed are charged. A job that cannot be stopped any more is a
    /// [`Conflict`](BatchError::Conflict) in Bedrock's API model (the stand-in answers
    /// [`Invalid`](BatchError::Invalid)).
    pub async fn stop(&self, job: &str) -> Result<(), BatchError> {
        let at = At::new(Operation::Stop, job);
        let path = format!("/model-invocation-job/{}/stop", encode(job));
        self.call(&at, "POST", &path, None).await?;
        Ok(())
    }

    /// One signed call; the answer's body, or the error it stands for.
    async fn call(
        &self,
        at: &At,
        method: &'static str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, BatchError> {
        let url = format!("{}{path_and_query}", self.endpoint);
        let json = "application/json";
        let mut request = match method {
            "POST" => self.http.post(&url),
            _ => self.http.get(&url),
        };
        // As the SDK sends them: a content type only with a body (Stop has none).
        let mut headers = vec![("accept", json)];
        if body.is_some() {
            headers.push(("content-type", json));
        }
        for (name, value) in &headers {
            request = request.header(*name, *value);
        }
        let signing = |detail: String| BatchError::Signing {
            at: at.clone(),
            detail,
        };
        let identity = self.credentials().await.map_err(signing)?.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_NAME)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing(e.to_string()))?
            .into();
        let bytes = body.unwrap_or_default();
        let signable = SignableRequest::new(
            method,
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&bytes),
        )
        .map_err(|e| signing(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| signing(e.to_string()))?
            .into_parts();
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        if !bytes.is_empty() {
            request = request.body(bytes);
        }
        let response = request.send().await.map_err(|e| {
            let detail = if e.is_timeout() || e.is_connect() {
                format!(
                    "the Bedrock API ({}) did not answer: from a private subnet it needs a VPC endpoint (com.amazonaws.{}.bedrock) or a NAT gateway",
                    self.endpoint, self.region
                )
            } else {
                format!("the Bedrock API ({}): {e}", self.endpoint)
            };
            BatchError::NoAnswer {
                at: at.clone(),
                detail,
            }
        })?;
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = response.bytes().await.map_err(|e| BatchError::NoAnswer {
            at: at.clone(),
            detail: format!("reading the answer: {e}"),
        })?;
        if (200..300).contains(&status) {
            Ok(answer.to_vec())
        } else {
            Err(refusal(at.clone(), status, error_type.as_deref(), &answer))
        }
    }

    /// The configured credentials, reused while they hold for five more minutes.
    async fn credentials(&self) -> Result<Credentials, String> {
        let fresh = |c: &Credentials| {
            c.expiry().is_none_or(|at| {
                at.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > Duration::from_secs(300))
            })
        };
        if let Some(c) = self.cached.lock().unwrap().as_ref().filter(|c| fresh(c)) {
            return Ok(c.clone());
        }
        let provider = self
            .credentials
            .as_ref()
            .ok_or("no AWS credentials are configured")?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| format!("AWS credentials: {e}"))?;
        *self.cached.lock().unwrap() = Some(credentials.clone());
        Ok(credentials)
    }
}

fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
        .user_agent(concat!("sakuin/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// The endpoint the configuration names for the `bedrock` service, as the SDK's generated
/// clients resolve theirs: set on the configuration itself, or else through its service
/// configuration (the environment and the profile), or else the configuration's general one.
fn configured_endpoint(conf: &aws_config::SdkConfig) -> Option<String> {
    let own = if conf.get_origin("endpoint_url").is_client_config() {
        None
    } else {
        conf.service_config().and_then(|c| {
            let key = aws_types::service_config::ServiceConfigKey::builder()
                .service_id(SERVICE_ID)
                .env("AWS_ENDPOINT_URL")
                .profile("endpoint_url")
                .build()
                .expect("every field is set");
            c.load_config(key)
        })
    };
    // The SDK takes a set but empty variable for an endpoint and fails every call; here it
    // means none, as for the EC2 client.
    own.or_else(|| conf.endpoint_url().map(str::to_owned))
        .filter(|e| !e.trim().is_empty())
}

fn encode(value: &str) -> String {
    utf8_percent_encode(value, UNRESERVED).to_string()
}

fn read<T: serde::de::DeserializeOwned>(at: &At, answer: &[u8]) -> Result<T, BatchError> {
    serde_json::from_slice(answer).map_err(|e| BatchError::Unreadable {
        at: at.clone(),
        detail: e.to_string(),
    })
}

/// The error a refusal stands for, by Bedrock's error type (the `x-amzn-errortype` header, else
/// the body's `__type` or `code`) and, without one, by the HTTP status.
fn refusal(at: At, status: u16, error_type: Option<&str>, body: &[u8]) -> BatchError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    // `ValidationException:http://internal.amazon.com/coral/…` in the header,
    // `com.amazon.bedrock#ValidationException` in a body.
    let code = error_type
        .map(str::to_owned)
        .or_else(|| field("__type"))
        .or_else(|| field("code"))
        .map(|c| {
            let c = c.split(':').next().unwrap_or_default();
            c.rsplit('#').next().unwrap_or_default().trim().to_owned()
        })
        .filter(|c| !c.is_empty());
    let message = field("message")
        .or_else(|| field("Message"))
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "no message".to_owned()
            } else {
                text.chars().take(300).collect()
            }
        });
    match code.as_deref() {
        Some("ServiceQuotaExceededException") => BatchError::TooManyJobs { at, message },
        Some("ThrottlingException" | "TooManyRequestsException") => {
            BatchError::Throttled { at, message }
        }
        Some("ValidationException") => BatchError::Invalid { at, message },
        Some("ConflictException") => BatchError::Conflict { at, message },
        Some("ResourceNotFoundException") => BatchError::NotFound { at, message },
        Some("AccessDeniedException") => BatchError::AccessDenied { at, message },
        Some(code) => BatchError::Service {
            at,
            status,
            code: code.to_owned(),
            message,
        },
        None => match status {
            429 => BatchError::Throttled { at, message },
            403 => BatchError::AccessDenied { at, message },
            404 => BatchError::NotFound { at, message },
            409 => BatchError::Conflict { at, message },
            _ => BatchError::Service {
                at,
                status,
                code: "(none)".into(),
                message,
            },
        },
    }
}

/// The four operations, as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Get,
    List,
    Stop,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Create => "CreateModelInvocationJob",
            Operation::Get => "GetModelInvocationJob",
            Operation::List => "ListModelInvocationJobs",
            Operation::Stop => "StopModelInvocationJob",
        })
    }
}

/// Which call an error comes from, and the job it was about (its name on create, its id or ARN
/// after, the filter's name on a list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub operation: Operation,
    pub job: Option<String>,
}

impl At {
    fn new(operation: Operation, job: &str) -> Self {
        Self {
            operation,
            job: Some(job.to_owned()),
        }
    }

    fn list(filter: &JobFilter) -> Self {
        Self {
            operation: Operation::List,
            job: filter.name_contains.clone(),
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.job {
            Some(job) => write!(f, "{} of batch job {job}", self.operation),
            None => write!(f, "{}", self.operation),
        }
    }
}

/// What a call can end in besides its answer. [`TooManyJobs`](Self::TooManyJobs) passes when
/// one of the model's jobs ends, [`Throttled`](Self::Throttled) after a pause; the others are
/// decided by [`is_transient`](Self::is_transient).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// ServiceQuotaExceededException: the model's quota of batch inference jobs submitted and
    /// in progress ("Sum of in-progress and submitted batch inference jobs using a base model")
    /// is full. Wait for one of them to end, or stop one.
    #[error(
        "{at}: too many batch inference jobs in flight (ServiceQuotaExceededException): {message}"
    )]
    TooManyJobs { at: At, message: String },
    /// ThrottlingException (or a 429 without an error type): too many calls to the control
    /// plane; the same call succeeds after a pause.
    #[error("{at}: throttled (ThrottlingException): {message}")]
    Throttled { at: At, message: String },
    /// ValidationException: the request as it stands is refused (a name, a URI, a model that
    /// has no batch inference, too few records, an account without access to batch).
    #[error("{at}: refused (ValidationException): {message}")]
    Invalid { at: At, message: String },
    /// ConflictException: a job of that name exists, or the job cannot be stopped any more.
    #[error("{at}: conflict (ConflictException): {message}")]
    Conflict { at: At, message: String },
    /// ResourceNotFoundException: no such job (or model).
    #[error("{at}: not found (ResourceNotFoundException): {message}")]
    NotFound { at: At, message: String },
    /// AccessDeniedException: the caller may not make the call (or pass the role).
    #[error("{at}: access denied (AccessDeniedException): {message}")]
    AccessDenied { at: At, message: String },
    /// Any other answer: InternalServerException, a 5xx, or an error type this client does
    /// not know.
    #[error("{at}: {status} {code}: {message}")]
    Service {
        at: At,
        status: u16,
        code: String,
        message: String,
    },
    /// No answer: the connection or the time limit failed. A create may have been made:
    /// send it again with the same `client_request_token`.
    #[error("{at}: {detail}")]
    NoAnswer { at: At, detail: String },
    /// A success whose body is not what the API answers.
    #[error("{at}: the answer could not be read: {detail}")]
    Unreadable { at: At, detail: String },
    /// No credentials to sign with, or a request that could not be signed.
    #[error("{at}: could not be signed: {detail}")]
    Signing { at: At, detail: String },
}

impl BatchError {
    /// The call and job the error is about.
    pub fn at(&self) -> &At {
        match self {
            BatchError::TooManyJobs { at, .. }
            | BatchError::Throttled { at, .. }
            | BatchError::Invalid { at, .. }
            | BatchError::Conflict { at, .. }
            | BatchError::NotFound { at, .. }
            | BatchError::AccessDenied { at, .. }
            | BatchError::Service { at, .. }
            | BatchError::NoAnswer { at, .. }
            | BatchError::Unreadable { at, .. }
            | BatchError::Signing { at, .. } => at,
        }
    }

    /// Whether the same call may succeed after a pause: throttling, the service's own faults
    /// and no answer. Not [`TooManyJobs`](Self::TooManyJobs): that one waits on a job's end,
    /// not on time.
    pub fn is_transient(&self) -> bool {
        match self {
            BatchError::Throttled { .. } | BatchError::NoAnswer { .. } => true,
            BatchError::Service { status, code, .. } => {
                *status >= 500
                    || matches!(
                        code.as_str(),
                        "InternalServerException" | "ServiceUnavailableException"
                    )
            }
            _ => false,
        }
    }
}

/// A job to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Unique among the account's jobs in the Region: 1–63 letters, digits and (not first)
    /// `-`, `+`, `.`.
    pub name: String,
    /// The service role Bedrock assumes to read the input and write the output.
    pub role_arn: String,
    /// A model that [supports batch inference](crate::embed::EmbeddingModel::supports_batch).
    pub model_id: String,
    /// `s3://bucket/prefix/` (every `.jsonl` object under it) or one `.jsonl` object.
    pub input_uri: String,
    /// `s3://bucket/prefix`: the output goes under `<this>/<job id>/`
    /// ([`records::OutputLocation`]).
    pub output_uri: String,
    /// Makes the create idempotent: a token Bedrock has seen answers its first job.
    pub client_request_token: Option<String>,
    /// How long the job may wait and run before it expires, 24–168 hours (unset: Bedrock's
    /// default).
    pub timeout_hours: Option<u32>,
}

/// A job's ARN (`arn:aws:bedrock:<region>:<account>:model-invocation-job/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobArn(String);

impl JobArn {
    pub fn new(arn: impl Into<String>) -> Self {
        Self(arn.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The job's id, the ARN's last segment (12 characters): the folder its output goes in.
    pub fn id(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for JobArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life: Submitted → Validating → Scheduled → InProgress → an end.
/// <https://docs.aws.amazon.com/bedrock/latest/APIReference/API_GetModelInvocationJob.html>
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "String")]
pub enum JobStatus {
    Submitted,
    /// Checking the role's access to S3, the files' format and the record quotas (not the
    /// records' bodies, whose errors come back per record).
    Validating,
    /// Validated and queued.
    Scheduled,
    /// Running; output appears as records are processed.
    InProgress,
    Completed,
    /// Ended with some records in error (or, in Bedrock's words, not all processed in time).
    PartiallyCompleted,
    Failed,
    Stopping,
    Stopped,
    /// Scheduled but not begun before the job's timeout.
    Expired,
    /// A status this client does not know, as Bedrock wrote it.
    Other(String),
}

impl JobStatus {
    pub fn as_str(&self) -> &str {
        match self {
            JobStatus::Submitted => "Submitted",
            JobStatus::Validating => "Validating",
            JobStatus::Scheduled => "Scheduled",
            JobStatus::InProgress => "InProgress",
            JobStatus::Completed => "Completed",
            JobStatus::PartiallyCompleted => "PartiallyCompleted",
            JobStatus::Failed => "Failed",
            JobStatus::Stopping => "Stopping",
            JobStatus::Stopped => "Stopped",
            JobStatus::Expired => "Expired",
            JobStatus::Other(s) => s,
        }
    }

    /// Whether the job has ended: it changes no more, and what output it has is written. An
    /// unknown status has not (keep polling, and say what it is).
    pub fn has_ended(&self) -> bool {
        matches!(
            self,
            JobStatus::Completed
                | JobStatus::PartiallyCompleted
                | JobStatus::Failed
                | JobStatus::Stopped
                | JobStatus::Expired
        )
    }
}

impl From<String> for JobStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "Submitted" => JobStatus::Submitted,
            "Validating" => JobStatus::Validating,
            "Scheduled" => JobStatus::Scheduled,
            "InProgress" => JobStatus::InProgress,
            "Completed" => JobStatus::Completed,
            "PartiallyCompleted" => JobStatus::PartiallyCompleted,
            "Failed" => JobStatus::Failed,
            "Stopping" => JobStatus::Stopping,
            "Stopped" => JobStatus::Stopped,
            "Expired" => JobStatus::Expired,
            _ => JobStatus::Other(s),
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as GetModelInvocationJob (or, per job, ListModelInvocationJobs) describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub arn: JobArn,
    pub name: String,
    pub model_id: String,
    pub status: JobStatus,
    /// Why it failed, when it did (Bedrock's words).
    pub message: Option<String>,
    pub client_request_token: Option<String>,
    pub input_uri: Option<String>,
    pub output_uri: Option<String>,
    pub submit_time: Option<DateTime<Utc>>,
    pub last_modified_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// When a job not yet begun expires.
    pub expiration_time: Option<DateTime<Utc>>,
    pub records: RecordCounts,
}

/// The job's record counts, where Bedrock reports them (newer responses; older ones have
/// none, and `manifest.json.out` has them once the job has ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordCounts {
    pub total: Option<u64>,
    pub processed: Option<u64>,
    pub succeeded: Option<u64>,
    pub failed: Option<u64>,
}

/// Which jobs a list asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    /// Jobs whose name contains this.
    pub name_contains: Option<String>,
    /// Jobs per page, 1–1000.
    pub max_results: Option<u32>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireJob {
    job_arn: String,
    #[serde(default)]
    job_name: String,
    #[serde(default)]
    model_id: String,
    status: Option<JobStatus>,
    message: Option<String>,
    client_request_token: Option<String>,
    input_data_config: Option<Value>,
    output_data_config: Option<Value>,
    submit_time: Option<Value>,
    last_modified_time: Option<Value>,
    end_time: Option<Value>,
    job_expiration_time: Option<Value>,
    total_record_count: Option<u64>,
    processed_record_count: Option<u64>,
    success_record_count: Option<u64>,
    error_record_count: Option<u64>,
}

impl From<WireJob> for Job {
    fn from(w: WireJob) -> Self {
        let uri = |config: &Option<Value>, member: &str| {
            config
                .as_ref()
                .and_then(|c| c.get(member))
                .and_then(|c| c.get("s3Uri"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Job {
            input_uri: uri(&w.input_data_config, "s3InputDataConfig"),
            output_uri: uri(&w.output_data_config, "s3OutputDataConfig"),
            arn: JobArn(w.job_arn),
            name: w.job_name,
            model_id: w.model_id,
            status: w.status.unwrap_or_else(|| JobStatus::Other(String::new())),
            message: w.message.filter(|m| !m.is_empty()),
            client_request_token: w.client_request_token,
            submit_time: timestamp(w.submit_time),
            last_modified_time: timestamp(w.last_modified_time),
            end_time: timestamp(w.end_time),
            expiration_time: timestamp(w.job_expiration_time),
            records: RecordCounts {
                total: w.total_record_count,
                processed: w.processed_record_count,
                succeeded: w.success_record_count,
                failed: w.error_record_count,
            },
        }
    }
}

/// An ISO 8601 time as the service writes them (or epoch seconds, as some JSON protocols do);
/// `None` for anything else rather than the whole answer unread.
fn timestamp(value: Option<Value>) -> Option<DateTime<Utc>> {
    match value? {
        Value::String(s) => DateTime::parse_from_rfc3339(&s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Value::Number(n) => {
            let seconds = n.as_f64()?;
            DateTime::from_timestamp_millis((seconds * 1000.0).round() as i64)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> At {
        At::new(Operation::Create, "sakuin-backfill-1")
    }

    #[test]
    fn refusals_map_to_their_variants_by_header_body_or_status() {
        let quota = refusal(
            at(),
            400,
            Some("ServiceQuotaExceededException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            br#"{"message":"You have reached the quota of 3 in-progress and submitted batch inference jobs"}"#,
        );
        assert!(matches!(quota, BatchError::TooManyJobs { .. }), "{quota:?}");
        assert!(!quota.is_transient());
        let text = quota.to_string();
        assert!(
            text.contains("CreateModelInvocationJob")
                && text.contains("sakuin-backfill-1")
                && text.contains("quota of 3"),
            "{text}"
        );

        // The type in the body only, in either spelling.
        let throttled = refusal(
            at(),
            400,
            None,
            br#"{"__type":"com.amazonaws.bedrock#ThrottlingException","message":"slow down"}"#,
        );
        assert!(
            matches!(&throttled, BatchError::Throttled { message, .. } if message == "slow down")
        );
        assert!(throttled.is_transient());
        let invalid = refusal(
            at(),
            400,
            None,
            br#"{"code":"ValidationException","Message":"1 validation error detected"}"#,
        );
        assert!(
            matches!(&invalid, BatchError::Invalid { message, .. } if message.contains("1 validation"))
        );

        for (code, check) in [
            (
                "ConflictException",
                (|e: &BatchError| matches!(e, BatchError::Conflict { .. }))
                    as fn(&BatchError) -> bool,
            ),
            ("ResourceNotFoundException", |e| {
                matches!(e, BatchError::NotFound { .. })
            }),
            ("AccessDeniedException", |e| {
                matches!(e, BatchError::AccessDenied { .. })
            }),
        ] {
            let e = refusal(at(), 400, Some(code), br#"{"message":"m"}"#);
            assert!(check(&e), "{code}: {e:?}");
            assert!(!e.is_transient(), "{code}");
        }

        // No error type: the status decides.
        assert!(matches!(
            refusal(at(), 429, None, b""),
            BatchError::Throttled { .. }
        ));
        assert!(matches!(
            refusal(at(), 403, None, b"<html>denied</html>"),
            BatchError::AccessDenied { message, .. } if message == "<html>denied</html>"
        ));
        let fault = refusal(
            at(),
            500,
            Some("InternalServerException"),
            br#"{"message":"oops"}"#,
        );
        assert!(
            matches!(&fault, BatchError::Service { status: 500, code, .. } if code == "InternalServerException")
        );
        assert!(fault.is_transient());
        let unknown = refusal(at(), 400, Some("BrandNewException"), b"{}");
        assert!(
            matches!(&unknown, BatchError::Service { code, message, .. } if code == "BrandNewException" && message == "{}")
        );
        assert!(!unknown.is_transient());
        assert_eq!(unknown.at(), &at());
    }

    #[test]
    fn statuses_parse_and_unknown_ones_are_kept() {
        for name in [
            "Submitted",
            "Validating",
            "Scheduled",
            "InProgress",
            "Completed",
            "PartiallyCompleted",
            "Failed",
            "Stopping",
            "Stopped",
            "Expired",
        ] {
            let status = JobStatus::from(name.to_owned());
            assert!(!matches!(status, JobStatus::Other(_)), "{name}");
            assert_eq!(status.as_str(), name);
        }
        let later = JobStatus::from("Paused".to_owned());
        assert_eq!(later, JobStatus::Other("Paused".into()));
        assert!(!later.has_ended());
        assert!(JobStatus::PartiallyCompleted.has_ended() && JobStatus::Expired.has_ended());
        assert!(!JobStatus::Stopping.has_ended() && !JobStatus::InProgress.has_ended());
    }

    #[test]
    fn a_description_reads_into_a_job() {
        let wire: WireJob = serde_json::from_value(json!({
            "jobArn": "arn:aws:bedrock:ap-northeast-1:123456789012:model-invocation-job/abc123def456",
            "jobName": "sakuin-1", "modelId": "amazon.titan-embed-text-v2:0",
            "clientRequestToken": "tok1", "roleArn": "arn:aws:iam::123456789012:role/r",
            "status": "PartiallyCompleted", "message": "",
            "submitTime": "2025-01-02T03:04:05.678Z", "endTime": "2025-01-02T04:00:00Z",
            "lastModifiedTime": 1735787045.5,
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://b/in/", "s3InputFormat": "JSONL"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://b/out"}},
            "totalRecordCount": 300, "processedRecordCount": 300, "successRecordCount": 290,
            "errorRecordCount": 10, "vpcConfig": {"subnetIds": ["s"]}, "somethingNew": true
        }))
        .unwrap();
        let job = Job::from(wire);
        assert_eq!(job.arn.id(), "abc123def456");
        assert_eq!(job.status, JobStatus::PartiallyCompleted);
        assert_eq!(job.message, None);
        assert_eq!(job.input_uri.as_deref(), Some("s3://b/in/"));
        assert_eq!(job.output_uri.as_deref(), Some("s3://b/out"));
        assert_eq!(
            job.submit_time.unwrap().to_rfc3339(),
            "2025-01-02T03:04:05.678+00:00"
        );
        assert_eq!(job.last_modified_time.unwrap().timestamp(), 1_735_787_045);
        assert!(job.end_time.is_some() && job.expiration_time.is_none());
        assert_eq!(
            job.records,
            RecordCounts {
                total: Some(300),
                processed: Some(300),
                succeeded: Some(290),
                failed: Some(10)
            }
        );
        // An older answer without counts.
        let bare: WireJob =
            serde_json::from_value(json!({"jobArn": "x/y", "status": "New"})).unwrap();
        let bare = Job::from(bare);
        assert_eq!(bare.records, RecordCounts::default());
        assert_eq!(bare.status, JobStatus::Other("New".into()));
    }

    #[test]
    fn an_arn_goes_in_the_path_encoded() {
        assert_eq!(
            encode("arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456"),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Amodel-invocation-job%2Fabc123def456"
        );
        assert_eq!(encode("abc123def456"), "abc123def456");
        assert_eq!(encode("a+b c=/"), "a%2Bb%20c%3D%2F");
    }

    /// A profile or environment that names an endpoint for the `Bedrock` service id, as
    /// aws-config's own service configuration does for `AWS_ENDPOINT_URL_BEDROCK`.
    #[derive(Debug)]
    struct Named(&'static str);

    impl aws_types::service_config::LoadServiceConfig for Named {
        fn load_config(
            &self,
            key: aws_types::service_config::ServiceConfigKey<'_>,
        ) -> Option<String> {
            (key.service_id() == "Bedrock"
                && key.env() == "AWS_ENDPOINT_URL"
                && key.profile() == "endpoint_url")
                .then(|| self.0.to_owned())
        }
    }

    fn conf(service: Option<&'static str>, general: Option<&str>) -> aws_config::SdkConfig {
        let mut b = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("ap-northeast-1"))
            .behavior_version(aws_config::BehaviorVersion::latest());
        if let Some(url) = service {
            b = b.service_config(Named(url));
        }
        if let Some(url) = general {
            b = b.endpoint_url(url);
        }
        b.build()
    }

    #[test]
    fn the_endpoint_is_the_services_own_then_the_general_one_then_the_regions() {
        let public = BedrockBatch::from_sdk(&conf(None, None));
        assert_eq!(
            public.endpoint(),
            "https://bedrock.ap-northeast-1.amazonaws.com"
        );
        let own = BedrockBatch::from_sdk(&conf(Some("http://127.0.0.1:8900/"), None));
        assert_eq!(own.endpoint(), "http://127.0.0.1:8900");
        let empty = BedrockBatch::from_sdk(&conf(Some(""), None));
        assert_eq!(
            empty.endpoint(),
            "https://bedrock.ap-northeast-1.amazonaws.com"
        );
        // Set on the configuration in code, it wins over the environment, as in the SDK.
        let mut b = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("ap-northeast-1"))
            .service_config(Named("http://from-env"))
            .endpoint_url("http://in-code");
        b.insert_origin("endpoint_url", aws_types::origin::Origin::shared_config());
        assert_eq!(
            BedrockBatch::from_sdk(&b.build()).endpoint(),
            "http://in-code"
        );
        // Without that origin, as `AWS_ENDPOINT_URL` loads it: the service's own wins.
        let both = BedrockBatch::from_sdk(&conf(Some("http://own"), Some("http://general")));
        assert_eq!(both.endpoint(), "http://own");
        let general = BedrockBatch::from_sdk(&conf(None, Some("http://general")));
        assert_eq!(general.endpoint(), "http://general");
        assert_eq!(
            format!("{general:?}"),
            "BedrockBatch { endpoint: \"http://general\", region: \"ap-northeast-1\", .. }"
        );
    }
}
