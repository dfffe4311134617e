//! A model switch without downtime on the local stack: an index of Titan Text Embeddings v1
//! (a plain index of the name, as embed-index creates it) migrated to v2 (`sakuin migrate
//! start`, which first makes the name an alias, a backfill, `status`, `swap`, `remove-old`)
//! while searches run all through it and objects are uploaded, rewritten and removed.
//!
//! `cargo test -p sakuin-local --test migration -- --nocapture` prints the figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sakuin_local::fleet::{Fleet, FleetOptions};
use sakuin_local::pipeline::{BUCKET, PipelineOptions};
use sakuin_local::stack::LocalStack;
use sakuin_local::truth::compare_index_with_bucket;
use serde_json::json;
use tokio::sync::Mutex;

const OLD: &str = "amazon.titan-embed-text-v1";
const NEW: &str = "amazon.titan-embed-text-v2:0";

fn records(object: usize, version: u32) -> Vec<u8> {
    (0..10)
        .map(|i| {
            json!({
                "id": format!("m{object}-{i}"),
                "text": format!("Record {i} of object {object}, version {version}: notes on catalogue item {} and its shelf.", (object * 7 + i) % 31),
            })
            .to_string()
                + "\n"
        })
        .collect::<String>()
        .into_bytes()
}

/// One search: when it was answered, whether it succeeded, and whether the new model's index
/// served it (the CLI says when the index holds another model than EMBEDDING_MODEL_ID).
#[derive(Debug, Clone)]
struct Searched {
    at: Instant,
    ok: bool,
    new_model: bool,
    detail: String,
}

async fn put_and_deliver(fleet: &Fleet, puts: &[(String, Vec<u8>)], deletes: &[String]) {
    let mut notes = Vec::new();
    for (key, body) in puts {
        notes.push(fleet.put(key, body.clone()).await.unwrap());
    }
    for key in deletes {
        notes.push(fleet.delete(key).await.unwrap());
    }
    fleet.deliver(&notes).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_from_titan_v1_to_v2_keeps_search_answering() {
    let stack = LocalStack::start(&[])
        .await
        .expect("the local stack starts");
    let log = stack.work_dir.join("functions.log");
    let fleet = Fleet::start(
        stack,
        FleetOptions {
            pipeline: PipelineOptions {
                index: "migrate".into(),
                model_id: OLD.into(),
                dimensions: None,
                log: Some(log),
                chunk_visibility_secs: 60,
                // The containers look for a migration every 2 s here (30 s by default).
                extra_env: vec![("MIGRATION_CHECK_SECS".into(), "2".into())],
                ..PipelineOptions::default()
            },
            ingest_containers: 1,
            embed_index_containers: 2,
        },
    )
    .await
    .expect("the fleet starts");
    let fleet = Arc::new(fleet);
    const OBJECTS: usize = 12;
    let puts: Vec<_> = (0..OBJECTS)
        .map(|o| (format!("docs/{o:02}.jsonl"), records(o, 1)))
        .collect();
    put_and_deliver(&fleet, &puts, &[]).await;
    fleet
        .run_until_quiet(Duration::from_secs(120))
        .await
        .unwrap();
    // embed-index created a plain index of the name, recording its model.
    let routing = fleet.es().routing().await.unwrap();
    assert_eq!(routing.indices, ["migrate"]);
    assert_eq!(routing.model.as_ref().unwrap().model, OLD);

    // Searches all through the migration.
    let searches = Arc::new(Mutex::new(Vec::<Searched>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let searching = {
        let (fleet, searches, stop) = (fleet.clone(), searches.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (code, out, err) = fleet
                    .sakuin(&["search", "catalogue item 5 shelf", "-k", "3", "--json"])
                    .await;
                let hits = serde_json::from_str::<serde_json::Value>(&out)
                    .ok()
                    .and_then(|v| v.as_array().map(Vec::len))
                    .unwrap_or(0);
                searches.lock().await.push(Searched {
                    at: Instant::now(),
                    ok: code == Some(0) && hits > 0,
                    new_model: err.contains(NEW),
                    detail: format!("{code:?} {hits} hits {err}"),
                });
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let started = Instant::now();
    let (code, out, err) = fleet
        .sakuin(&["migrate", "start", "--model", NEW, "--dimensions", "256"])
        .await;
    println!("{out}{err}");
    assert_eq!(code, Some(0));
    // The name became an alias of the index's clone, which the migration leaves.
    let routing = fleet.es().routing().await.unwrap();
    let migration = routing
        .migration
        .clone()
        .expect("the migration is recorded");
    let old_index = migration.from.clone();
    assert!(routing.is_alias("migrate"), "{routing:?}");
    assert_eq!(routing.indices, std::slice::from_ref(&old_index));
    assert_eq!(old_index, "migrate-amazon-titan-embed-text-v1-1536");
    // Nothing to swap to yet: the new index is empty.
    let (code, _, err) = fleet
        .sakuin(&["migrate", "swap", &format!("s3://{BUCKET}/docs/")])
        .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("does not equal the bucket yet"), "{err}");

    // The containers read the migration within MIGRATION_CHECK_SECS of their last look.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Live changes while it runs: an upload, a rewrite, a removal.
    put_and_deliver(
        &fleet,
        &[
            ("docs/20.jsonl".into(), records(20, 1)),
            ("docs/03.jsonl".into(), records(3, 2)),
        ],
        &["docs/05.jsonl".into()],
    )
    .await;
    let (code, out, err) = fleet
        .sakuin(&[
            "backfill",
            &format!("s3://{BUCKET}/docs/"),
            "--yes",
            "--json",
        ])
        .await;
    assert_eq!(code, Some(0), "{out}{err}");
    fleet
        .run_until_quiet(Duration::from_secs(180))
        .await
        .unwrap();
    let (code, out, err) = fleet
        .sakuin(&["migrate", "status", &format!("s3://{BUCKET}/docs/")])
        .await;
    println!("{out}{err}");
    assert_eq!(code, Some(0), "the new index equals the bucket");

    let (code, out, err) = fleet
        .sakuin(&["migrate", "swap", &format!("s3://{BUCKET}/docs/")])
        .await;
    println!("{out}{err}");
    assert_eq!(code, Some(0));
    let swapped_at = Instant::now();
    let routing = fleet.es().routing().await.unwrap();
    assert_eq!(routing.indices, std::slice::from_ref(&migration.to));
    assert_eq!(routing.model.as_ref().unwrap().model, NEW);
    assert_eq!(routing.migration, None);

    // After the swap: a rewrite and an upload, written by the new model's lane once the
    // containers follow the alias.
    put_and_deliver(
        &fleet,
        &[
            ("docs/07.jsonl".into(), records(7, 3)),
            ("docs/21.jsonl".into(), records(21, 1)),
        ],
        &[],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    fleet
        .run_until_quiet(Duration::from_secs(180))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    searching.await.unwrap();

    let comparison = compare_index_with_bucket(&fleet.s3, BUCKET, &fleet.es())
        .await
        .unwrap();
    assert!(comparison.is_equal(), "{comparison:?}");
    assert_eq!(fleet.dead_letters().await.unwrap(), (0, 0));
    let held = sakuin::search::models_held(&fleet.es()).await.unwrap();
    assert_eq!(
        held.len(),
        1,
        "only the new model's vectors behind the alias: {held:?}"
    );
    assert_eq!(held[0].0, NEW);

    let searches = searches.lock().await.clone();
    let failed: Vec<_> = searches.iter().filter(|s| !s.ok).collect();
    let before = searches.iter().filter(|s| s.at < swapped_at).count();
    let old_after = searches
        .iter()
        .filter(|s| s.at > swapped_at + Duration::from_secs(1) && !s.new_model)
        .count();
    let new_before = searches
        .iter()
        .filter(|s| s.at < swapped_at && s.new_model)
        .count();
    println!(
        "migration {OLD} -> {NEW}: {} searches, {} failed ({} before the swap, {} after), swapped {:.1} s after the start",
        searches.len(),
        failed.len(),
        before,
        searches.len() - before,
        (swapped_at - started).as_secs_f64()
    );
    let reasons: Vec<&str> = failed.iter().map(|s| s.detail.as_str()).collect();
    assert!(failed.is_empty(), "{reasons:?}");
    assert_eq!(new_before, 0, "the old index answers until the swap");
    assert_eq!(old_after, 0, "the new index answers after it");
    assert!(before > 5 && searches.len() - before > 5);

    // The former index stays until removed on command.
    let old = fleet.es().for_index(&old_index);
    assert!(old.mapping().await.is_ok(), "{old_index} is kept");
    let (code, out, err) = fleet
        .sakuin(&["migrate", "remove-old", &migration.to])
        .await;
    assert_eq!(
        code,
        Some(1),
        "the alias's own index is never removed: {out}{err}"
    );
    let (code, out, err) = fleet.sakuin(&["migrate", "remove-old", &old_index]).await;
    println!("{out}{err}");
    assert_eq!(code, Some(0));
    assert!(old.mapping().await.is_err(), "{old_index} is gone");
    let comparison = compare_index_with_bucket(&fleet.s3, BUCKET, &fleet.es())
        .await
        .unwrap();
    assert!(comparison.is_equal(), "{comparison:?}");
    Arc::try_unwrap(fleet).ok().expect("one owner").stop().await;
}
