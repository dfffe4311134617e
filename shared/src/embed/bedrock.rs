//! The Bedrock Runtime adapter: one InvokeModel call, its errors sorted into retryable and not.

use std::sync::{Arc, Mutex};

use aws_sdk_bedrockruntime::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_bedrockruntime::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_bedrockruntime::error::{BoxError, SdkError};
use aws_sdk_bedrockruntime::operation::invoke_model::InvokeModelError;
use aws_sdk_bedrockruntime::primitives::Blob;

use super::{EmbedError, Embedder, EmbeddingModel, InputPurpose, ModelOutput};
use crate::error::error_chain;

/// Amazon Bedrock through the AWS SDK. Build the client with retries disabled: `embed_all`
/// retries with the invocation's deadline in view, and counts what it does.
#[derive(Clone)]
pub struct BedrockEmbedder {
    client: aws_sdk_bedrockruntime::Client,
    model: EmbeddingModel,
}

impl BedrockEmbedder {
    pub fn new(client: aws_sdk_bedrockruntime::Client, model: EmbeddingModel) -> Self {
        Self { client, model }
    }

    /// The same client, calling another model.
    pub fn with_model(&self, model: EmbeddingModel) -> Self {
        Self {
            client: self.client.clone(),
            model,
        }
    }
}

impl Embedder for BedrockEmbedder {
    fn model(&self) -> &EmbeddingModel {
        &self.model
    }

    async fn invoke(
        &self,
        texts: &[&str],
        purpose: InputPurpose,
    ) -> Result<ModelOutput, EmbedError> {
        let header = InputTokenHeader::default();
        let out = self
            .client
            .invoke_model()
            .model_id(&self.model.id)
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(self.model.request_body(texts, purpose)))
            .customize()
            .interceptor(header.clone())
            .send()
            .await
            .map_err(|e| classify(e).explained(&self.model.id))?;
        let body = out.body.into_inner();
        let expected = texts.len();
        // A Cohere answer is up to a megabyte of numbers: it is read on a blocking thread, so
        // the other calls in flight are not held up behind it.
        let parsed = if body.len() > PARSE_INLINE_MAX_BYTES {
            let model = self.model.clone();
            tokio::task::spawn_blocking(move || model.parse_response(&body, expected))
                .await
                .map_err(|e| EmbedError::Transient(format!("reading the answer: {e}")))?
        } else {
            self.model.parse_response(&body, expected)
        };
        let mut output = parsed.map_err(|e| EmbedError::Permanent {
            code: "UnexpectedResponse".into(),
            message: e.to_string(),
        })?;
        // The header is Bedrock's count for every model (Cohere's body has none); the body's
        // count is the fallback where the header is missing.
        if let Some(tokens) = header.tokens() {
            output.input_tokens = Some(tokens);
        }
        Ok(output)
    }
}

/// Reads `X-Amzn-Bedrock-Input-Token-Count` off one InvokeModel response: the SDK's output
/// type does not carry it.
/// <https://docs.aws.amazon.com/bedrock/latest/userguide/monitoring.html>
#[derive(Debug, Clone, Default)]
struct InputTokenHeader(Arc<Mutex<Option<u64>>>);

impl InputTokenHeader {
    fn tokens(&self) -> Option<u64> {
        *self.0.lock().unwrap()
    }
}

impl Intercept for InputTokenHeader {
    fn name(&self) -> &'static str {
        "InputTokenHeader"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let count = context
            .response()
            .headers()
            .get("x-amzn-bedrock-input-token-count")
            .and_then(|v| v.trim().parse().ok());
        *self.0.lock().unwrap() = count;
        Ok(())
    }
}

/// Answers larger than this are parsed off the async threads (a Titan answer is a few KiB).
const PARSE_INLINE_MAX_BYTES: usize = 64 * 1024;

/// Decides, in one place, which Bedrock failures are worth another try.
pub fn classify(err: SdkError<InvokeModelError>) -> EmbedError {
    match &err {
        SdkError::ServiceError(ctx) => {
            let meta = ctx.err().meta();
            classify_answer(
                ctx.raw().status().as_u16(),
                meta.code().unwrap_or("Unknown"),
                meta.message().unwrap_or("no message"),
            )
        }
        SdkError::ConstructionFailure(_) => EmbedError::Permanent {
            code: "ConstructionFailure".into(),
            message: format!("{:?}", err),
        },
        // Timeouts, connection failures and unreadable responses: the network, not the request.
        _ => EmbedError::Transient(error_chain(&err)),
    }
}

/// An answer that says no, by its status and error code: throttling (the quotas), faults
/// worth another try, or a refusal that the same call will get again.
pub fn classify_answer(status: u16, code: &str, message: &str) -> EmbedError {
    let (code, message) = (code.to_owned(), message.to_owned());
    match code.as_str() {
        "ThrottlingException" | "ServiceQuotaExceededException" => EmbedError::Throttled(message),
        "InternalServerException"
        | "ServiceUnavailableException"
        | "ModelNotReadyException"
        | "ModelTimeoutException" => EmbedError::Transient(format!("{code}: {message}")),
        "AccessDeniedException"
        | "ValidationException"
        | "ResourceNotFoundException"
        | "ModelErrorException" => EmbedError::Permanent { code, message },
        _ if status == 429 => EmbedError::Throttled(message),
        _ if status >= 500 || status == 408 => EmbedError::Transient(format!("{code}: {message}")),
        _ => EmbedError::Permanent { code, message },
    }
}
