//! `elasticsearch.path_mtu`: whether full-size TCP segments cross the path to the cluster, and,
//! where they do not, the largest segment size that does.
//!
//! A path-MTU blackhole (a link with a smaller MTU than the hosts believe, and the ICMP
//! "fragmentation needed" that would tell them dropped on the way) lets TCP connect and small
//! requests through, and loses every full-size segment: the server's certificate chain in the
//! TLS handshake (cluster to function), a large request body (function to cluster). Both stall
//! rather than fail. So when one stalls, the same exchange is tried again with the segment size
//! clamped (`TCP_MAXSEG` before `connect`, which the SYN advertises to the other end too), at
//! several sizes at once: the largest that completes is the path's, and the cause is named.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;

use super::tls::{self, HandshakeError};
use super::{CheckResult, Layer, ProbeDeps, timed};
use crate::es::{EsClient, EsSettings};

pub(super) const NAME: &str = "elasticsearch.path_mtu";

/// How long one clamped attempt may take: it crosses a working path in a few round trips.
const ATTEMPT: Duration = Duration::from_secs(2);

/// The first round's segment sizes, tried at once: standard Ethernet's 1460 down to IPv4's
/// minimum, closest together where tunnels put the limit.
const FIRST_ROUND: &[u32] = &[
    1460, 1420, 1380, 1340, 1300, 1260, 1220, 1180, 1100, 1000, 800, 536,
];

/// The body of the client-to-cluster test: a `_count` query padded with JSON whitespace to a
/// few full-size segments.
pub(super) fn padded_count_body() -> Vec<u8> {
    padded_count_of(PADDED_BYTES)
}

/// A `_count` body of `bytes` bytes: a query padded with spaces, which Elasticsearch reads
/// through and answers cheaply.
pub(super) fn padded_count_of(bytes: usize) -> Vec<u8> {
    let mut body = br#"{"query":{"match_all":{}}}"#.to_vec();
    body.resize(bytes.max(body.len()), b' ');
    body
}

/// The size of the padded request: four full-size segments and more.
const PADDED_BYTES: usize = 6 * 1024;

/// The largest segment size for which `works` completes, to within 4 bytes: `FIRST_ROUND` at
/// once, then finer rounds between the largest that passed and the next size up; `None` when
/// no size works.
pub(super) async fn largest_passing<F, Fut>(works: F) -> Option<u32>
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = bool>,
{
    let passed = |sizes: Vec<u32>| {
        let tries: Vec<Fut> = sizes.iter().map(|&mss| works(mss)).collect();
        async move {
            let results = join_all(tries).await;
            sizes
                .into_iter()
                .zip(results)
                .filter(|(_, ok)| *ok)
                .map(|(mss, _)| mss)
                .max()
        }
    };
    let mut best = passed(FIRST_ROUND.to_vec()).await?;
    let Some(&(mut above)) = FIRST_ROUND.iter().rev().find(|&&m| m > best) else {
        return Some(best);
    };
    // Finer rounds between the largest size that passed and the next that did not, to within
    // 4 bytes: one round where the first is dense, two where it is sparse.
    for _ in 0..2 {
        let step = (above - best).div_ceil(10).max(1);
        let finer: Vec<u32> = (1..)
            .map(|i| best + i * step)
            .take_while(|&m| m < above)
            .collect();
        if let Some(m) = passed(finer.clone()).await {
            best = m;
        }
        above = finer.into_iter().find(|&m| m > best).unwrap_or(above);
        if step <= 4 {
            break;
        }
    }
    Some(best)
}

/// The report of a blackhole found `direction` ("on the way from ... to ..."), with the segment
/// size that passed.
pub(super) fn blackhole(direction: &str, mss: u32, ms: u64, stalled: &str) -> CheckResult {
    CheckResult::fail(
        NAME,
        Layer::PathMtu,
        ms,
        format!(
            "a path-MTU blackhole {direction}: {stalled}, \
             yet with TCP segments of at most {mss} bytes it completes. A link on the way takes \
             packets of at most about {} bytes, and the ICMP \"fragmentation needed\" that would \
             tell the sender is dropped",
            mss + 40
        ),
    )
    .hint(format!(
        "fix the network: clamp the TCP MSS on the VPN device or firewall to {mss} or less \
         (AWS Site-to-Site VPN supports an MTU of 1446 / MSS 1406 at most, less with some \
         algorithms: https://docs.aws.amazon.com/vpn/latest/s2svpn/cgw-best-practice.html), or \
         let ICMP type 3 code 4 through. Until then set EsTcpMss (ES_TCP_MSS) to {mss}: every \
         connection sakuin opens to Elasticsearch then clamps its segments"
    ))
    .metric("PathMss", f64::from(mss))
}

/// After GET / answered: a request larger than one packet must get its answer too. When it
/// does not, the same request with clamped segments tells a blackhole from a slow cluster.
pub(super) async fn check_upstream(deps: &ProbeDeps, client: &EsClient) -> CheckResult {
    let budget = deps.config.timeout;
    let (answer, ms) = timed(tokio::time::timeout(budget, padded_count(client))).await;
    let kb = PADDED_BYTES / 1024;
    let clamped = client
        .tcp_mss()
        .map(|m| format!(" (segments clamped to {m} bytes by ES_TCP_MSS)"))
        .unwrap_or_default();
    match answer {
        Ok(Ok(_)) => {
            let detail = format!("a {kb} KB request got its answer in {ms} ms{clamped}");
            return CheckResult::pass(NAME, ms, detail);
        }
        // Not a stall: the HTTP check already said whether the cluster answers.
        Ok(Err(e)) if client.tcp_mss().is_some() || !stalled(&e) => {
            return CheckResult::fail(NAME, Layer::Http, ms, e.to_string());
        }
        _ => {}
    }
    let stalled_words = format!(
        "GET / is answered, but a {kb} KB request got no answer within {}",
        super::secs(budget)
    );
    if client.tcp_mss().is_some() {
        return CheckResult::fail(
            NAME,
            Layer::PathMtu,
            ms,
            format!("{stalled_words}{clamped}"),
        )
        .hint(
            "lower ES_TCP_MSS, or look for what holds large requests on the way (a proxy, a WAF)",
        );
    }
    let (found, more) = timed(largest_passing(|mss| clamped_count(deps, mss))).await;
    match found {
        Some(mss) => blackhole(
            "on the way from the function to the cluster",
            mss,
            ms + more,
            &stalled_words,
        ),
        None => CheckResult::fail(NAME, Layer::PathMtu, ms + more, format!(
            "{stalled_words}, nor with TCP segments clamped down to {} bytes: not a path-MTU problem",
            FIRST_ROUND[FIRST_ROUND.len() - 1]
        ))
        .hint("something on the way holds large requests (a proxy, a WAF, an IPS): check what sits between the VPC and the cluster"),
    }
}

/// The padded `_count` request on `client`'s index; any HTTP answer is an answer.
async fn padded_count(client: &EsClient) -> Result<(), crate::es::EsError> {
    let path = format!("/{}/_count", crate::es::client::encode_path(&client.index));
    let body = Some((padded_count_body(), "application/json"));
    client.send(Method::POST, &path, body).await.map(|_| ())
}

/// Whether the padded request gets its answer with segments of at most `mss` bytes (through
/// the same relay `ES_TCP_MSS` uses).
async fn clamped_count(deps: &ProbeDeps, mss: u32) -> bool {
    let settings = EsSettings {
        tcp_mss: Some(mss),
        timeout: ATTEMPT,
        ..deps.config.es.clone()
    };
    match EsClient::new(&settings) {
        Ok(client) => padded_count(&client).await.is_ok(),
        Err(_) => false,
    }
}

/// After a TLS handshake stalled: handshakes with clamped segments, to name a blackhole on the
/// way from the cluster (its certificate chain is the first large flight).
pub(super) async fn after_handshake_stall(
    deps: &ProbeDeps,
    addr: SocketAddr,
    stalled: &str,
) -> Option<CheckResult> {
    let trust = deps.tls.as_ref().ok()?;
    let es = &deps.config.es;
    let (found, ms) = timed(largest_passing(|mss| async move {
        // A certificate the verifier refuses still crossed the path.
        matches!(
            tls::handshake(trust, addr, &es.host, es.verify_certs, Some(mss), ATTEMPT).await,
            Ok(_) | Err(HandshakeError::Certificate { .. })
        )
    }))
    .await;
    // The handshake's large flights go both ways (a client hello with a post-quantum key share
    // is over 1,400 bytes, the server's chain several KB), so either direction can be the one.
    found.map(|mss| {
        blackhole(
            "between the function and the cluster (the TLS handshake's client hello or certificate chain)",
            mss,
            ms,
            stalled,
        )
    })
}

/// Whether a failed request looks like a stall (a timeout) rather than an answer or a refusal.
fn stalled(e: &crate::es::EsError) -> bool {
    matches!(e, crate::es::EsError::Unreachable { timeout: true, .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_rounds_find_the_largest_size_that_passes() {
        for limit in [1360, 1379, 1406, 1200, 1460, 600] {
            let found = largest_passing(|mss| async move { mss <= limit }).await;
            let found = found.unwrap();
            assert!(found <= limit && limit - found < 5, "{limit}: {found}");
        }
        assert_eq!(largest_passing(|_| async { false }).await, None);
        assert_eq!(largest_passing(|_| async { true }).await, Some(1460));
    }

    #[test]
    fn the_padded_body_is_json_of_several_segments() {
        let body = padded_count_body();
        assert!(body.len() > 4 * 1460);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed, serde_json::json!({"query": {"match_all": {}}}));
    }
}
