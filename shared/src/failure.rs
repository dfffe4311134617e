//! One failure taxonomy: why work did not get done, as the `Reason` dimension of the
//! `ChunksFailed` metric names it. Bedrock errors are sorted into it by the same classification
//! the retries use ([`crate::embed::bedrock::classify`]), and the probe explains a failed
//! `bedrock.model` check from the same reason.

use crate::embed::EmbedError;

/// Why a chunk did not land in an invocation: the `Reason` dimension of `ChunksFailed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Bedrock was still throttling when the retries or the time ran out.
    Throttled,
    /// Bedrock 5xx, timeouts or connection errors past the retries.
    BedrockError,
    /// Not embedded because the invocation's time ran short.
    OutOfTime,
    /// Bedrock refused the input (`ValidationException` and other permanent errors).
    ModelRejected,
    /// `AccessDeniedException`: the role's policy or the account's model access.
    AccessDenied,
    /// Elasticsearch rejected the document (mapping, size): permanent for its message.
    EsRejected,
    /// Elasticsearch unreachable, or 429 / 5xx past the retries.
    EsUnavailable,
}

impl FailureReason {
    pub const ALL: [FailureReason; 7] = [
        FailureReason::Throttled,
        FailureReason::BedrockError,
        FailureReason::OutOfTime,
        FailureReason::ModelRejected,
        FailureReason::AccessDenied,
        FailureReason::EsRejected,
        FailureReason::EsUnavailable,
    ];

    /// Whether the work only needs time: Elasticsearch back, Bedrock's quota free again, or
    /// a fresh invocation's clock. Such chunks go back on the queue, delayed, with what they
    /// already have (vectors), and never count toward the DLQ.
    pub fn waits(self) -> bool {
        matches!(
            self,
            FailureReason::EsUnavailable | FailureReason::Throttled | FailureReason::OutOfTime
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Throttled => "throttled",
            FailureReason::BedrockError => "bedrock_error",
            FailureReason::OutOfTime => "out_of_time",
            FailureReason::ModelRejected => "model_rejected",
            FailureReason::AccessDenied => "access_denied",
            FailureReason::EsRejected => "es_rejected",
            FailureReason::EsUnavailable => "es_unavailable",
        }
    }

    /// How a Bedrock call's failure counts: the same classification the retries used.
    pub fn of_embedding(error: &EmbedError) -> Self {
        match error {
            EmbedError::Throttled(_) => FailureReason::Throttled,
            EmbedError::Transient(_) => FailureReason::BedrockError,
            EmbedError::OutOfTime => FailureReason::OutOfTime,
            EmbedError::Permanent { .. } if error.is_access_denied() => FailureReason::AccessDenied,
            EmbedError::Permanent { .. } => FailureReason::ModelRejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::bedrock::classify_answer;

    #[test]
    fn bedrock_answers_have_one_reason_for_the_retries_the_metric_and_the_probe() {
        let reason =
            |status, code| FailureReason::of_embedding(&classify_answer(status, code, "m"));
        assert_eq!(reason(429, "ThrottlingException"), FailureReason::Throttled);
        assert_eq!(
            reason(400, "ServiceQuotaExceededException"),
            FailureReason::Throttled
        );
        assert_eq!(reason(429, "SomethingNew"), FailureReason::Throttled);
        assert_eq!(
            reason(403, "AccessDeniedException"),
            FailureReason::AccessDenied
        );
        assert_eq!(
            reason(400, "ValidationException"),
            FailureReason::ModelRejected
        );
        assert_eq!(
            reason(424, "ModelErrorException"),
            FailureReason::ModelRejected
        );
        assert_eq!(
            reason(503, "ServiceUnavailableException"),
            FailureReason::BedrockError
        );
        assert_eq!(
            reason(429, "ModelNotReadyException"),
            FailureReason::BedrockError
        );
        assert_eq!(reason(408, "SomethingNew"), FailureReason::BedrockError);
        // What waits (goes back on the queue) and what fails the message.
        assert!(FailureReason::Throttled.waits() && !FailureReason::ModelRejected.waits());
    }
}
