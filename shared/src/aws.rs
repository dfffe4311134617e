//! Building AWS SDK clients once per container, with the settings each service needs here.

pub mod bedrock_batch;
pub mod ec2;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use crate::config::{ConfigError, Env};
use crate::es::{AuthFuture, EsAuth};

/// The shared SDK configuration: region, credentials and `AWS_ENDPOINT_URL_*` from the
/// environment, as every SDK reads them.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// S3, honouring `S3_FORCE_PATH_STYLE` for local emulators.
pub fn s3_client(conf: &aws_config::SdkConfig, env: &mut Env) -> aws_sdk_s3::Client {
    let path_style = env.flag("S3_FORCE_PATH_STYLE", false);
    let s3 = aws_sdk_s3::config::Builder::from(conf)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

pub fn sqs_client(conf: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(conf)
}

/// Bedrock Runtime with the SDK's own retries off: `embed_all` retries against the invocation's
/// deadline and counts throttles. Each attempt still has a hard time limit.
pub fn bedrock_client(conf: &aws_config::SdkConfig) -> aws_sdk_bedrockruntime::Client {
    let bedrock = aws_sdk_bedrockruntime::config::Builder::from(conf)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
        .build();
    aws_sdk_bedrockruntime::Client::from_conf(bedrock)
}

/// Reads Elasticsearch credentials from Secrets Manager, and the client certificate when the
/// secret holds one: at start-up.
pub async fn es_credentials_from_secret(
    conf: &aws_config::SdkConfig,
    secret_id: &str,
) -> Result<crate::config::SecretCredentials, ConfigError> {
    let client = aws_sdk_secretsmanager::Client::new(conf);
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| ConfigError {
            problems: vec![format!(
                "ES_SECRET_ID {secret_id}: could not be read: {}",
                crate::error::error_chain(&e.into_service_error())
            )],
        })?;
    let text = out.secret_string().ok_or_else(|| ConfigError {
        problems: vec![format!(
            "ES_SECRET_ID {secret_id}: the secret has no string value"
        )],
    })?;
    crate::config::credentials_from_secret(secret_id, text)
}

/// The credentials alone, as read again after a 401 (see [`es_auth_refresher`]).
pub async fn es_auth_from_secret(
    conf: &aws_config::SdkConfig,
    secret_id: &str,
) -> Result<EsAuth, ConfigError> {
    let credentials = es_credentials_from_secret(conf, secret_id).await?;
    credentials.auth.ok_or_else(|| ConfigError {
        problems: vec![format!(
            "ES_SECRET_ID {secret_id}: holds a client certificate but neither api_key nor username and password"
        )],
    })
}

/// Reads the credentials again through [`es_auth_from_secret`], for the Elasticsearch client's
/// refresh after a 401 (`EsClient::with_auth_refresh`). Each read is cut off at `timeout`, so a
/// Secrets Manager that does not answer holds the refused request no longer than that; its
/// errors name the secret, never its value.
pub fn es_auth_refresher(
    conf: &aws_config::SdkConfig,
    secret_id: &str,
    timeout: Duration,
) -> impl Fn() -> AuthFuture + Send + Sync + 'static {
    let (conf, secret_id) = (conf.clone(), secret_id.to_owned());
    move || -> AuthFuture {
        let (conf, id) = (conf.clone(), secret_id.clone());
        Box::pin(async move {
            match tokio::time::timeout(timeout, es_auth_from_secret(&conf, &id)).await {
                Ok(Ok(auth)) => Ok(auth),
                Ok(Err(e)) => Err(e.problems.join(", ")),
                Err(_) => Err(format!(
                    "ES_SECRET_ID {id}: Secrets Manager did not answer within {} s",
                    timeout.as_secs()
                )),
            }
        })
    }
}

pub use aws_config::SdkConfig;
pub use aws_sdk_lambda::Client as LambdaClient;

/// Lambda, for ingest's continuations (honours `AWS_ENDPOINT_URL_LAMBDA`).
pub fn lambda_client(conf: &aws_config::SdkConfig) -> aws_sdk_lambda::Client {
    aws_sdk_lambda::Client::new(conf)
}
