//! Works with the cluster you have: the pipeline against older and newer Elasticsearch releases,
//! played by a proxy in front of the local cluster (`GET /` answers the release, and index
//! creation refuses the vector index types that release lacks, with that release's error).
//!
//! Figures: `cargo test -p sakuin-local --test versions -- --nocapture`.

use std::time::Duration;

use sakuin_local::pipeline::{Pipeline, PipelineOptions};
use serde_json::{Value, json};

/// Releases as the proxy plays them, and the `index_options.type` values each accepts, written
/// out from Elasticsearch's dense_vector reference of each release (apart from the code's table,
/// which this checks): `int8_hnsw` from 8.12, `flat` / `int8_flat` from 8.13, `int4_*` from
/// 8.15, `bbq_*` from 8.16.
const RELEASES: &[(&str, &[&str], &str)] = &[
    ("8.4.3", &["hnsw"], "hnsw"),
    ("8.11.4", &["hnsw"], "hnsw"),
    (
        "8.15.3",
        &[
            "hnsw",
            "int8_hnsw",
            "int4_hnsw",
            "flat",
            "int8_flat",
            "int4_flat",
        ],
        "int8_hnsw",
    ),
    (
        "9.1.0",
        &[
            "hnsw",
            "int8_hnsw",
            "int4_hnsw",
            "bbq_hnsw",
            "flat",
            "int8_flat",
            "int4_flat",
            "bbq_flat",
        ],
        "int8_hnsw",
    ),
];

/// A pipeline behind the proxy; `index_type` is `ES_VECTOR_INDEX_TYPE` and `analyzer`
/// `ES_TEXT_ANALYZER` (empty: the defaults).
async fn start(index: &str, index_type: &str, analyzer: &str) -> Pipeline {
    Pipeline::start_logged(PipelineOptions {
        index: index.into(),
        es_faults: true,
        extra_env: vec![
            ("ES_VECTOR_INDEX_TYPE".into(), index_type.into()),
            ("ES_TEXT_ANALYZER".into(), analyzer.into()),
        ],
        ..PipelineOptions::default()
    })
    .await
}

fn records(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            json!({"id": format!("v-{i}"), "text": format!("Version record {i}.")}).to_string()
                + "\n"
        })
        .collect::<String>()
        .into_bytes()
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_settings_pick_the_best_index_type_each_release_takes() {
    let mut table = Vec::new();
    for (number, accepts, expected) in RELEASES {
        let pipeline = start(&format!("v{}", number.replace('.', "-")), "", "").await;
        let proxy = pipeline.es_faults.as_ref().unwrap();
        proxy.play_release(number, accepts);

        // Before the first batch the probe says what embed-index will create.
        let report = pipeline.invoke_probe(&json!({})).await.unwrap();
        let http = check(&report, "elasticsearch.http")["detail"]
            .as_str()
            .unwrap();
        assert!(http.contains(&format!("Elasticsearch {number}")), "{http}");
        let index = check(&report, "elasticsearch.index")["detail"]
            .as_str()
            .unwrap();
        assert!(
            index.contains(&format!(
                "with index type {expected} and the cjk analyzer (Elasticsearch {number})"
            )),
            "{index}"
        );

        let event = pipeline.put_object("v/a.jsonl", records(3)).await.unwrap();
        pipeline.invoke_ingest(&event).await.unwrap();
        let stats = pipeline.drain(Duration::from_secs(60)).await.unwrap();
        assert_eq!(stats.function_errors, 0, "{number}: {stats:?}");
        let es = pipeline.es();
        es.refresh().await.unwrap();
        assert_eq!(es.count().await.unwrap(), 3, "{number}");
        let mapping = es.mapping().await.unwrap();
        let chosen = mapping
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(|m| m.pointer("/mappings/properties/embedding/index_options/type"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        assert_eq!(chosen, *expected, "{number}");
        let analyzer = mapping
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(|m| m.pointer("/mappings/properties/text/analyzer"))
            .cloned();
        assert_eq!(
            analyzer,
            Some(json!("cjk")),
            "keyword search for mixed Japanese and English"
        );
        table.push(format!("{number}: {chosen}"));
        pipeline.stop().await;
    }
    println!("versions × chosen index type: {}", table.join("; "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_the_release_lacks_and_a_release_too_old_are_clear_errors() {
    let pipeline = start("explicit", "int8_hnsw", "").await;
    let proxy = pipeline.es_faults.as_ref().unwrap();
    proxy.play_release("8.11.4", &["hnsw"]);

    let err = pipeline.invoke_probe(&json!({})).await.unwrap_err();
    assert!(
        err.error_message
            .contains("elasticsearch.index failed at version")
            && err
                .error_message
                .contains("ES_VECTOR_INDEX_TYPE=int8_hnsw needs Elasticsearch 8.12.0"),
        "{}",
        err.error_message
    );

    // embed-index refuses before it creates anything: the batch fails with the same words,
    // and nothing was embedded for it.
    let texts = async || pipeline.stack.bedrock_stats().await.unwrap()["texts"].clone();
    let before = texts().await; // the probe's one-word check
    let event = pipeline.put_object("v/a.jsonl", records(2)).await.unwrap();
    pipeline.invoke_ingest(&event).await.unwrap();
    let (outcome, _) = pipeline.deliver_batch(10).await.unwrap().expect("a batch");
    let err = outcome.unwrap_err();
    assert!(
        err.error_message.contains("needs Elasticsearch 8.12.0")
            && err.error_message.contains("runs 8.11.4")
            && err.error_message.contains("choose one of hnsw"),
        "{}",
        err.error_message
    );
    assert_eq!(texts().await, before, "nothing embedded");

    proxy.play_release("8.3.3", &["hnsw"]);
    let err = pipeline.invoke_probe(&json!({})).await.unwrap_err();
    assert!(
        err.error_message
            .contains("elasticsearch.http failed at version")
            && err.error_message.contains("older than 8.4.0"),
        "{}",
        err.error_message
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyzer_without_its_plugin_is_a_clear_error() {
    let pipeline = start("kuromoji", "", "kuromoji").await;
    // The probe asks the cluster before the index exists, so the first batch need not find out.
    let err = pipeline.invoke_probe(&json!({})).await.unwrap_err();
    assert!(
        err.error_message
            .contains("elasticsearch.index failed at analyzer")
            && err
                .error_message
                .contains("ES_TEXT_ANALYZER=kuromoji needs the analysis-kuromoji plugin"),
        "{}",
        err.error_message
    );
    let event = pipeline.put_object("v/a.jsonl", records(2)).await.unwrap();
    pipeline.invoke_ingest(&event).await.unwrap();
    let (outcome, _) = pipeline.deliver_batch(10).await.unwrap().expect("a batch");
    let err = outcome.unwrap_err();
    assert!(
        err.error_message
            .contains("ES_TEXT_ANALYZER=kuromoji needs the analysis-kuromoji plugin"),
        "{}",
        err.error_message
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_search_is_fused_by_the_cluster_where_its_release_and_licence_allow() {
    let pipeline = start("fusion", "", "").await;
    let proxy = pipeline.es_faults.as_ref().unwrap();
    proxy.play_release("8.15.3", &["hnsw", "int8_hnsw"]);
    let event = pipeline.put_object("v/a.jsonl", records(12)).await.unwrap();
    pipeline.invoke_ingest(&event).await.unwrap();
    pipeline.drain(Duration::from_secs(60)).await.unwrap();
    pipeline.es().refresh().await.unwrap();

    let sakuin = sakuin_local::pipeline::require(&sakuin_local::pipeline::binary_dir(), "sakuin")
        .expect("cargo build --workspace builds the sakuin CLI");
    let search = async |fusion: &str| {
        let out = tokio::process::Command::new(&sakuin)
            .args(["search", "Version record 7", "--json", "-k", "5"])
            .args(["--fusion", fusion])
            .envs(pipeline.env.iter().cloned())
            .output()
            .await
            .unwrap();
        let hits: Vec<String> = serde_json::from_slice::<Vec<Value>>(&out.stdout)
            .unwrap_or_default()
            .iter()
            .map(|h| h["doc_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), hits, said)
    };
    let (_, by_client, _) = search("client").await;
    assert_eq!(by_client.len(), 5, "{by_client:?}");

    // (release, licence, what auto says, whether --fusion cluster works)
    let cases = [
        (
            "8.11.4",
            "enterprise",
            "has no rrf retriever (it came in 8.14.0)",
            false,
        ),
        ("8.15.3", "basic", "non-compliant for [rank-rrf]", false),
        (
            "8.15.3",
            "trial",
            "fused by the cluster's rrf retriever",
            true,
        ),
        (
            "9.1.0",
            "enterprise",
            "fused by the cluster's rrf retriever",
            true,
        ),
    ];
    for (number, license, says, cluster_fuses) in cases {
        proxy.play_release(number, &["hnsw"]);
        proxy.play_license(license);
        let (code, hits, said) = search("auto").await;
        assert_eq!(code, Some(0), "{number} {license}: {said}");
        assert!(said.contains(says), "{number} {license}: {said}");
        assert_eq!(hits, by_client, "{number} {license}: the same fused list");
        let (code, hits, said) = search("cluster").await;
        if cluster_fuses {
            assert_eq!((code, &hits), (Some(0), &by_client), "{said}");
        } else {
            assert_eq!(code, Some(1), "{number} {license}: {said}");
            assert!(said.contains("the cluster cannot fuse the lists"), "{said}");
        }
    }
    pipeline.stop().await;
}
