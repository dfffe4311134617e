//! `embed-index`: SQS chunk messages → Bedrock embeddings → Elasticsearch, with a partial batch
//! response.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sakuin::aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use sakuin::config::{EmbedIndexConfig, Env};
use sakuin::embed::bedrock::BedrockEmbedder;
use sakuin::embed::model::EmbeddingModel;
use sakuin::embed_index::{EmbedIndexDeps, IndexSetupError, handle_batch, handle_migrating_batch};
use sakuin::es::EsClient;
use sakuin::es::migration::Routing;
use sakuin::queue::SqsQueue;
use sakuin::retry::Deadline;

/// How long a re-read of the Elasticsearch secret after a 401 may hold the refused request.
const SECRET_READ_TIMEOUT: Duration = Duration::from_secs(5);
type Deps = EmbedIndexDeps<BedrockEmbedder, EsClient, SqsQueue>;

/// Where a batch is written: the alias's index (with the model it records holding), and while
/// a migration runs, the new model's index too.
struct Lanes {
    current: Arc<Deps>,
    target: Option<(String, Arc<Deps>)>,
    looked: Option<Instant>,
}

/// What the lanes are built from.
struct Parts {
    config: EmbedIndexConfig,
    embedder: BedrockEmbedder,
    index: EsClient,
    requeue: Option<SqsQueue>,
}

impl Parts {
    /// Deps writing `index` with `model`; `requeue` for the alias's index only.
    fn deps(&self, model: EmbeddingModel, index: EsClient, requeue: bool) -> Deps {
        let mut config = self.config.clone();
        config.model = model.clone();
        config.es.index = index.index.clone();
        let requeue = requeue.then(|| self.requeue.clone()).flatten();
        EmbedIndexDeps::new(self.embedder.with_model(model), index, requeue, config)
    }

    /// The model an index records, resolved; `None` (with a warning) when this build does not
    /// know it.
    fn model(id: &str, dimensions: usize) -> Option<EmbeddingModel> {
        EmbeddingModel::resolve(id, Some(dimensions))
            .or_else(|_| EmbeddingModel::resolve(id, None))
            .inspect_err(|e| tracing::warn!(model = id, error = %e, "the index records a model this build does not know"))
            .ok()
    }

    /// The lanes for what the alias stands for now.
    fn follow(&self, lanes: &mut Lanes, routing: &Routing) {
        if let Some(recorded) = &routing.model {
            let current = &lanes.current.config.model;
            if (recorded.model.as_str(), recorded.dimensions)
                != (current.id.as_str(), current.dimensions)
                && let Some(model) = Self::model(&recorded.model, recorded.dimensions)
            {
                tracing::warn!(index = %self.index.index, recorded = %recorded.model, configured = %self.config.model.id,
                    "the index records another model than EMBEDDING_MODEL_ID (a migration swapped it): writing with the index's; set the stack's EmbeddingModelId to it");
                lanes.current = Arc::new(self.deps(model, self.index.clone(), true));
            }
        }
        match &routing.migration {
            Some(m) if lanes.target.as_ref().is_none_or(|(to, _)| *to != m.to) => {
                if let Some(model) = Self::model(&m.model, m.dimensions) {
                    tracing::info!(from = %m.from, to = %m.to, model = %m.model, "a migration is under way: every batch is written to both indices");
                    // The current index by its own name (with the alias's markers), so a batch
                    // in flight when the alias moves writes its model where it belongs.
                    let current = self
                        .index
                        .for_index(&m.from)
                        .with_markers(self.index.marker_index());
                    let model_now = lanes.current.config.model.clone();
                    lanes.current = Arc::new(self.deps(model_now, current, true));
                    let deps = self.deps(model, self.index.for_index(&m.to), false);
                    lanes.target = Some((m.to.clone(), Arc::new(deps)));
                }
            }
            Some(_) => {}
            None => {
                if lanes.target.take().is_some() || lanes.current.index.index != self.index.index {
                    // The migration ended (swapped): the alias again, with its index's model.
                    let model = lanes.current.config.model.clone();
                    lanes.current = Arc::new(self.deps(model, self.index.clone(), true));
                }
            }
        }
    }
}

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
    let parts = Parts {
        config: config.clone(),
        embedder: embedder.clone(),
        index: index.clone(),
        requeue: requeue.clone(),
    };
    let lanes = Mutex::new(Lanes {
        current: Arc::new(EmbedIndexDeps::new(embedder, index, requeue, config)),
        target: None,
        looked: None,
    });
    let (parts, lanes) = (&parts, &lanes);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let ms = event.context.deadline;
        let stale = lanes
            .lock()
            .unwrap()
            .looked
            .is_none_or(|at| at.elapsed() >= parts.config.migration_check);
        if stale {
            // Unreadable (the cluster down, the index not created yet): the lanes stay as they
            // were, and the batch meets the cluster's state itself.
            let routing = parts.index.routing().await;
            let mut lanes = lanes.lock().unwrap();
            lanes.looked = Some(Instant::now());
            if let Ok(routing) = routing {
                parts.follow(&mut lanes, &routing);
            }
        }
        let (current, target) = {
            let lanes = lanes.lock().unwrap();
            (
                lanes.current.clone(),
                lanes.target.as_ref().map(|(_, d)| d.clone()),
            )
        };
        current
            .check_function_time(Deadline::from_lambda_deadline_ms(ms, Duration::ZERO).remaining());
        let deadline = Deadline::from_lambda_deadline_ms(ms, EmbedIndexConfig::RESPONSE_RESERVE);
        let (response, _) = match target {
            Some(target) => {
                handle_migrating_batch(&current, &target, event.payload, deadline).await?
            }
            None => handle_batch(&current, event.payload, deadline).await?,
        };
        Ok::<SqsBatchResponse, IndexSetupError>(response)
    }))
    .await
}
