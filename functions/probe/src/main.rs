//! `probe`: scheduled checks of every dependency, layer by layer; and, when the event asks for
//! it (`{"reconcile": {"fix": true}}`, the stack's optional daily schedule), the comparison of
//! the index with the bucket.

use std::time::{Duration, Instant};

use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use sakuin::config::Env;
use sakuin::probe::{ProbeDeps, handle_event};
use sakuin::reconcile;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    sakuin::init_logging();
    let mut env = Env::from_process();
    let deps = ProbeDeps::from_env(&mut env).await?;
    let (deps, env) = (&deps, &env);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        if let Some(request) = event.payload.get("reconcile") {
            let left = event
                .context
                .deadline()
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let report = reconcile::scheduled(deps, env, request, Instant::now() + left)
                .await
                .map_err(|e| Diagnostic {
                    error_type: "ReconcileFailed".into(),
                    error_message: e,
                })?;
            tracing::info!(
                scope = %report.scope, objects = report.objects, missing = report.missing,
                changed = report.changed, orphaned = report.orphaned, queued = report.queued,
                complete = report.complete, "reconciled"
            );
            return Ok::<Value, Diagnostic>(
                serde_json::to_value(&report).expect("the report serialises"),
            );
        }
        // A failed check is the invocation's error, typed `ProbeFailed` (the alarm counts them).
        let report = handle_event(deps, event.payload).await?;
        Ok(serde_json::to_value(&report).expect("the report serialises"))
    }))
    .await
}
