//! `probe`: scheduled checks of every dependency, layer by layer.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sakuin::config::Env;
use sakuin::probe::{ProbeDeps, handle_event};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    sakuin::init_logging();
    let deps = ProbeDeps::from_env(&mut Env::from_process()).await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle_event(deps, event.payload).await
    }))
    .await
}
