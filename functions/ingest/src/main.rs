//! `ingest`: S3 notifications (through the intake queue, or invoked directly) → chunk messages on SQS.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use sakuin::config::{Env, IngestConfig};
use sakuin::ingest::{
    IngestDeps, IngestSummary, IntakeContinuation, LambdaContinuation, QueueContinuation,
    handle_event,
};
use sakuin::queue::SqsQueue;
use sakuin::store::S3Store;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    sakuin::init_logging();
    let mut env = Env::from_process();
    let config = IngestConfig::from_env(&mut env)?;
    let sdk = sakuin::aws::sdk_config().await;
    let s3 = sakuin::aws::s3_client(&sdk, &mut env);
    let sqs = sakuin::aws::sqs_client(&sdk);
    let queue = SqsQueue::new(sqs.clone(), config.queue_url.clone());
    // Work that outlasts an invocation continues through the intake queue when there is one,
    // else in a fresh invocation of this same function.
    let continuation = match &config.intake_queue_url {
        Some(url) => IntakeContinuation::Queue(QueueContinuation::new(
            SqsQueue::new(sqs, url.clone()),
            config.batch_limits(),
        )),
        None => {
            let function = env
                .get("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|| "ingest".into());
            IntakeContinuation::Invoke(LambdaContinuation::new(
                sakuin::aws::lambda_client(&sdk),
                function,
            ))
        }
    };
    let deps = IngestDeps {
        store: S3Store::new(s3),
        queue,
        continuation,
        config,
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = deps.config.work_deadline(event.context.deadline);
        handle_event(deps, event.payload, deadline)
            .await
            .map(IngestSummary::into_response)
    }))
    .await
}
