//! sakuin: JSON documents in S3 become chunks, Bedrock embeddings and Elasticsearch documents.
//! This crate holds everything the three Lambda functions do; their `main.rs` only wires it up.

pub mod aws;
pub mod batch;
pub mod checks;
pub mod chunker;
pub mod config;
pub mod documents;
pub mod embed;
pub mod embed_index;
pub mod error;
pub mod es;
pub mod failure;
pub mod ids;
pub mod ingest;
pub mod message;
pub mod metrics;
pub mod net;
pub mod probe;
pub mod queue;
pub mod reader;
pub mod reconcile;
pub mod record;
pub mod retry;
pub mod s3key;
pub mod search;
pub mod secret;
pub mod store;
pub mod survey;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

pub use aws_lambda_events;
pub use lambda_runtime;

/// Logs as Lambda expects them: JSON when the function's log format is JSON, level from
/// `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// Lambda's error report for a handler error: a stable type name and the full message.
macro_rules! diagnostic {
    ($($ty:ty => $name:literal),* $(,)?) => {$(
        impl From<$ty> for lambda_runtime::Diagnostic {
            fn from(e: $ty) -> Self {
                lambda_runtime::Diagnostic { error_type: $name.into(), error_message: e.to_string() }
            }
        }
    )*};
}

diagnostic! {
    ingest::IngestError => "IngestError",
    embed_index::IndexSetupError => "IndexSetupError",
    probe::ProbeError => "ProbeFailed",
}
