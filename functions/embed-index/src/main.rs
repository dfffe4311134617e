//! `embed-index`: SQS chunk messages → Bedrock embeddings → Elasticsearch, with a partial batch
//! response.

use std::time::Duration;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sakuin::aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use sakuin::config::{EmbedIndexConfig, Env};
use sakuin::embed::bedrock::BedrockEmbedder;
use sakuin::embed_index::{EmbedIndexDeps, IndexSetupError, handle_batch};
use sakuin::es::EsClient;
use sakuin::queue::SqsQueue;
use sakuin::retry::Deadline;

/// How long a re-read of the Elasticsearch secret after a 401 may hold the refused request.
const SECRET_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Error> {
    sakuin::init_logging();
    let mut config = EmbedIndexConfig::from_env(&mut Env::from_process())?;
    let sdk = sakuin::aws::sdk_config().await;
    if let Some(secret_id) = &config.es_secret_id {
        let credentials = sakuin::aws::es_credentials_from_secret(&sdk, secret_id).await?;
        config.es.auth = credentials.auth;
        if credentials.identity.is_some() {
            config.es.client_identity = credentials.identity;
        }
    }
    let mut index = EsClient::new(&config.es)?;
    // A rotated secret: a 401 reads it again (at most every 30 s) instead of failing until the
    // container is recycled.
    if let Some(secret_id) = &config.es_secret_id {
        index = index.with_auth_refresh(
            EsClient::AUTH_REFRESH_INTERVAL,
            sakuin::aws::es_auth_refresher(&sdk, secret_id, SECRET_READ_TIMEOUT),
        );
    }
    let embedder = BedrockEmbedder::new(sakuin::aws::bedrock_client(&sdk), config.model.clone());
    // Chunks go back on their queue, with their vectors, when Elasticsearch stays unavailable.
    let requeue = config
        .requeue_url
        .clone()
        .map(|url| SqsQueue::new(sakuin::aws::sqs_client(&sdk), url));
    let deps = EmbedIndexDeps::new(embedder, index, requeue, config);
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let ms = event.context.deadline;
        deps.check_function_time(Deadline::from_lambda_deadline_ms(ms, Duration::ZERO).remaining());
        let deadline = Deadline::from_lambda_deadline_ms(ms, EmbedIndexConfig::RESPONSE_RESERVE);
        let (response, _) = handle_batch(deps, event.payload, deadline).await?;
        Ok::<SqsBatchResponse, IndexSetupError>(response)
    }))
    .await
}
