//! `elasticsearch.link`: whether the link to the cluster carries the workers' `_bulk` requests
//! within their timeout. A VPN or a Direct Connect hosted connection of a few megabits, or a
//! path across an ocean, answers `GET /` at once while a 10 MiB `_bulk` takes minutes: every
//! batch then times out and is retried, and nothing says why. The round trip (the fastest of a
//! few small requests) and the upload rate (padded `_count` requests, which the cluster reads
//! through and answers cheaply) give the time one `_bulk` of `ES_BULK_MAX_BYTES` needs; more
//! than half of `ES_TIMEOUT_SECS` (the cluster needs the rest to index it) fails the check,
//! with the bulk size that would fit.

use std::time::{Duration, Instant};

use reqwest::Method;

use super::path_mtu::padded_count_of;
use super::{CheckResult, Layer, ProbeDeps};
use crate::es::EsClient;

pub(super) const NAME: &str = "elasticsearch.link";

/// The upload is measured with a request of this size, and then with a larger one (up to
/// `LARGE`, sized to a quarter of the probe's budget at the first estimate); the difference of
/// the two takes the fixed costs out.
const SMALL: usize = 64 * 1024;
const LARGE: usize = 1024 * 1024;
/// One `_bulk` may take this share of `ES_TIMEOUT_SECS` to cross the link.
const SHARE_OF_TIMEOUT: f64 = 0.5;

pub(super) async fn check(deps: &ProbeDeps, client: &EsClient) -> CheckResult {
    let started = Instant::now();
    let ms = || started.elapsed().as_millis() as u64;
    let measured = tokio::time::timeout(deps.config.timeout, measure(client, deps.config.timeout));
    let (rtt, rate) = match measured.await {
        Ok(Ok(figures)) => figures,
        Ok(Err(e)) => return CheckResult::fail(NAME, Layer::Link, ms(), e),
        Err(_) => {
            return CheckResult::fail(
                NAME,
                Layer::Link,
                ms(),
                format!(
                    "a {} KiB request did not cross the link within {} s",
                    SMALL / 1024,
                    deps.config.timeout.as_secs()
                ),
            )
            .hint("the link is far slower than a few hundred kbit/s, or something holds larger requests: check the VPN's bandwidth and what else shares it");
        }
    };
    judge(deps, rtt, rate, ms())
}

/// The round trip and the upload rate (bytes a second).
async fn measure(client: &EsClient, budget: Duration) -> Result<(Duration, f64), String> {
    let mut rtt = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        client.version().await.map_err(|e| e.to_string())?;
        rtt = rtt.min(t.elapsed());
    }
    let small = upload(client, SMALL).await?;
    let (bytes, secs) = if small < budget / 10 {
        let large = upload(client, LARGE).await?;
        (
            (LARGE - SMALL) as f64,
            large.saturating_sub(small).as_secs_f64(),
        )
    } else {
        (SMALL as f64, small.saturating_sub(rtt).as_secs_f64())
    };
    Ok((rtt, bytes / secs.max(1e-4)))
}

/// How long a padded `_count` of `bytes` takes to be answered.
async fn upload(client: &EsClient, bytes: usize) -> Result<Duration, String> {
    let path = format!("/{}/_count", crate::es::client::encode_path(&client.index));
    let body = Some((padded_count_of(bytes), "application/json"));
    let t = Instant::now();
    client
        .send(Method::POST, &path, body)
        .await
        .map_err(|e| format!("a {} KiB request failed: {e}", bytes / 1024))?;
    Ok(t.elapsed())
}

/// Whether one `_bulk` of `ES_BULK_MAX_BYTES` crosses a link of round trip `rtt` and upload
/// `rate` (bytes a second) within its share of `ES_TIMEOUT_SECS`.
fn judge(deps: &ProbeDeps, rtt: Duration, rate: f64, ms: u64) -> CheckResult {
    let bulk = deps.config.bulk_max_bytes as f64;
    let timeout = deps.config.worker_es_timeout.as_secs_f64();
    let crossing = rtt.as_secs_f64() + bulk / rate;
    let allowed = timeout * SHARE_OF_TIMEOUT;
    let said = format!(
        "round trip {:.0} ms, upload {}: a {} _bulk (ES_BULK_MAX_BYTES) crosses in {}",
        rtt.as_secs_f64() * 1e3,
        megabits(rate),
        mib(bulk),
        seconds(crossing)
    );
    let result = if crossing <= allowed {
        CheckResult::pass(
            NAME,
            ms,
            format!("{said}, within ES_TIMEOUT_SECS ({timeout:.0} s)"),
        )
    } else {
        let fits = ((allowed - rtt.as_secs_f64()) * rate * 0.8).max(64.0 * 1024.0);
        CheckResult::fail(
            NAME,
            Layer::Link,
            ms,
            format!("{said}, more than half of ES_TIMEOUT_SECS ({timeout:.0} s): every batch of that size would time out and be retried"),
        )
        .hint(format!(
            "set ES_BULK_MAX_BYTES (template parameter EsBulkMaxBytes) to {} or less, or raise ES_TIMEOUT_SECS; and look at the link: the VPN's or Direct Connect connection's bandwidth, and what else shares it",
            mib(fits)
        ))
    };
    result
        .metric("LinkRoundTripMs", rtt.as_secs_f64() * 1e3)
        .metric("LinkUploadMbps", rate * 8.0 / 1e6)
        .metric("BulkCrossingSeconds", crossing)
}

fn megabits(bytes_per_second: f64) -> String {
    let mbps = bytes_per_second * 8.0 / 1e6;
    if mbps >= 100.0 {
        format!("{mbps:.0} Mbit/s")
    } else {
        format!("{mbps:.1} Mbit/s")
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

fn seconds(secs: f64) -> String {
    if secs < 10.0 {
        format!("{secs:.2} s")
    } else {
        format!("{secs:.0} s")
    }
}
