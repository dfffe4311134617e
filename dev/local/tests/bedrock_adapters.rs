//! The Bedrock adapter on the wire, against the project's InvokeModel stand-in: every model
//! family's request body is accepted, its response read, and each kind of failure classified.

use std::time::Duration;

use sakuin::embed::bedrock::BedrockEmbedder;
use sakuin::embed::{
    EMBED_RETRIES, EmbedError, EmbedPolicy, Embedder, EmbeddingModel, InputPurpose, Pacer,
    embed_all,
};
use sakuin::retry::Deadline;
use sakuin_local::stack::LocalStack;
use serde_json::{Value, json};

async fn embedder(stack: &LocalStack, model: EmbeddingModel) -> BedrockEmbedder {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("ap-northeast-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url(stack.bedrock.url())
        .load()
        .await;
    BedrockEmbedder::new(sakuin::aws::bedrock_client(&sdk), model)
}

async fn stub(stack: &LocalStack, path: &str, body: Option<Value>) -> Value {
    let url = format!("{}/_stub/{path}", stack.bedrock.url());
    let client = reqwest::Client::new();
    let request = match body {
        Some(b) => client.post(url).body(b.to_string()),
        None => client.get(url),
    };
    serde_json::from_slice(&request.send().await.unwrap().bytes().await.unwrap()).unwrap()
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("テキスト {i}: a short text to embed."))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_family_on_the_wire() {
    let stack = LocalStack::start(&[])
        .await
        .expect("the local stack starts (make venv)");
    let deadline = || Deadline::after(Duration::from_secs(60));

    for (id, dims, expected) in [
        ("amazon.titan-embed-text-v1", None, 1536),
        ("amazon.titan-embed-text-v2:0", Some(256), 256),
        ("amazon.titan-embed-text-v2:0", Some(512), 512),
        ("amazon.titan-embed-text-v2:0", None, 1024),
        ("cohere.embed-english-v3", None, 1024),
        ("cohere.embed-multilingual-v3", None, 1024),
        ("us.cohere.embed-v4:0", Some(512), 512),
        ("global.cohere.embed-v4:0", None, 1536),
    ] {
        let model = EmbeddingModel::resolve(id, dims).unwrap();
        let e = embedder(&stack, model.clone()).await;
        for (n, calls) in [
            (1, 1),
            (96, if model.max_batch() == 96 { 1 } else { 96 }),
            (97, if model.max_batch() == 96 { 2 } else { 97 }),
        ] {
            stub(&stack, "reset", Some(json!({}))).await;
            let owned = texts(n);
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            let (vectors, stats) = embed_all(
                &e,
                &refs,
                InputPurpose::Document,
                EMBED_RETRIES,
                &Pacer::fixed(8),
                deadline(),
            )
            .await;
            assert_eq!(vectors.len(), n, "{id}");
            for v in &vectors {
                assert_eq!(v.as_ref().unwrap().len(), expected, "{id} with {n} texts");
            }
            assert_eq!(stats.calls as usize, calls, "{id} with {n} texts");
            assert_eq!(
                stub(&stack, "stats", None).await["calls"].as_u64().unwrap() as usize,
                calls,
                "{id}"
            );
            // From Bedrock's token-count header for every model: Cohere's body has no count.
            assert!(stats.input_tokens >= n as u64, "{id}: {stats:?}");
        }
        // Queries and documents embed the same text the same way with Titan, and the same model
        // answers the same vector twice.
        let a = e.invoke(&["同じ文"], InputPurpose::Query).await.unwrap();
        let b = e.invoke(&["同じ文"], InputPurpose::Query).await.unwrap();
        assert_eq!(a, b, "{id} is deterministic");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_told_apart() {
    let stack = LocalStack::start(&["--deny-models", "amazon.titan-embed-text-v1"])
        .await
        .expect("the local stack starts");

    // Validation: what Bedrock refuses is permanent, with Bedrock's own code and message.
    let titan = embedder(
        &stack,
        EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", Some(256)).unwrap(),
    )
    .await;
    match titan.invoke(&[""], InputPurpose::Document).await {
        Err(EmbedError::Permanent { code, .. }) => assert_eq!(code, "ValidationException"),
        other => panic!("{other:?}"),
    }
    // A model id this Region serves only through an inference profile, invoked bare: the error
    // names the ids to use.
    let bare = EmbeddingModel::resolve("cohere.embed-v4:0", None).unwrap();
    match embedder(&stack, bare)
        .await
        .invoke(&["x"], InputPurpose::Document)
        .await
    {
        Err(EmbedError::Permanent { code, message }) => {
            assert_eq!(code, "ValidationException");
            for needle in [
                "inference profile",
                "EMBEDDING_MODEL_ID",
                "apac.cohere.embed-v4:0",
            ] {
                assert!(message.contains(needle), "{needle}: {message}");
            }
        }
        other => panic!("{other:?}"),
    }
    // Model access not granted.
    let denied = embedder(
        &stack,
        EmbeddingModel::resolve("amazon.titan-embed-text-v1", None).unwrap(),
    )
    .await;
    match denied.invoke(&["x"], InputPurpose::Document).await {
        Err(EmbedError::Permanent { code, .. }) => assert_eq!(code, "AccessDeniedException"),
        other => panic!("{other:?}"),
    }
    // Throttling and server errors are retryable; embed_all retries them and succeeds.
    stub(&stack, "config", Some(json!({"throttle_every": 1}))).await;
    let err = titan
        .invoke(&["x"], InputPurpose::Document)
        .await
        .unwrap_err();
    assert!(matches!(err, EmbedError::Throttled(_)), "{err:?}");
    stub(&stack, "config", Some(json!({"throttle_every": 0, "fail_every": 1, "fail_error": "ServiceUnavailableException"}))).await;
    let err = titan
        .invoke(&["x"], InputPurpose::Document)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EmbedError::Transient(_)) && err.is_retryable(),
        "{err:?}"
    );
    // The rest of Bedrock's errors: a model still loading is retried, a quota refusal is
    // throttling, and an error inside the model is the input's.
    for (code, retried_as) in [
        ("ModelNotReadyException", "transient"),
        ("ServiceQuotaExceededException", "throttled"),
        ("ModelErrorException", "permanent"),
    ] {
        stub(
            &stack,
            "config",
            Some(json!({"fail_every": 1, "fail_error": code})),
        )
        .await;
        let err = titan
            .invoke(&["x"], InputPurpose::Document)
            .await
            .unwrap_err();
        let kind = match &err {
            EmbedError::Transient(_) => "transient",
            EmbedError::Throttled(_) => "throttled",
            EmbedError::Permanent { code: c, .. } if c == code => "permanent",
            _ => "other",
        };
        assert_eq!(kind, retried_as, "{code}: {err:?}");
    }
    stub(
        &stack,
        "config",
        Some(json!({"fail_every": 2, "fail_error": "ServiceUnavailableException"})),
    )
    .await;
    let owned = texts(10);
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    let policy = EmbedPolicy {
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        ..EMBED_RETRIES
    };
    let (vectors, stats) = embed_all(
        &titan,
        &refs,
        InputPurpose::Document,
        policy,
        &Pacer::fixed(8),
        Deadline::after(Duration::from_secs(60)),
    )
    .await;
    assert!(vectors.iter().all(Result::is_ok));
    assert!(stats.retries >= 5, "{stats:?}");
}
