//! `sakuin redrive` end to end against the local stack's SQS (moto): dead letters go back to
//! their source queues with bodies and attributes intact, the dead-letter queues end empty, and
//! the refusals say what to fix.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use common::*;
use sakuin_local::stack::LocalStack;
use serde_json::{Value, json};

struct Queues {
    chunk: String,
    chunk_dlq: String,
    intake: String,
    intake_dlq: String,
}

async fn queue(sqs: &aws_sdk_sqs::Client, name: &str, dead_letter: Option<&str>) -> String {
    let mut create = sqs.create_queue().queue_name(name);
    if let Some(dlq_url) = dead_letter {
        let arn = sqs
            .get_queue_attributes()
            .queue_url(dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes()
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        create = create.attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": arn, "maxReceiveCount": 5}).to_string(),
        );
    }
    create.send().await.unwrap().queue_url.unwrap()
}

/// Every message in a queue: (body, the `kind` attribute); each received once and deleted.
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        if got.messages().is_empty() {
            return out;
        }
        for m in got.messages() {
            let kind = m
                .message_attributes()
                .and_then(|a| a.get("kind"))
                .and_then(|v| v.string_value())
                .map(str::to_owned);
            out.push((m.body().unwrap_or_default().to_owned(), kind));
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    use QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attr = |a: A| out.attributes().unwrap()[&a].parse::<u64>().unwrap();
    (
        attr(A::ApproximateNumberOfMessages),
        attr(A::ApproximateNumberOfMessagesNotVisible),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_go_back_to_their_queues() {
    tokio::time::timeout(Duration::from_secs(300), scenario())
        .await
        .expect("bounded");
}

async fn scenario() {
    let stack = LocalStack::start(&[])
        .await
        .expect("the local stack starts (make venv installs it)");
    let moto = stack.moto.url();
    let sqs = aws_clients(Some(&moto), None).await.sqs;
    let chunk_dlq = queue(&sqs, "sakuin-redrive-dlq", None).await;
    let intake_dlq = queue(&sqs, "sakuin-redrive-intake-dlq", None).await;
    let q = Queues {
        chunk: queue(&sqs, "sakuin-redrive-chunks", Some(&chunk_dlq)).await,
        intake: queue(&sqs, "sakuin-redrive-intake", Some(&intake_dlq)).await,
        chunk_dlq,
        intake_dlq,
    };

    // 23 chunk messages (more than one receive), one of 200 KiB (its own send batch), some
    // with a message attribute; 3 S3 notifications in the intake DLQ.
    let mut chunk_bodies: Vec<(String, Option<String>)> = (0..22)
        .map(|i| {
            (
                json!({"doc_id": format!("d-{i}"), "text": format!("東京 {i} \"quoted\"\n")})
                    .to_string(),
                (i % 3 == 0).then(|| "chunk".to_owned()),
            )
        })
        .collect();
    chunk_bodies.push((
        json!({"doc_id": "big", "text": "x".repeat(200 * 1024)}).to_string(),
        None,
    ));
    for (body, kind) in &chunk_bodies {
        let mut send = sqs
            .send_message()
            .queue_url(&q.chunk_dlq)
            .message_body(body);
        if let Some(kind) = kind {
            send = send.message_attributes(
                "kind",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(kind)
                    .build()
                    .unwrap(),
            );
        }
        send.send().await.unwrap();
    }
    let intake_bodies: Vec<(String, Option<String>)> = (0..3)
        .map(|i| {
            (
                json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "src"},
                    "object": {"key": format!("docs/a+{i}.jsonl"), "sequencer": "0A1B"}}}]})
                .to_string(),
                None,
            )
        })
        .collect();
    for (body, _) in &intake_bodies {
        sqs.send_message()
            .queue_url(&q.intake_dlq)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    let env = |extra: &[(&'static str, &str)]| -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = [
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL_SQS", moto.as_str()),
            ("CHUNK_QUEUE_URL", q.chunk.as_str()),
            ("DEAD_LETTER_QUEUE_URL", q.chunk_dlq.as_str()),
            ("INGEST_QUEUE_URL", q.intake.as_str()),
            ("INGEST_DEAD_LETTER_QUEUE_URL", q.intake_dlq.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            vars.retain(|(name, _)| name != k);
            vars.push((k.to_string(), v.to_string()));
        }
        vars
    };
    let run = |args: &[&str], vars: Vec<(String, String)>| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || sakuin_cli(args, vars))
    };

    // Both dead-letter queues, moved by hand since moto has no message move tasks.
    let (code, out, err) = run(&["redrive"], env(&[])).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "chunk: moved 23 message(s) from sakuin-redrive-dlq to sakuin-redrive-chunks by hand"
        ) && out.contains(
            "does not offer message move tasks (ListMessageMoveTasks: HTTP 500 without an AWS error code)"
        ),
        "{out}"
    );
    assert!(
        out.contains("intake: moved 3 message(s) from sakuin-redrive-intake-dlq to sakuin-redrive-intake by hand"),
        "{out}"
    );
    assert_eq!(depth(&sqs, &q.chunk_dlq).await, (0, 0));
    assert_eq!(depth(&sqs, &q.intake_dlq).await, (0, 0));
    let sorted = |mut v: Vec<(String, Option<String>)>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(drain(&sqs, &q.chunk).await),
        sorted(chunk_bodies.clone()),
        "every chunk message back once, body and attribute intact"
    );
    assert_eq!(
        sorted(drain(&sqs, &q.intake).await),
        sorted(intake_bodies.clone())
    );

    // Nothing left: a second run moves nothing; --json says how.
    let (code, out, err) = run(&["redrive", "--queue", "chunk", "--json"], env(&[]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let answers: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answers.as_array().unwrap().len(), 1, "{answers}");
    assert_eq!(
        (
            answers[0]["queue"].clone(),
            answers[0]["way"].clone(),
            answers[0]["moved"].clone()
        ),
        (json!("chunk"), json!("by_hand"), json!(0)),
        "{answers}"
    );

    // A dead-letter queue that is not the source's: refused before anything moves.
    sqs.send_message()
        .queue_url(&q.chunk_dlq)
        .message_body("{\"doc_id\":\"stray\"}")
        .send()
        .await
        .unwrap();
    let (code, out, err) = run(
        &["redrive", "--queue", "intake"],
        env(&[("INGEST_DEAD_LETTER_QUEUE_URL", q.chunk_dlq.as_str())]),
    )
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("redrive policy sends failed messages to")
            && err.contains("INGEST_QUEUE_URL and INGEST_DEAD_LETTER_QUEUE_URL"),
        "{err}"
    );
    assert_eq!(depth(&sqs, &q.chunk_dlq).await.0, 1);
    assert!(drain(&sqs, &q.intake).await.is_empty());

    // A queue that does not exist names its variable.
    let missing = q
        .chunk_dlq
        .replace("sakuin-redrive-dlq", "sakuin-no-such-dlq");
    let (code, _, err) = run(
        &["redrive", "--queue", "chunk"],
        env(&[("DEAD_LETTER_QUEUE_URL", missing.as_str())]),
    )
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("check DEAD_LETTER_QUEUE_URL"), "{err}");

    // Half a pair is a configuration error, exit 2.
    let (code, _, err) = run(
        &["redrive", "--queue", "intake"],
        env(&[("INGEST_QUEUE_URL", "")]),
    )
    .await
    .unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("INGEST_QUEUE_URL not set"), "{err}");

    // The stray message still goes back with the chunk pair.
    let (code, out, err) = run(&["redrive", "--queue", "chunk"], env(&[]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chunk: moved 1 message(s)"), "{out}");
    let back: HashMap<String, Option<String>> = drain(&sqs, &q.chunk).await.into_iter().collect();
    assert_eq!(back.len(), 1);
    assert!(back.contains_key("{\"doc_id\":\"stray\"}"));
}
