//! `probe`: scheduled checks of every dependency, layer by layer.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sakuin::config::{Env, ProbeConfig};
use sakuin::embed::bedrock::BedrockEmbedder;
use sakuin::es::EsClient;
use sakuin::probe::{ProbeDeps, handle_event};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    sakuin::init_logging();
    let mut env = Env::from_process();
    let mut config = ProbeConfig::from_env(&mut env)?;
    let sdk = sakuin::aws::sdk_config().await;
    // A secret that cannot be read is a probe finding, reported by the checks that need it.
    let mut es_problem = None;
    if let Some(secret_id) = &config.es_secret_id {
        match sakuin::aws::es_auth_from_secret(&sdk, secret_id).await {
            Ok(auth) => config.es.auth = Some(auth),
            Err(e) => es_problem = Some(e.to_string()),
        }
    }
    let es = match es_problem {
        Some(p) => Err(p),
        None => EsClient::new(&config.es).map_err(|e| e.to_string()),
    };
    let deps = ProbeDeps {
        s3: sakuin::aws::s3_client(&sdk, &mut env),
        sqs: sakuin::aws::sqs_client(&sdk),
        bedrock: BedrockEmbedder::new(sakuin::aws::bedrock_client(&sdk), config.model.clone()),
        es,
        config,
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle_event(deps, event.payload).await
    }))
    .await
}
