//! The AWS dependencies: the source bucket, the chunk and intake queues and their dead-letter
//! queues, the Bedrock model, the Elasticsearch credentials' secret. Each failure is sorted into
//! the network path (endpoint / NAT), permissions, a missing resource, throttling or the service
//! itself.

use std::time::Duration;

use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

use super::{CheckResult, Layer, ProbeDeps, timed};
use crate::config::ProbeConfig;
use crate::config::credentials_from_secret;
use crate::embed::InputPurpose;
use crate::error::error_chain;
use crate::es::EsAuth;
use crate::failure::FailureReason;

/// How an AWS call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CallFailure {
    /// No answer within the budget.
    Timeout(Duration),
    /// No HTTP answer at all: DNS, connect, TLS to the endpoint.
    Network(String),
    /// An answer that says no.
    Service {
        status: u16,
        code: String,
        message: String,
    },
}

fn sort_failure<E>(err: &SdkError<E>) -> CallFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => CallFailure::Service {
            status: err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0),
            code: err.code().unwrap_or("Unknown").to_owned(),
            message: err.message().unwrap_or("no message").to_owned(),
        },
        _ => CallFailure::Network(error_chain(err)),
    }
}

/// One SDK call, cut off at `budget` (the SDK's own retries may otherwise wait much longer).
async fn bounded<T, E, F>(budget: Duration, call: F) -> Result<T, CallFailure>
where
    F: std::future::Future<Output = Result<T, SdkError<E>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match tokio::time::timeout(budget, call).await {
        Err(_) => Err(CallFailure::Timeout(budget)),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(sort_failure(&e)),
    }
}

fn unreachable_service(
    name: &str,
    ms: u64,
    what: &str,
    failure: &CallFailure,
    endpoint: &str,
) -> CheckResult {
    let detail = match failure {
        CallFailure::Timeout(t) => {
            format!("{what}: no answer from {endpoint} within {} s", t.as_secs())
        }
        CallFailure::Network(e) => format!("{what}: {endpoint} could not be reached ({e})"),
        CallFailure::Service { .. } => unreachable!("only for network failures"),
    };
    let hint = match endpoint {
        "S3" => "in a VPC, the Lambda subnets' route table needs the S3 gateway endpoint (com.amazonaws.<region>.s3) or a route to a NAT gateway; from a shell, check AWS_REGION and the proxy settings".to_owned(),
        other => format!(
            "in a VPC, the functions need an interface endpoint for {other} (private DNS on, its security group allowing 443 from the functions' security group) or a route to a NAT gateway; from a shell, check AWS_REGION and the proxy settings"
        ),
    };
    CheckResult::fail(name, Layer::Network, ms, detail).hint(hint)
}

pub(super) async fn check_s3(deps: &ProbeDeps) -> Vec<CheckResult> {
    const NAME: &str = "s3.bucket";
    let Some(bucket) = &deps.config.bucket else {
        return Vec::new();
    };
    let region = region_of(deps.aws.s3.config().region());
    let call = async {
        let sent = deps.aws.s3.head_bucket().bucket(bucket).send().await;
        // S3 names a bucket's real region in a header, also on errors.
        let header_region = sent
            .as_ref()
            .err()
            .and_then(|e| e.raw_response())
            .and_then(|r| r.headers().get("x-amz-bucket-region"))
            .map(str::to_owned);
        (sent, header_region)
    };
    let (answer, ms) = timed(tokio::time::timeout(deps.config.timeout, call)).await;
    let result = match answer {
        Err(_) => Err((CallFailure::Timeout(deps.config.timeout), None)),
        Ok((Ok(out), _)) => Ok(out),
        Ok((Err(e), header_region)) => Err((sort_failure(&e), header_region)),
    };
    vec![match result {
        Ok(out) => CheckResult::pass(
            NAME,
            ms,
            format!(
                "{bucket} exists and the role may list it{}",
                out.bucket_region()
                    .map(|r| format!(" (region {r})"))
                    .unwrap_or_default()
            ),
        ),
        Err((f @ (CallFailure::Timeout(_) | CallFailure::Network(_)), _)) => {
            unreachable_service(NAME, ms, bucket, &f, "S3")
        }
        Err((
            CallFailure::Service {
                status,
                code,
                message,
            },
            header_region,
        )) => {
            let answer = BucketAnswer {
                status,
                code: &code,
                message: &message,
                header_region,
            };
            bucket_refusal(bucket, &region, answer, ms)
        }
    }]
}

/// S3's refusal of HeadBucket, and the Region it says the bucket is in.
struct BucketAnswer<'a> {
    status: u16,
    code: &'a str,
    message: &'a str,
    header_region: Option<String>,
}

/// The bucket is elsewhere, missing, or not the role's to list.
fn bucket_refusal(bucket: &str, region: &str, answer: BucketAnswer<'_>, ms: u64) -> CheckResult {
    const NAME: &str = "s3.bucket";
    let BucketAnswer {
        status,
        code,
        message,
        header_region,
    } = answer;
    match (status, header_region) {
        (301, Some(r)) | (400, Some(r)) if r != region => CheckResult::fail(
            NAME,
            Layer::Region,
            ms,
            format!("{bucket} is in {r}, but the probe calls S3 in {region}"),
        )
        .hint("run the functions in the bucket's Region, or set AWS_REGION to it when running from a shell"),
        (404, _) => CheckResult::fail(NAME, Layer::NotFound, ms, format!("{bucket} does not exist (404 {code})"))
            .hint("check SOURCE_BUCKET: the bucket name (not an ARN or URL), in this account"),
        (403, _) => CheckResult::fail(NAME, Layer::Access, ms, format!("{bucket}: access denied (403 {code})"))
            .hint(format!(
                "the role needs s3:ListBucket on arn:aws:s3:::{bucket}; also check the bucket policy and, in a VPC, the S3 gateway endpoint's policy"
            )),
        (s, _) => CheckResult::fail(NAME, Layer::Service, ms, format!("{bucket}: HTTP {s} {code}: {message}")),
    }
}

/// One queue the probe watches.
pub(super) struct QueueCheck<'a> {
    pub name: &'static str,
    pub url: Option<&'a str>,
    /// The variable `url` comes from.
    pub var: &'static str,
    /// For a source queue, its dead-letter queue as configured (URL, variable); `None` for a
    /// dead-letter queue.
    pub dead_letter: Option<(Option<&'a str>, &'static str)>,
    /// What the dead letters are and who failed them, for the hint.
    pub letters: &'static str,
    pub consumer: &'static str,
    /// `sakuin redrive --queue <this>`.
    pub redrive: &'static str,
}

/// The chunk queue, the intake queue and their dead-letter queues, in report order.
pub(super) fn queue_checks<'a>(config: &'a ProbeConfig) -> [QueueCheck<'a>; 4] {
    let chunk = |name, url: &'a Option<String>, var, dead_letter| QueueCheck {
        name,
        url: url.as_deref(),
        var,
        dead_letter,
        letters: "chunk messages",
        consumer: "embed-index",
        redrive: "chunk",
    };
    let intake = |name, url: &'a Option<String>, var, dead_letter| QueueCheck {
        name,
        url: url.as_deref(),
        var,
        dead_letter,
        letters: "S3 notifications, continuations or backfill pages",
        consumer: "ingest",
        redrive: "intake",
    };
    [
        chunk(
            "sqs.queue",
            &config.queue_url,
            "CHUNK_QUEUE_URL",
            Some((
                config.dead_letter_queue_url.as_deref(),
                "DEAD_LETTER_QUEUE_URL",
            )),
        ),
        chunk(
            "sqs.dead_letter_queue",
            &config.dead_letter_queue_url,
            "DEAD_LETTER_QUEUE_URL",
            None,
        ),
        intake(
            "sqs.intake_queue",
            &config.intake_queue_url,
            "INGEST_QUEUE_URL",
            Some((
                config.intake_dead_letter_queue_url.as_deref(),
                "INGEST_DEAD_LETTER_QUEUE_URL",
            )),
        ),
        intake(
            "sqs.intake_dead_letter_queue",
            &config.intake_dead_letter_queue_url,
            "INGEST_DEAD_LETTER_QUEUE_URL",
            None,
        ),
    ]
}

/// Depth and redrive of the chunk queue, the intake queue and their dead-letter queues, side by
/// side. SQS's GetQueueAttributes has no "age of the oldest message" (that is only the
/// CloudWatch metric `AWS/SQS ApproximateAgeOfOldestMessage`, which the template alarms on);
/// reading it here would need a CloudWatch call, and peeking at messages would count as a
/// receive.
pub(super) async fn check_queues(deps: &ProbeDeps) -> Vec<CheckResult> {
    let checks = queue_checks(&deps.config);
    let runs = checks.iter().filter_map(|q| {
        let url = q.url?;
        Some(check_queue(deps, q, url))
    });
    futures::future::join_all(runs).await
}

async fn check_queue(deps: &ProbeDeps, q: &QueueCheck<'_>, url: &str) -> CheckResult {
    use QueueAttributeName as A;
    let name = q.name;
    let (result, ms) = timed(bounded(
        deps.config.timeout,
        deps.aws
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .attribute_names(A::RedrivePolicy)
            .send(),
    ))
    .await;
    let r = match result {
        Ok(r) => r,
        Err(failure) => return queue_failure(q, url, ms, failure),
    };
    let attr = |a: A| {
        r.attributes()
            .and_then(|m| m.get(&a))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let visible = attr(A::ApproximateNumberOfMessages);
    let in_flight = attr(A::ApproximateNumberOfMessagesNotVisible);
    let delayed = attr(A::ApproximateNumberOfMessagesDelayed);
    let detail = format!("{visible} waiting, {in_flight} in flight, {delayed} delayed");
    let Some((dlq_url, dlq_var)) = q.dead_letter else {
        return dead_letters(q, ms, visible + in_flight, detail);
    };
    let redrive: Option<Value> = r
        .attributes()
        .and_then(|m| m.get(&A::RedrivePolicy))
        .and_then(|v| serde_json::from_str(v).ok());
    let result = match redrive {
        Some(policy) => redrive_result(name, ms, detail, &policy, (dlq_url, dlq_var)),
        None => CheckResult::warn(name, ms, format!("{detail}; no redrive policy"))
            .hint("without a dead-letter queue a poison message is retried until the retention period ends: set a redrive policy"),
    };
    result
        .metric("QueueBacklog", visible as f64)
        .metric("QueueInFlight", in_flight as f64)
}

/// A queue that could not be read: unreachable, missing, or not the role's to read.
fn queue_failure(q: &QueueCheck<'_>, url: &str, ms: u64, failure: CallFailure) -> CheckResult {
    let name = q.name;
    let CallFailure::Service {
        status,
        code,
        message,
    } = failure
    else {
        return unreachable_service(name, ms, url, &failure, "SQS");
    };
    if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") {
        CheckResult::fail(
            name,
            Layer::NotFound,
            ms,
            format!("{url} does not exist ({code})"),
        )
        .hint(format!(
            "check {}: the queue URL of this account and Region",
            q.var
        ))
    } else if status == 403 || code.contains("AccessDenied") {
        CheckResult::fail(name, Layer::Access, ms, format!("{url}: access denied ({code}: {message})"))
            .hint("the role needs sqs:GetQueueAttributes on the queue; also check the queue policy and, in a VPC, the SQS endpoint's policy")
    } else {
        let detail = format!("{url}: HTTP {status} {code}: {message}");
        CheckResult::fail(name, Layer::Service, ms, detail)
    }
}

/// A dead-letter queue: anything in it needs a person.
fn dead_letters(q: &QueueCheck<'_>, ms: u64, depth: u64, detail: String) -> CheckResult {
    let result = if depth > 0 {
        CheckResult::warn(q.name, ms, format!("{depth} dead letter(s): {detail}")).hint(format!(
            "{} that failed every retry: read {}'s errors in its log group, fix the cause, then move them back with `sakuin redrive --queue {}`",
            q.letters, q.consumer, q.redrive
        ))
    } else {
        CheckResult::pass(q.name, ms, detail)
    };
    result.metric("DeadLetterQueueDepth", depth as f64)
}

/// A queue's redrive policy: where failed messages go, and whether that is the dead-letter
/// queue the configuration names.
fn redrive_result(
    name: &str,
    ms: u64,
    mut detail: String,
    policy: &Value,
    (dlq_url, dlq_var): (Option<&str>, &str),
) -> CheckResult {
    let target = policy["deadLetterTargetArn"]
        .as_str()
        .map(|arn| arn.rsplit(':').next().unwrap_or(arn).to_owned())
        .unwrap_or_default();
    let receives = policy["maxReceiveCount"].as_u64().or_else(|| {
        policy["maxReceiveCount"]
            .as_str()
            .and_then(|s| s.parse().ok())
    });
    detail.push_str(&format!(
        "; failed messages move to {target} after {} receives",
        receives
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into())
    ));
    match dlq_url.map(queue_name) {
        Some(configured) if configured != target => CheckResult::warn(name, ms, detail).hint(format!(
            "the queue's redrive policy sends to {target}, but {dlq_var} names {configured}: the probe watches the wrong dead-letter queue"
        )),
        _ => CheckResult::pass(name, ms, detail),
    }
}

fn queue_name(url: &str) -> String {
    url.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(url)
        .to_owned()
}

fn region_of(region: Option<&aws_sdk_s3::config::Region>) -> String {
    region
        .map(|r| r.as_ref().to_owned())
        .unwrap_or_else(|| "no Region configured".into())
}

pub(super) async fn check_bedrock(deps: &ProbeDeps) -> Vec<CheckResult> {
    const NAME: &str = "bedrock.model";
    let model = &deps.config.model;
    let region = deps
        .aws
        .bedrock
        .config()
        .region()
        .map(|r| r.as_ref().to_owned())
        .unwrap_or_else(|| "no Region configured".into());
    // Bedrock answers more slowly than the rest; give it a longer leash than the other checks.
    let budget = deps.config.timeout * 3;
    let call = deps
        .aws
        .bedrock
        .invoke_model()
        .model_id(&model.id)
        .content_type("application/json")
        .accept("application/json")
        .body(Blob::new(
            model.request_body(&["probe"], InputPurpose::Query),
        ))
        .send();
    let (result, ms) = timed(bounded(budget, call)).await;
    vec![match result {
        Ok(out) => match model.parse_response(out.body.as_ref(), 1) {
            Ok(parsed) => {
                let dims = parsed.vectors.first().map(Vec::len).unwrap_or(0);
                if dims == model.dimensions {
                    CheckResult::pass(
                        NAME,
                        ms,
                        format!("{} answered a one-word embedding of {dims} dimensions in {region}", model.id),
                    )
                } else {
                    CheckResult::fail(
                        NAME,
                        Layer::Response,
                        ms,
                        format!("{} answered {dims} dimensions, but {} are configured", model.id, model.dimensions),
                    )
                    .hint("EMBEDDING_DIMENSIONS and the index mapping must match what the model returns")
                }
            }
            Err(e) => CheckResult::fail(NAME, Layer::Response, ms, format!("{}: {e}", model.id))
                .hint("the answer is not this model family's embedding response: check EMBEDDING_MODEL_ID"),
        },
        Err(CallFailure::Service {
            status,
            code,
            message,
        }) => {
            let refusal = BedrockRefusal::new(status, &code, &message);
            let (layer, detail, hint) = bedrock_failure(&refusal, &model.id, &region);
            CheckResult::fail(NAME, layer, ms, detail).hint(hint)
        }
        Err(f) => unreachable_service(NAME, ms, &model.id, &f, "bedrock-runtime"),
    }]
}

/// A Bedrock refusal: its reason, as embed-index counts (and retries) it, and what Bedrock said.
struct BedrockRefusal<'a> {
    reason: FailureReason,
    status: u16,
    code: &'a str,
    message: &'a str,
}

impl<'a> BedrockRefusal<'a> {
    fn new(status: u16, code: &'a str, message: &'a str) -> Self {
        let error = crate::embed::bedrock::classify_answer(status, code, message);
        Self {
            reason: FailureReason::of_embedding(&error),
            status,
            code,
            message,
        }
    }
}

/// Tells Bedrock's refusals apart by their reason: IAM or model access, throttling, a wrong id
/// or a request the model refuses, the service.
fn bedrock_failure(
    refusal: &BedrockRefusal<'_>,
    model: &str,
    region: &str,
) -> (Layer, String, String) {
    let BedrockRefusal {
        reason,
        status,
        code,
        message,
    } = *refusal;
    let lower = message.to_ascii_lowercase();
    match reason {
        FailureReason::AccessDenied => access_refusal(code, message, model, region),
        FailureReason::Throttled => (
            Layer::Throttled,
            format!("{model}: throttled ({code}: {message})"),
            "the account's requests- or tokens-per-minute quota for this model is used up (embed-index may be busy): lower EmbedMaxConcurrency or EMBED_CONCURRENCY, \
             or ask for more in Service Quotas"
                .into(),
        ),
        FailureReason::ModelRejected if code == "ResourceNotFoundException" => (
            Layer::NotFound,
            format!("{model} was not found in {region} ({message})"),
            "check EMBEDDING_MODEL_ID and that the model is offered in this Region".into(),
        ),
        FailureReason::ModelRejected
            if code == "ValidationException" && lower.contains("model identifier is invalid") =>
        {
            (
                Layer::NotFound,
                format!("{model} is not a model id Bedrock knows in {region} ({message})"),
                "check EMBEDDING_MODEL_ID (and use an inference-profile id such as us.cohere.embed-v4:0 where the model needs one)".into(),
            )
        }
        FailureReason::ModelRejected if status == 403 => access_refusal(code, message, model, region),
        FailureReason::ModelRejected => (
            Layer::Request,
            format!("{model} refused the request ({code}: {message})"),
            "the request does not fit the model: check EMBEDDING_DIMENSIONS, and whether the model needs an inference-profile id".into(),
        ),
        _ => (
            Layer::Service,
            format!("{model}: HTTP {status} {code}: {message}"),
            "Bedrock is failing or the model is not ready: retry later, and check the AWS Health Dashboard".into(),
        ),
    }
}

/// Access denied: the account's model access, or the role (or a policy above it).
fn access_refusal(code: &str, message: &str, model: &str, region: &str) -> (Layer, String, String) {
    let tail = model.rsplit('/').next().unwrap_or(model);
    let base = [
        "us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.",
    ]
    .iter()
    .find_map(|p| tail.strip_prefix(p))
    .unwrap_or(tail);
    let lower = message.to_ascii_lowercase();
    if lower.contains("access to the model") || lower.contains("model access") {
        (
            Layer::ModelAccess,
            format!("{model}: model access is not granted in {region} ({code}: {message})"),
            format!(
                "the account has not enabled this model: open the Amazon Bedrock console in {region}, Model access, and request access to {model} \
                 (for an inference profile, in every Region it routes to)"
            ),
        )
    } else {
        (
            Layer::Access,
            format!("{model}: the role may not invoke the model ({code}: {message})"),
            format!(
                "the function role needs bedrock:InvokeModel on arn:aws:bedrock:{region}::foundation-model/{base} (and on the inference-profile ARN for a profile id); \
                 a service control policy or the bedrock-runtime endpoint policy can also deny it"
            ),
        )
    }
}

pub(super) async fn check_secret(deps: &ProbeDeps) -> Vec<CheckResult> {
    const NAME: &str = "secretsmanager.secret";
    let Some(id) = &deps.config.es_secret_id else {
        return Vec::new();
    };
    let region = deps
        .aws
        .secrets
        .config()
        .region()
        .map(|r| r.as_ref().to_owned())
        .unwrap_or_else(|| "no Region configured".into());
    let (result, ms) = timed(bounded(
        deps.config.timeout,
        deps.aws.secrets.get_secret_value().secret_id(id).send(),
    ))
    .await;
    // Never print the secret: only its shape and, for basic auth, the user name.
    vec![match result {
        Ok(out) => match out.secret_string() {
            None => CheckResult::fail(NAME, Layer::Response, ms, format!("{id} has no string value (a binary secret?)"))
                .hint(r#"store the credentials as a JSON string: {"username":"…","password":"…"} or {"api_key":"…"}"#),
            Some(text) => match credentials_from_secret(id, text) {
                Ok(credentials) => {
                    let mut holds = match credentials.auth {
                        Some(EsAuth::ApiKey(_)) => "an API key".to_owned(),
                        Some(EsAuth::Basic { username, .. }) => {
                            format!("a username and password (user `{username}`)")
                        }
                        None => "no credentials".to_owned(),
                    };
                    if credentials.identity.is_some() {
                        holds.push_str(" and a client certificate with its key");
                    }
                    CheckResult::pass(NAME, ms, format!("{id} holds {holds}"))
                }
                Err(e) => CheckResult::fail(NAME, Layer::Response, ms, e.problems.join(", "))
                    .hint(r#"the secret must be JSON: {"username":"…","password":"…"} or {"api_key":"<the encoded API key>"}, with "client_certificate" and "client_key" (PEM) when the cluster requires client certificates"#),
            },
        },
        Err(f @ (CallFailure::Timeout(_) | CallFailure::Network(_))) => {
            unreachable_service(NAME, ms, id, &f, "Secrets Manager")
        }
        Err(CallFailure::Service { status, code, message }) => match code.as_str() {
            "ResourceNotFoundException" => CheckResult::fail(NAME, Layer::NotFound, ms, format!("{id}: no such secret in {region} ({message})"))
                .hint("check ES_SECRET_ID (name or full ARN) and the Region"),
            "AccessDeniedException" => CheckResult::fail(NAME, Layer::Access, ms, format!("{id}: access denied ({message})"))
                .hint("the role needs secretsmanager:GetSecretValue on the secret (check its resource policy too) and kms:Decrypt on its customer managed key"),
            "DecryptionFailure" => CheckResult::fail(NAME, Layer::Access, ms, format!("{id}: KMS could not decrypt the secret ({message})"))
                .hint("the role needs kms:Decrypt on the secret's KMS key (through Secrets Manager)"),
            "InvalidRequestException" => CheckResult::fail(NAME, Layer::Request, ms, format!("{id}: {message}"))
                .hint("the secret may be scheduled for deletion or have no current version"),
            _ => CheckResult::fail(NAME, Layer::Service, ms, format!("{id}: HTTP {status} {code}: {message}")),
        },
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bedrock_refusals_are_told_apart() {
        let stub_denied = "You don't have access to the model with the specified model ID.";
        let (layer, detail, hint) = bedrock_failure(
            &BedrockRefusal::new(403, "AccessDeniedException", stub_denied),
            "amazon.titan-embed-text-v2:0",
            "ap-northeast-1",
        );
        assert_eq!(layer, "model_access");
        assert!(
            detail.contains("ap-northeast-1") && hint.contains("Model access"),
            "{detail} / {hint}"
        );

        let iam = "User: arn:aws:sts::123456789012:assumed-role/probe/x is not authorized to perform: bedrock:InvokeModel on resource: arn:aws:bedrock:ap-northeast-1::foundation-model/amazon.titan-embed-text-v2:0 because no identity-based policy allows the bedrock:InvokeModel action";
        let (layer, _, hint) = bedrock_failure(
            &BedrockRefusal::new(403, "AccessDeniedException", iam),
            "amazon.titan-embed-text-v2:0",
            "ap-northeast-1",
        );
        assert_eq!(layer, "access");
        assert!(
            hint.contains("foundation-model/amazon.titan-embed-text-v2:0"),
            "{hint}"
        );

        assert_eq!(
            bedrock_failure(
                &BedrockRefusal::new(429, "ThrottlingException", "Too many requests"),
                "m",
                "r"
            )
            .0,
            "throttled"
        );
        assert_eq!(
            bedrock_failure(&BedrockRefusal::new(429, "Weird", "slow"), "m", "r").0,
            "throttled"
        );
        assert_eq!(
            bedrock_failure(
                &BedrockRefusal::new(
                    400,
                    "ValidationException",
                    "The provided model identifier is invalid."
                ),
                "m",
                "r"
            )
            .0,
            "not_found"
        );
        assert_eq!(
            bedrock_failure(
                &BedrockRefusal::new(400, "ValidationException", "Malformed input request"),
                "m",
                "r"
            )
            .0,
            "request"
        );
        assert_eq!(
            bedrock_failure(
                &BedrockRefusal::new(503, "ServiceUnavailableException", "later"),
                "m",
                "r"
            )
            .0,
            "service"
        );
    }

    #[test]
    fn queue_names_from_urls() {
        assert_eq!(
            queue_name("https://sqs.ap-northeast-1.amazonaws.com/123456789012/sakuin-dlq"),
            "sakuin-dlq"
        );
        assert_eq!(queue_name("http://127.0.0.1:5000/123456789012/q/"), "q");
    }
}
