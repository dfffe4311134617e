//! The client's credentials as a cluster sees them: the header it sends, and its renewal
//! after a 401 with a rotated secret. Beside `auth` and `client` rather than inside either, so
//! neither module needs the other's tests.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::auth::*;
use crate::es::{EsClient, EsSettings};
use crate::secret::Secret;

/// What the canned cluster saw: (authorization header, body) per request.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A loopback HTTP server answering `status_for(authorization)` to every request, one
/// request per connection.
async fn cluster(status_for: impl Fn(&str) -> u16 + Send + Sync + 'static) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let (log, status_for) = (seen.clone(), Arc::new(status_for));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (log, status_for) = (log.clone(), status_for.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match stream.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let field = |name: &str| {
                    head.lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.trim().to_owned())
                };
                let length: usize = field("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match stream.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let auth = field("authorization").unwrap_or_default();
                let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                let status = status_for(&auth);
                log.lock().unwrap().push((auth, body));
                let text = if status == 401 {
                    r#"{"error":{"type":"security_exception","reason":"unable to authenticate user [sakuin]"},"status":401}"#
                } else {
                    r#"{"acknowledged":true}"#
                };
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, seen)
}

fn basic(password: &str) -> EsAuth {
    EsAuth::Basic {
        username: "sakuin".into(),
        password: Secret::new(password),
    }
}

fn basic_header(password: &str) -> String {
    header(&basic(password)).to_str().unwrap().to_owned()
}

fn client(port: u16, password: &str) -> EsClient {
    EsClient::new(&EsSettings {
        tcp_mss: None,
        host: "127.0.0.1".into(),
        port,
        use_ssl: false,
        verify_certs: true,
        ca_cert_pem: None,
        auth: Some(basic(password)),
        index: "documents".into(),
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        client_identity: None,
    })
    .unwrap()
}

/// A refresher that answers `passwords` in turn (the last one from then on), and counts
/// its calls.
fn refresher(
    passwords: &'static [&'static str],
) -> (
    Arc<AtomicUsize>,
    impl Fn() -> AuthFuture + Send + Sync + 'static,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let fetch = move || -> AuthFuture {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let password = passwords[n.min(passwords.len() - 1)];
        Box::pin(async move { Ok(basic(password)) })
    };
    (calls, fetch)
}

const INTERVAL: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_401_rereads_the_secret_and_resends_the_request_once() {
    let rotated = basic_header("rotated-pw-2");
    let (port, seen) = cluster(move |auth| if auth == rotated { 200 } else { 401 }).await;
    let (calls, fetch) = refresher(&["rotated-pw-2"]);
    let es = client(port, "old-pw-1").with_auth_refresh(INTERVAL, fetch);

    let (status, _) = es
        .send(
            Method::POST,
            "/documents/_refresh",
            Some((b"{\"a\":1}".to_vec(), "application/json")),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            vec![
                (basic_header("old-pw-1"), "{\"a\":1}".to_owned()),
                (basic_header("rotated-pw-2"), "{\"a\":1}".to_owned()),
            ],
            "the same request, body included, sent again with the new credentials"
        );
    }

    // Every clone uses the new header from now on, without reading the secret again.
    let (status, _) = es.clone().send(Method::GET, "/", None).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(seen.lock().unwrap()[2].0, basic_header("rotated-pw-2"));

    let debug = format!("{es:?}");
    assert!(
        !debug.contains("rotated-pw-2") && !debug.contains(&basic_header("rotated-pw-2")),
        "{debug}"
    );
}

#[tokio::test]
async fn a_second_401_is_returned_and_the_secret_is_not_read_again_within_the_interval() {
    let (port, seen) = cluster(|_| 401).await;
    let (calls, fetch) = refresher(&["new-pw-2", "new-pw-3"]);
    let es = client(port, "old-pw-1").with_auth_refresh(INTERVAL, fetch);

    let (status, body) = es.send(Method::GET, "/", None).await.unwrap();
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&body).contains("security_exception"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(seen.lock().unwrap().len(), 2, "sent again once, not more");

    // Within the interval: the refused credentials stay, no read, no resend.
    let (status, _) = es.send(Method::GET, "/", None).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn the_interval_bounds_the_reads_and_an_unchanged_secret_is_not_resent() {
    let (port, seen) = cluster(|_| 401).await;
    // The secret still holds the refused password: read (the interval allows it) but not
    // resent, since the same credentials would be refused again.
    let (calls, fetch) = refresher(&["old-pw-1"]);
    let es = client(port, "old-pw-1").with_auth_refresh(Duration::ZERO, fetch);
    for round in 1..=2 {
        let (status, _) = es.send(Method::GET, "/", None).await.unwrap();
        assert_eq!(status, 401);
        assert_eq!(calls.load(Ordering::SeqCst), round);
        assert_eq!(seen.lock().unwrap().len(), round);
    }
}

#[tokio::test]
async fn a_failed_read_returns_the_401() {
    let (port, seen) = cluster(|_| 401).await;
    let es = client(port, "old-pw-1").with_auth_refresh(INTERVAL, || -> AuthFuture {
        Box::pin(async { Err("ES_SECRET_ID sakuin/es: could not be read: AccessDenied".into()) })
    });
    let (status, _) = es.send(Method::GET, "/", None).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_401s_read_the_secret_once() {
    let rotated = basic_header("rotated-pw-2");
    let (port, _seen) = cluster(move |auth| if auth == rotated { 200 } else { 401 }).await;
    let (calls, fetch) = refresher(&["rotated-pw-2"]);
    let es = client(port, "old-pw-1").with_auth_refresh(INTERVAL, fetch);
    let answers =
        futures::future::join_all((0..8).map(|_| es.send(Method::GET, "/_cluster/health", None)))
            .await;
    for answer in answers {
        assert_eq!(answer.unwrap().0, 200);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn without_a_refresher_a_401_is_answered_as_it_is() {
    let (port, seen) = cluster(|_| 401).await;
    let (status, _) = client(port, "old-pw-1")
        .send(Method::GET, "/", None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert_eq!(seen.lock().unwrap().len(), 1);
}
