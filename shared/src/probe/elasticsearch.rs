//! Elasticsearch, layer by layer, stopping at the first layer that fails: DNS, TCP, TLS (when
//! `ES_USE_SSL`), HTTP, authentication, authorisation and cluster health, the target index.

use crate::es::version::{IndexType, OLDEST_SUPPORTED, Version, choose_index_type};
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rustls::CertificateError;
use serde_json::{Value, json};

use super::tls::{self, HandshakeError, LeafCertificate, TlsTrust};
use super::{CheckResult, Layer, ProbeDeps, path_mtu, secs, timed};
use crate::es::client::analyzer_plugin;
use crate::es::document::mapped_dimensions;
use crate::es::{EsAuth, EsClient, EsError};

const ROUTE_HINT: &str = "check, in order: the Lambda subnet's route table has a route to the on-premises CIDR through the VPN / Direct Connect gateway, \
     the security group allows egress to this address and port, the on-premises firewall allows the VPC's CIDR in, and the VPN tunnel or Direct Connect virtual interface is up";

pub(super) async fn check(deps: &ProbeDeps) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let es = &deps.config.es;
    // DNS: which addresses the name gives, from where the probe runs.
    let Some(addrs) = resolve(&es.host, es.port, deps.config.timeout, &mut out).await else {
        return out;
    };
    let Some(addr) = check_tcp(deps, &addrs, &mut out).await else {
        return out;
    };
    if es.use_ssl && !check_tls_layer(deps, addr, &mut out).await {
        return out;
    }
    let client = match &deps.es {
        Ok(c) => c,
        Err(e) => {
            out.push(
                CheckResult::fail("elasticsearch.http", Layer::Config, 0, e.clone())
                    .hint("fix the ES_* settings the message names"),
            );
            return out;
        }
    };
    let Some((status, body, release)) = check_http(deps, client, &mut out).await else {
        return out;
    };
    // Large requests: a small GET / crosses a path-MTU blackhole, a `_bulk` body does not.
    if !passed(&mut out, path_mtu::check_upstream(deps, client).await) {
        return out;
    }
    // Authentication: 401 is the credentials; 403 means they were accepted.
    let (auth, ms) = timed(check_auth(deps, client, status, &body)).await;
    if !passed(&mut out, CheckResult { ms, ..auth }) {
        return out;
    }
    // Cluster health, which also needs the `monitor` privilege.
    let (cluster, ms) = timed(check_cluster(client)).await;
    if !passed(&mut out, CheckResult { ms, ..cluster }) {
        return out;
    }
    // The link's capacity against the workers' `_bulk` size: a failure does not stop the rest.
    out.push(super::link::check(deps, client).await);
    let (index, ms) = timed(check_index(deps, client, release)).await;
    out.push(CheckResult { ms, ..index });
    out
}

/// Adds `result` to the report; whether the next layer may run.
fn passed(out: &mut Vec<CheckResult>, result: CheckResult) -> bool {
    let ok = result.ok;
    out.push(result);
    ok
}

/// TCP to every address the name gives, all at once within the connect timeout: refused (a
/// host answered) or timed out (the packets went nowhere). The worker connects to whichever
/// address the resolver hands it, so one dead address among live ones fails a share of its
/// requests while the others pass: the check fails naming it, and the next layers go on over
/// a live address. Returns that address; `None` when none connects.
async fn check_tcp(
    deps: &ProbeDeps,
    addrs: &[SocketAddr],
    out: &mut Vec<CheckResult>,
) -> Option<SocketAddr> {
    let timeout = deps.config.es.connect_timeout.min(deps.config.timeout);
    let (tried, ms) = timed(connect_each(addrs, timeout)).await;
    let live: Vec<SocketAddr> = tried
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(a, _)| *a)
        .collect();
    let Some(&first) = live.first() else {
        let (detail, mut hint) = describe_failures(&tried);
        let lost = tried.iter().find_map(|(addr, r)| match r {
            Err(ConnectFailure::TimedOut(_) | ConnectFailure::Unroutable(_)) => Some(*addr),
            _ => None,
        });
        let (aws_side, read_ms) = match (lost, &deps.config.placement) {
            (Some(addr), Some(placement)) => timed(read_aws_side(deps, placement, addr)).await,
            _ => (None, 0),
        };
        if let Some(aws_side) = aws_side {
            hint = aws_side;
        }
        out.push(
            CheckResult::fail("elasticsearch.tcp", Layer::Tcp, ms + read_ms, detail).hint(hint),
        );
        return None;
    };
    let down = tried.len() - live.len();
    let mut result = if down == 0 {
        let detail = match live.len() {
            1 => format!("connected to {first}"),
            n => {
                let listed: Vec<String> = live.iter().map(ToString::to_string).collect();
                format!(
                    "connected to each of the {n} addresses: {}",
                    listed.join(", ")
                )
            }
        };
        CheckResult::pass("elasticsearch.tcp", ms, detail)
    } else {
        let failed: Vec<(SocketAddr, Result<(), ConnectFailure>)> =
            tried.iter().filter(|(_, r)| r.is_err()).cloned().collect();
        let (problems, cause) = describe_failures(&failed);
        let host = &deps.config.es.host;
        let detail = format!(
            "{} of {} addresses of {host} answer; {problems}",
            live.len(),
            tried.len()
        );
        let hint = format!(
            "the worker connects to whichever address the resolver gives it, so a share of its connections fail:              take the dead address out of the name's records (or the cluster's load balancer), or fix it — {cause}"
        );
        CheckResult::fail("elasticsearch.tcp", Layer::Tcp, ms, detail).hint(hint)
    };
    result.metrics.insert("AddressesDown".into(), down as f64);
    out.push(result);
    Some(first)
}

/// What the VPC's configuration says about the path to `addr`, as the hint of a failed connect;
/// `None` keeps the general one (when the configuration cannot be read, the reason is added).
async fn read_aws_side(
    deps: &ProbeDeps,
    placement: &super::vpc_path::Placement,
    addr: SocketAddr,
) -> Option<String> {
    let reading = tokio::time::timeout(
        deps.config.timeout,
        super::vpc_path::read(&deps.aws.ec2, placement, addr),
    )
    .await;
    Some(match reading {
        Ok(Ok(reading)) => reading.hint(addr.port()),
        Ok(Err(e)) => format!(
            "{ROUTE_HINT} (the probe could not read the AWS side itself: {e}; it needs ec2:Describe* on its role)"
        ),
        Err(_) => format!(
            "{ROUTE_HINT} (the probe could not read the AWS side itself within {}: the EC2 API did not answer)",
            secs(deps.config.timeout)
        ),
    })
}

/// TLS: our own handshake, to tell the certificate problems apart; a stalled one is tried again
/// with smaller TCP segments, which tells a path-MTU blackhole from a wrong port. Whether the
/// next layer may run.
async fn check_tls_layer(deps: &ProbeDeps, addr: SocketAddr, out: &mut Vec<CheckResult>) -> bool {
    let (mut result, stalled) = check_tls(deps, addr).await;
    let diagnosis = match stalled && deps.config.es.tcp_mss.is_none() {
        true => path_mtu::after_handshake_stall(deps, addr, &result.detail).await,
        false => None,
    };
    if let Some(found) = &diagnosis {
        result.detail.push_str(&format!(
            "; with smaller TCP segments it completes: a path-MTU blackhole ({})",
            path_mtu::NAME
        ));
        result.hint = found.hint.clone();
    }
    let ok = passed(out, result);
    out.extend(diagnosis);
    ok
}

/// HTTP: any answer to GET / counts; its status decides the auth layer. The status, the body
/// and the release it reports, when the next layer may run.
async fn check_http(
    deps: &ProbeDeps,
    client: &EsClient,
    out: &mut Vec<CheckResult>,
) -> Option<(StatusCode, Vec<u8>, Option<Version>)> {
    let es = &deps.config.es;
    let (answer, ms) = timed(client.send(Method::GET, "/", None)).await;
    let (status, body) = match answer {
        Ok(a) => a,
        Err(e) => {
            out.push(http_failure(e, es.use_ssl, deps.config.timeout, ms));
            return None;
        }
    };
    if !(status.is_success()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN)
    {
        out.push(http_refusal(client, status, &body, ms));
        return None;
    }
    let root: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let number = root.pointer("/version/number").and_then(Value::as_str);
    let release = number.and_then(Version::parse);
    let version = number
        .map(|v| format!(", Elasticsearch {v}"))
        .unwrap_or_default();
    let cluster = root
        .get("cluster_name")
        .and_then(Value::as_str)
        .map(|n| format!(", cluster {n}"))
        .unwrap_or_default();
    let detail = format!(
        "HTTP {} from {} in {ms} ms{version}{cluster}",
        status.as_u16(),
        client.base_url()
    );
    if let Some(release) = release.filter(|r| *r < OLDEST_SUPPORTED) {
        out.push(
            CheckResult::fail(
                "elasticsearch.http",
                Layer::Version,
                ms,
                format!("{detail}: older than {OLDEST_SUPPORTED}, the oldest release sakuin supports (it needs the knn search option)"),
            )
            .hint(format!("upgrade the cluster from {release} to {OLDEST_SUPPORTED} or later")),
        );
        return None;
    }
    out.push(if status.is_success() && version.is_empty() {
        CheckResult::warn("elasticsearch.http", ms, format!("{detail}, but the answer to GET / is not Elasticsearch's (no version number)"))
            .hint("check ES_HOST / ES_PORT point at Elasticsearch's HTTP port and not at a proxy's or another service's page")
    } else {
        CheckResult::pass("elasticsearch.http", ms, detail)
    });
    Some((status, body, release))
}

/// An HTTP answer to GET / that is neither Elasticsearch's nor an authentication refusal.
fn http_refusal(client: &EsClient, status: StatusCode, body: &[u8], ms: u64) -> CheckResult {
    let (detail, hint) = match status.as_u16() {
        502..=504 => (
            format!(
                "HTTP {status} from {}: a proxy or load balancer in front of Elasticsearch has no healthy node behind it",
                client.base_url()
            ),
            "check the Elasticsearch nodes and whatever balances in front of them",
        ),
        s if s >= 500 => (
            format!(
                "HTTP {status} from {}: {}",
                client.base_url(),
                es_reason(body)
            ),
            "Elasticsearch is up but failing: read its logs",
        ),
        _ => (
            format!(
                "HTTP {status} for GET / from {}: this does not look like Elasticsearch",
                client.base_url()
            ),
            "check ES_HOST / ES_PORT point at Elasticsearch's HTTP port (9200 by default), not a proxy or another service",
        ),
    };
    CheckResult::fail("elasticsearch.http", Layer::Http, ms, detail).hint(hint)
}

/// The name's addresses (`elasticsearch.dns`), deduplicated; `None` when it has none.
async fn resolve(
    host: &str,
    port: u16,
    budget: Duration,
    out: &mut Vec<CheckResult>,
) -> Option<Vec<SocketAddr>> {
    let host = host.trim_matches(['[', ']']);
    let (resolved, ms) = timed(tokio::time::timeout(
        budget,
        tokio::net::lookup_host((host, port)),
    ))
    .await;
    let mut addrs: Vec<SocketAddr> = match resolved {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            let detail = format!("{host} does not resolve ({e})");
            return dns_failed(out, ms, detail, UNRESOLVED);
        }
        Err(_) => {
            let detail = format!("resolving {host} did not finish within {}", secs(budget));
            return dns_failed(out, ms, detail, RESOLVER_SILENT);
        }
    };
    addrs.dedup();
    if addrs.is_empty() {
        let detail = format!("{host} resolves to no address");
        return dns_failed(out, ms, detail, UNRESOLVED);
    }
    let detail = if host.parse::<std::net::IpAddr>().is_ok() {
        format!("{host} is an IP address (no lookup)")
    } else {
        let listed: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        format!("{host} → {}", listed.join(", "))
    };
    out.push(CheckResult::pass("elasticsearch.dns", ms, detail));
    Some(addrs)
}

const UNRESOLVED: &str = "check the name is right and resolvable from the VPC: the VPC's DNS resolution setting, a Route 53 private hosted zone, \
                          or a Route 53 Resolver outbound endpoint and forwarding rule for the on-premises domain (a laptop resolves with its own DNS)";
const RESOLVER_SILENT: &str = "the DNS resolver does not answer: check the VPC's resolver, or the Route 53 Resolver outbound endpoint's security group and the on-premises DNS servers it forwards to";

/// Reports `elasticsearch.dns` failed; there is nothing to connect to.
fn dns_failed(
    out: &mut Vec<CheckResult>,
    ms: u64,
    detail: String,
    hint: &str,
) -> Option<Vec<SocketAddr>> {
    out.push(CheckResult::fail("elasticsearch.dns", Layer::Dns, ms, detail).hint(hint));
    None
}

/// Why a TCP connect failed.
#[derive(Debug, Clone)]
pub(super) enum ConnectFailure {
    Refused,
    Unroutable(String),
    TimedOut(Duration),
    Other(String),
}

/// Connects to each address at once, each within `timeout`; the outcome per address, in the
/// order given (the connections made are closed).
pub(super) async fn connect_each(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Vec<(SocketAddr, Result<(), ConnectFailure>)> {
    let attempts = addrs.iter().map(|&addr| async move {
        let outcome = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
                std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
                    ConnectFailure::Unroutable(e.to_string())
                }
                _ => ConnectFailure::Other(e.to_string()),
            }),
            Err(_) => Err(ConnectFailure::TimedOut(timeout)),
        };
        (addr, outcome)
    });
    futures::future::join_all(attempts).await
}

/// What failed connects say, per address, and the hint for the worst of them: a timeout
/// (packets dropped on the way), no route, or a refusal (a host answered).
pub(super) fn describe_failures(
    tried: &[(SocketAddr, Result<(), ConnectFailure>)],
) -> (String, String) {
    let mut problems = Vec::new();
    let (mut refused, mut silent, mut unroutable) = (false, false, false);
    for (addr, outcome) in tried {
        match outcome {
            Ok(()) => {}
            Err(ConnectFailure::Refused) => {
                refused = true;
                problems.push(format!("{addr} refused the connection"));
            }
            Err(ConnectFailure::Unroutable(e)) => {
                unroutable = true;
                problems.push(format!("{addr}: {e}"));
            }
            Err(ConnectFailure::TimedOut(after)) => {
                silent = true;
                problems.push(format!(
                    "{addr} did not answer within {} (connect timed out)",
                    secs(*after)
                ));
            }
            Err(ConnectFailure::Other(e)) => problems.push(format!("{addr}: {e}")),
        }
    }
    let port = tried.first().map(|(a, _)| a.port()).unwrap_or_default();
    let hint = if silent {
        format!("a connect that times out means the packets are dropped on the way: {ROUTE_HINT}")
    } else if unroutable {
        format!("there is no route to the address: {ROUTE_HINT}")
    } else if refused {
        format!(
            "the host answered but nothing accepts port {port}: is Elasticsearch running and listening on this interface (network.host / http.port), \
             is ES_PORT right, or does a firewall reject (rather than drop) the connection?"
        )
    } else {
        ROUTE_HINT.to_owned()
    };
    (problems.join(" / "), hint)
}

/// The TLS check, and whether the handshake stalled (no answer in time after TCP connected).
async fn check_tls(deps: &ProbeDeps, addr: SocketAddr) -> (CheckResult, bool) {
    const NAME: &str = "elasticsearch.tls";
    let es = &deps.config.es;
    let trust = match &deps.tls {
        Ok(t) => t,
        Err(e) => {
            let result = CheckResult::fail(NAME, Layer::Tls, 0, e.clone())
                .hint("ES_CA_CERT must be PEM text or the path of a PEM file holding the cluster's CA certificate(s)");
            return (result, false);
        }
    };
    let budget = deps.config.timeout;
    let (result, ms) = timed(tls::handshake(
        trust,
        addr,
        &es.host,
        es.verify_certs,
        es.tcp_mss,
        budget,
    ))
    .await;
    let stalled = matches!(result, Err(HandshakeError::Timeout(_)));
    (tls_result(deps, trust, addr, result, ms), stalled)
}

/// The TLS check's result for the handshake's outcome.
fn tls_result(
    deps: &ProbeDeps,
    trust: &TlsTrust,
    addr: SocketAddr,
    result: Result<tls::Handshake, HandshakeError>,
    ms: u64,
) -> CheckResult {
    let context = TlsContext {
        now: chrono::Utc::now().timestamp(),
        trusted: if trust.extra_roots > 0 {
            "the system roots or ES_CA_CERT"
        } else {
            "the system roots (ES_CA_CERT is not set)"
        },
        addr,
        ms,
    };
    match result {
        Ok(hs) => handshake_passed(deps, &hs, &context),
        Err(e) => handshake_failed(deps, e, &context),
    }
}

/// What every TLS outcome is described with.
struct TlsContext {
    now: i64,
    /// The roots the verifier trusted, in words.
    trusted: &'static str,
    addr: SocketAddr,
    ms: u64,
}

/// A completed handshake: the certificate, its expiry, and a warning when verification is off.
fn handshake_passed(deps: &ProbeDeps, hs: &tls::Handshake, context: &TlsContext) -> CheckResult {
    const NAME: &str = "elasticsearch.tls";
    let es = &deps.config.es;
    let TlsContext {
        now,
        trusted,
        addr,
        ms,
    } = *context;
    let mut detail = format!("{} {} with {addr}", hs.protocol, hs.cipher);
    if hs.client_certificate_accepted {
        detail.push_str(", client certificate accepted");
    }
    let mut warning = false;
    let mut hint = None;
    let mut days = None;
    if let Some(leaf) = &hs.leaf {
        let left = leaf.days_left(now);
        days = Some(left);
        detail.push_str(&format!(
            ", certificate for {} issued by {}, valid until {} ({left} days left)",
            leaf.describe_names(),
            leaf.issuer_cn.as_deref().unwrap_or("?"),
            tls::date(leaf.not_after)
        ));
        let warn_days = i64::from(deps.config.cert_warn_days);
        if left < warn_days {
            warning = true;
            hint = Some(format!(
                "the certificate expires in {left} days (PROBE_CERT_WARN_DAYS={warn_days}): renew the cluster's HTTP certificate before {}",
                tls::date(leaf.not_after)
            ));
        }
    }
    if !es.verify_certs {
        warning = true;
        let would = match &hs.verdict {
            Ok(()) => "it would pass verification".to_owned(),
            Err(e) => format!(
                "it would FAIL verification: {}",
                certificate_problem(e, hs.leaf.as_ref(), &es.host, now, trusted).0
            ),
        };
        detail = format!(
            "certificate verification is OFF (ES_VERIFY_CERTS=false), anyone on the path can read and change the traffic; {would}; {detail}"
        );
        hint =
            Some("set ES_CA_CERT to the cluster's CA certificate and ES_VERIFY_CERTS=true".into());
    }
    let mut result = if warning {
        CheckResult::warn(NAME, ms, detail)
    } else {
        CheckResult::pass(NAME, ms, detail)
    };
    result.hint = hint;
    match days {
        Some(d) => result.metric("CertDaysLeft", d as f64),
        None => result,
    }
}

/// A handshake that failed: the certificate, a stall, the connection, or the protocol.
fn handshake_failed(deps: &ProbeDeps, error: HandshakeError, context: &TlsContext) -> CheckResult {
    const NAME: &str = "elasticsearch.tls";
    let es = &deps.config.es;
    let TlsContext {
        now,
        trusted,
        addr,
        ms,
    } = *context;
    match error {
        HandshakeError::Certificate { error, leaf } => {
            let (detail, hint) = certificate_problem(&error, leaf.as_ref(), &es.host, now, trusted);
            let result = CheckResult::fail(NAME, Layer::Tls, ms, detail).hint(hint);
            match leaf {
                Some(l) => result.metric("CertDaysLeft", l.days_left(now) as f64),
                None => result,
            }
        }
        HandshakeError::Timeout(t) => CheckResult::fail(
            NAME,
            Layer::Tls,
            ms,
            format!("{addr} accepted TCP but no TLS handshake answer came within {}", secs(t)),
        )
        .hint("is this the TLS port? a server that waits for plain HTTP never answers a ClientHello; otherwise a firewall or proxy may hold TLS traffic (check ES_PORT and ES_USE_SSL)"),
        HandshakeError::Connect(e) => CheckResult::fail(NAME, Layer::Tls, ms, format!("could not connect for the handshake: {e}"))
            .hint(ROUTE_HINT),
        HandshakeError::ClientCertificate { offered: false, detail } => CheckResult::fail(
            NAME,
            Layer::Tls,
            ms,
            format!("the server asks for a client certificate and none is configured ({detail})"),
        )
        .hint("the cluster's HTTP layer requires client certificates (xpack.security.http.ssl.client_authentication: required): put the certificate and its key (PEM) in the ES_SECRET_ID secret as client_certificate and client_key (ES_CLIENT_CERT and ES_CLIENT_KEY for the command line), or make client authentication optional on the cluster"),
        HandshakeError::ClientCertificate { offered: true, detail } => CheckResult::fail(
            NAME,
            Layer::Tls,
            ms,
            format!("the server refused the client certificate ({detail})"),
        )
        .hint("the client certificate must be signed by a CA in the cluster's xpack.security.http.ssl.certificate_authorities, be within its validity, and allow client authentication (extendedKeyUsage clientAuth); check the pair in the ES_SECRET_ID secret"),
        HandshakeError::Protocol(io) => {
            let (detail, hint) = match tls::rustls_error(&io) {
                Some(rustls::Error::InvalidMessage(_)) | Some(rustls::Error::InappropriateMessage { .. }) |
                Some(rustls::Error::InappropriateHandshakeMessage { .. }) => (
                    format!("{addr} does not speak TLS ({io})"),
                    "the port answers in plain text: if the cluster serves plain HTTP set ES_USE_SSL=false, otherwise check ES_PORT",
                ),
                Some(rustls::Error::AlertReceived(alert)) => (
                    format!("the server refused the handshake with alert {alert:?}"),
                    "the server and the probe share no protocol version or cipher suite, or the server requires a client certificate (xpack.security.http.ssl.client_authentication)",
                ),
                Some(rustls::Error::PeerIncompatible(why)) => (
                    format!("the server's TLS is incompatible: {why:?}"),
                    "the cluster must offer TLS 1.2 or 1.3 with a modern cipher suite",
                ),
                _ => (
                    format!("the TLS handshake with {addr} failed: {io}"),
                    "a connection closed during the handshake is often a firewall or TLS-inspecting proxy: check what sits between the VPC and the cluster",
                ),
            };
            CheckResult::fail(NAME, Layer::Tls, ms, detail).hint(hint)
        }
    }
}

/// One sentence and one hint for a certificate the verifier refused.
fn certificate_problem(
    error: &rustls::Error,
    leaf: Option<&LeafCertificate>,
    host: &str,
    now: i64,
    trusted: &str,
) -> (String, String) {
    let Some(problem) = tls::certificate_error(error) else {
        return (
            format!("the certificate was refused: {error}"),
            CHECK_THE_CHAIN.into(),
        );
    };
    untrusted(problem, leaf, trusted)
        .or_else(|| wrong_name(problem, leaf, host))
        .or_else(|| out_of_date(problem, leaf, now))
        .unwrap_or_else(|| unfit(problem, leaf))
}

const CHECK_THE_CHAIN: &str = "check the certificate chain the cluster sends and ES_CA_CERT";

/// A certificate whose issuer is not trusted (or that signed itself).
fn untrusted(
    problem: &CertificateError,
    leaf: Option<&LeafCertificate>,
    trusted: &str,
) -> Option<(String, String)> {
    let CertificateError::UnknownIssuer = problem else {
        return None;
    };
    let issuer = leaf
        .and_then(|l| l.issuer_cn.clone())
        .unwrap_or_else(|| "an unknown issuer".into());
    let what = if leaf.is_some_and(|l| l.self_issued) {
        format!("the certificate is self-signed ({issuer}) and not trusted")
    } else {
        format!("the certificate is untrusted: its issuer {issuer} is not in {trusted}")
    };
    Some((
        format!("{what} (unknown issuer)"),
        "set ES_CA_CERT to the PEM of the CA that signed the cluster's HTTP certificate (for a cluster that configured its own security, config/certs/http_ca.crt), or the certificate itself if it is self-signed".into(),
    ))
}

/// A certificate for other names than `ES_HOST`.
fn wrong_name(
    problem: &CertificateError,
    leaf: Option<&LeafCertificate>,
    host: &str,
) -> Option<(String, String)> {
    let presented = match problem {
        CertificateError::NotValidForNameContext { presented, .. } if !presented.is_empty() => {
            presented.join(", ")
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => leaf
            .map(LeafCertificate::describe_names)
            .unwrap_or_else(|| "unknown names".into()),
        _ => return None,
    };
    Some((
        format!("hostname mismatch: the certificate is for {presented}, not {host}"),
        format!(
            "set ES_HOST to a name the certificate holds (resolvable from the VPC, e.g. a Route 53 private zone record), or reissue the cluster's certificate with {host} in its subjectAltName"
        ),
    ))
}

/// A certificate outside its validity: expired, or not valid yet.
fn out_of_date(
    problem: &CertificateError,
    leaf: Option<&LeafCertificate>,
    now: i64,
) -> Option<(String, String)> {
    match problem {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            let when = leaf
                .map(|l| {
                    format!(
                        " on {} ({} days ago)",
                        tls::date(l.not_after),
                        -l.days_left(now)
                    )
                })
                .unwrap_or_default();
            Some((
                format!("the certificate expired{when}"),
                "renew the cluster's HTTP certificate (and check the clocks if it should still be valid)".into(),
            ))
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            let when = leaf
                .map(|l| format!(" until {}", tls::date(l.not_before)))
                .unwrap_or_default();
            Some((
                format!("the certificate is not valid yet{when}"),
                "a clock is wrong (the cluster's CA or this host), or the certificate was issued with a future start date".into(),
            ))
        }
        _ => None,
    }
}

/// A certificate that is not fit to serve TLS at all: its purpose, signature, revocation or
/// CA flag.
fn unfit(problem: &CertificateError, leaf: Option<&LeafCertificate>) -> (String, String) {
    match problem {
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => (
            "the certificate is not meant for TLS servers (its extended key usage lacks serverAuth)".into(),
            "reissue the certificate with extendedKeyUsage=serverAuth".into(),
        ),
        CertificateError::Revoked => ("the certificate is revoked".into(), "reissue the cluster's certificate".into()),
        CertificateError::BadSignature => (
            "the certificate's signature does not verify".into(),
            "the chain is broken or tampered with: check the chain the cluster sends and ES_CA_CERT".into(),
        ),
        CertificateError::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => (
            format!(
                "the server presents a CA certificate (basicConstraints CA:TRUE) as its own{}, which TLS clients refuse even when it is trusted",
                if leaf.is_some_and(|l| l.self_issued) { ", self-signed" } else { "" }
            ),
            "give the cluster a server certificate (CA:FALSE) signed by a CA, e.g. with elasticsearch-certutil http, and set ES_CA_CERT to that CA".into(),
        ),
        other => (
            format!("the certificate was refused: {other:?}"),
            CHECK_THE_CHAIN.into(),
        ),
    }
}

fn http_failure(e: EsError, use_ssl: bool, budget: Duration, ms: u64) -> CheckResult {
    const NAME: &str = "elasticsearch.http";
    match e {
        EsError::Unreachable {
            detail, timeout: true, ..
        } => CheckResult::fail(
            NAME,
            Layer::Http,
            ms,
            format!("connected, but no HTTP answer within {} ({detail})", secs(budget)),
        )
        .hint("Elasticsearch accepted the connection but did not answer: an overloaded or stuck node, or a port that is not Elasticsearch's HTTP port"),
        EsError::Unreachable { detail, .. } if !use_ssl => CheckResult::fail(
            NAME,
            Layer::Http,
            ms,
            format!("the HTTP exchange failed ({detail})"),
        )
        .hint("the port accepted TCP but did not speak plain HTTP: if the cluster serves HTTPS (the default since Elasticsearch 8), set ES_USE_SSL=true"),
        EsError::Unreachable { detail, .. } => CheckResult::fail(
            NAME,
            Layer::Http,
            ms,
            format!("the HTTPS exchange failed after a good TLS handshake ({detail})"),
        )
        .hint("the handshake passed but the request did not: a proxy or a node that closes connections; check the Elasticsearch logs"),
        other => CheckResult::fail(NAME, Layer::Http, ms, other.to_string()),
    }
}

fn describe_auth(auth: Option<&EsAuth>) -> String {
    match auth {
        Some(EsAuth::Basic { username, .. }) => format!("user `{username}`"),
        Some(EsAuth::ApiKey(_)) => "the API key".into(),
        None => "no credentials".into(),
    }
}

async fn check_auth(
    deps: &ProbeDeps,
    client: &EsClient,
    status: StatusCode,
    body: &[u8],
) -> CheckResult {
    const NAME: &str = "elasticsearch.auth";
    let auth = deps.config.es.auth.as_ref();
    let who = describe_auth(auth);
    let secret_problem = deps.es_credentials_problem.as_deref();
    if status == StatusCode::UNAUTHORIZED {
        let reason = es_reason(body);
        let (detail, hint) = match (auth, secret_problem) {
            (_, Some(problem)) => (
                format!("401: the cluster wants credentials, but they could not be loaded: {problem}"),
                "see secretsmanager.secret: the function role needs secretsmanager:GetSecretValue on ES_SECRET_ID (and kms:Decrypt for a customer managed key)".to_owned(),
            ),
            (None, None) => (
                format!("401: the cluster requires credentials and none are configured ({reason})"),
                "set ES_SECRET_ID (or ES_API_KEY, or ES_USERNAME and ES_PASSWORD for local runs)".to_owned(),
            ),
            (Some(_), None) => (
                format!("401: the cluster refused {who} ({reason})"),
                format!("authentication failed, so the credentials themselves are wrong: a mistyped or rotated password, an expired or invalidated API key, or {who} in another realm; fix the value in ES_SECRET_ID (or ES_API_KEY / ES_PASSWORD)"),
            ),
        };
        return CheckResult::fail(NAME, Layer::Auth, 0, detail).hint(hint);
    }
    let identity = identity(client).await;
    let mut detail = match (&identity, status == StatusCode::FORBIDDEN, auth) {
        (Some(id), false, _) => id.clone(),
        (Some(id), true, _) => format!("{id}; GET / is forbidden (403) to it, continuing"),
        (None, true, _) => format!("{who} accepted; GET / is forbidden (403) to it, continuing"),
        (None, false, None) => "no credentials configured and the cluster answered: security is off or anonymous access is on".into(),
        (None, false, Some(_)) => format!("{who} accepted"),
    };
    if let Some(problem) = secret_problem {
        detail.push_str(&format!(
            ", but the credentials from ES_SECRET_ID could not be loaded ({problem})"
        ));
        return CheckResult::warn(NAME, 0, detail)
            .hint("see secretsmanager.secret; embed-index cannot authenticate either");
    }
    CheckResult::pass(NAME, 0, detail)
}

/// Who the cluster thinks we are (`_security/_authenticate`, which needs no privilege beyond
/// being authenticated): user, realm type and roles; `None` where security is off.
async fn identity(client: &EsClient) -> Option<String> {
    let answer = client
        .send(Method::GET, "/_security/_authenticate", None)
        .await;
    let v: Value = match answer {
        Ok((s, b)) if s.is_success() => serde_json::from_slice(&b).ok()?,
        _ => return None,
    };
    let user = v["username"].as_str().unwrap_or("?");
    let roles: Vec<&str> = v["roles"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let via = match v["authentication_type"].as_str().unwrap_or("") {
        "" => String::new(),
        via => format!(" ({via})"),
    };
    Some(format!(
        "authenticated as `{user}`{via} with roles [{}]",
        roles.join(", ")
    ))
}

async fn check_cluster(client: &EsClient) -> CheckResult {
    const NAME: &str = "elasticsearch.cluster";
    let path = "/_cluster/health?level=indices&filter_path=status,cluster_name,number_of_nodes,number_of_data_nodes,unassigned_shards,unassigned_primary_shards,indices.*.status";
    let (status, body) = match client.send(Method::GET, path, None).await {
        Ok(a) => a,
        Err(e) => return CheckResult::fail(NAME, Layer::Cluster, 0, e.to_string()),
    };
    if status == StatusCode::FORBIDDEN {
        return CheckResult::fail(
            NAME,
            Layer::Authz,
            0,
            format!("403: authenticated, but not allowed to read cluster health ({})", es_reason(&body)),
        )
        .hint("authorization, not authentication: grant the `monitor` cluster privilege to the role of the probe's user or API key (or give the probe its own key with `monitor`)");
    }
    if !status.is_success() {
        return CheckResult::fail(
            NAME,
            Layer::Cluster,
            0,
            format!(
                "HTTP {} from _cluster/health: {}",
                status.as_u16(),
                es_reason(&body)
            ),
        );
    }
    let h: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let health = h["status"].as_str().unwrap_or("unknown");
    let nodes = h["number_of_nodes"].as_u64().unwrap_or(0);
    let unassigned = h["unassigned_shards"].as_u64().unwrap_or(0);
    let index = &client.index;
    let index_status = h
        .pointer(&format!(
            "/indices/{}/status",
            index.replace('~', "~0").replace('/', "~1")
        ))
        .and_then(Value::as_str);
    match health {
        "green" => CheckResult::pass(NAME, 0, format!("green, {nodes} node(s)")),
        "yellow" => CheckResult::warn(
            NAME,
            0,
            format!("yellow, {nodes} node(s), {unassigned} unassigned shard(s): replicas are not allocated (normal for a single node)"),
        )
        .hint("on a multi-node cluster, find the unassigned replicas with GET _cluster/allocation/explain"),
        "red" => red_cluster(client, &h, nodes, index_status).await,
        other => CheckResult::fail(NAME, Layer::Cluster, 0, format!("unexpected health status {other:?}")),
    }
}

/// A red cluster: which indices are red (the target among them?), and the allocator's reason.
async fn red_cluster(
    client: &EsClient,
    h: &Value,
    nodes: u64,
    index_status: Option<&str>,
) -> CheckResult {
    const NAME: &str = "elasticsearch.cluster";
    let index = &client.index;
    let mut red: Vec<String> = h["indices"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v["status"] == "red")
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    red.sort();
    let primaries = h["unassigned_primary_shards"]
        .as_u64()
        .map(|n| format!("{n} primary shard(s) unassigned"))
        .unwrap_or_else(|| "some primary shards are unassigned".into());
    let mut detail = format!("red, {nodes} node(s): {primaries}");
    if !red.is_empty() {
        let shown: Vec<&str> = red.iter().take(5).map(String::as_str).collect();
        detail.push_str(&format!(
            "; red indices: {}{}",
            shown.join(", "),
            if red.len() > 5 {
                format!(" and {} more", red.len() - 5)
            } else {
                String::new()
            }
        ));
    }
    if index_status == Some("red") {
        detail.push_str(&format!(
            "; the target index {index} is red, writes to it fail"
        ));
    }
    let explain_index = if index_status == Some("red") {
        Some(index.as_str())
    } else {
        red.first().map(String::as_str)
    };
    if let Some(reason) = allocation_reason(client, explain_index).await {
        detail.push_str(&format!("; reason: {reason}"));
    }
    CheckResult::fail(NAME, Layer::Cluster, 0, detail)
        .hint("a lost data node, full disks (flood-stage watermark) or a failed recovery: check the nodes, their disks and GET _cluster/allocation/explain")
}

/// Why a primary shard is unassigned, from `_cluster/allocation/explain` (best effort).
async fn allocation_reason(client: &EsClient, index: Option<&str>) -> Option<String> {
    let body = index.map(|i| {
        (
            serde_json::to_vec(&json!({"index": i, "shard": 0, "primary": true}))
                .unwrap_or_default(),
            "application/json",
        )
    });
    let (status, bytes) = client
        .send(Method::POST, "/_cluster/allocation/explain", body)
        .await
        .ok()?;
    if !status.is_success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let mut parts = Vec::new();
    if let (Some(i), Some(s)) = (v["index"].as_str(), v["shard"].as_u64()) {
        parts.push(format!("shard {s} of {i}"));
    }
    if let Some(r) = v.pointer("/unassigned_info/reason").and_then(Value::as_str) {
        parts.push(r.to_owned());
    }
    if let Some(e) = v["allocate_explanation"].as_str() {
        parts.push(e.chars().take(240).collect());
    }
    (!parts.is_empty()).then(|| parts.join(": "))
}

async fn check_index(deps: &ProbeDeps, client: &EsClient, release: Option<Version>) -> CheckResult {
    const NAME: &str = "elasticsearch.index";
    // What embed-index will create, or refuse to: the vector index type this release takes.
    let planned = release.map(|r| {
        let configured = deps.config.vector_index_type.clone();
        (r, configured.and_then(|t| choose_index_type(t, r)))
    });
    if let Some((_, Err(e))) = &planned {
        return CheckResult::fail(NAME, Layer::Version, 0, e.clone()).hint(
            "set EsVectorIndexType (ES_VECTOR_INDEX_TYPE) to a type the cluster takes, or leave it empty for the best of them",
        );
    }
    let index = &client.index;
    match client.mapping().await {
        Ok(m) => index_found(deps, client, &m).await,
        Err(EsError::Status { status: 404, .. }) => index_missing(deps, client, planned).await,
        Err(EsError::Status {
            status: 403,
            reason,
            ..
        }) => CheckResult::fail(
            NAME,
            Layer::Authz,
            0,
            format!("403 reading the mapping of {index} ({reason})"),
        )
        .hint(format!(
            "grant `view_index_metadata` (and `read` for the count) on {index} to the probe's role"
        )),
        Err(e) => CheckResult::fail(NAME, Layer::Mapping, 0, e.to_string()),
    }
}

/// The index exists: its `embedding` must hold the model's dimensions; how many chunks it holds.
async fn index_found(deps: &ProbeDeps, client: &EsClient, m: &Value) -> CheckResult {
    const NAME: &str = "elasticsearch.index";
    let model = &deps.config.model;
    let want = model.dimensions;
    let index = &client.index;
    let dims = mapped_dimensions(m);
    let wrong: Vec<String> = dims
        .iter()
        .filter(|(_, d)| *d != Some(want as u64))
        .map(|(i, d)| match d {
            Some(d) => format!("{i} maps `embedding` with {d} dimensions"),
            None => format!("{i} has no dense_vector `embedding`"),
        })
        .collect();
    if !wrong.is_empty() {
        return CheckResult::fail(
            NAME,
            Layer::Mapping,
            0,
            format!("{model_id} produces {want} dimensions but {}", wrong.join(", "), model_id = model.id),
        )
        .hint(format!(
            "every document embed-index writes would be rejected: point ES_INDEX at a new index (or an alias) for this model, \
             or set EMBEDDING_DIMENSIONS to the mapped size if {} offers it",
            model.id
        ));
    }
    // Vectors of another model in the same space: same dimensions, unrelated meaning.
    if let Ok(held) = crate::search::models_held(client).await {
        let others: Vec<String> = held
            .iter()
            .filter(|(id, _)| !model.made(id))
            .map(|(id, n)| format!("{id} ({n} chunks)"))
            .collect();
        if !others.is_empty() {
            return CheckResult::fail(
                NAME,
                Layer::Mapping,
                0,
                format!(
                    "{index} holds chunks embedded by {}, but EMBEDDING_MODEL_ID is {}: embed-index would add its vectors beside them, and a search compares vectors of different models",
                    others.join(", "),
                    model.id
                ),
            )
            .hint(
                "a new model needs its own index: point ES_INDEX at a new index and backfill it (searches keep reading the old one until you switch), or set EMBEDDING_MODEL_ID back",
            );
        }
    }
    let vector = vector_field(m);
    let (count, detail_count) = match client.count().await {
        Ok(c) => (Some(c), format!("; {c} documents (chunks)")),
        Err(EsError::Status { status: 403, .. }) => (
            None,
            "; the document count is forbidden (grant `read` on the index)".into(),
        ),
        Err(e) => (None, format!("; count failed: {e}")),
    };
    let concrete: Vec<&str> = dims.iter().map(|(i, _)| i.as_str()).collect();
    let alias = if concrete.len() == 1 && concrete[0] == index {
        String::new()
    } else {
        format!(" (alias of {})", concrete.join(", "))
    };
    let detail = format!(
        "{index}{alias}: `embedding` dense_vector with {want} dimensions{vector}, matching {}{detail_count}",
        model.id
    );
    let result = match bulk_load(client, m).await {
        Ok((said, on)) => CheckResult::pass(NAME, 0, format!("{detail}{said}"))
            .metric("BulkLoadMode", f64::from(u8::from(on))),
        Err((said, hint)) => {
            CheckResult::fail(NAME, Layer::Authz, 0, format!("{detail}; {said}")).hint(hint)
        }
    };
    match count {
        Some(c) => result.metric("DocumentCount", c as f64),
        None => result,
    }
}

/// Bulk-load mode (`sakuin backfill --bulk-load`): what the report says of it, and whether it is
/// on. A mode whose lease ran out was left by a backfill that stopped: the probe restores the
/// index's refresh interval and replicas (an index without replicas must not stay so); failing
/// that, the check fails with what to do.
async fn bulk_load(client: &EsClient, mapping: &Value) -> Result<(String, bool), (String, String)> {
    let Ok(Some(mode)) = crate::es::bulk_load::BulkLoad::in_mapping(mapping, &client.index) else {
        return Ok((String::new(), false));
    };
    if !mode.expired(chrono::Utc::now()) {
        return Ok((format!("; {}", mode.describe()), true));
    }
    match client.end_bulk_load().await {
        Ok(_) => Ok((
            format!(
                "; bulk-load mode was left on by {} (lease ran out at {}): its refresh_interval and replicas restored",
                mode.by, mode.lease_until
            ),
            false,
        )),
        Err(e) => Err((
            format!(
                "{}, and its lease ran out, but restoring failed: {e}",
                mode.describe()
            ),
            format!(
                "grant `manage` on {} to the probe's role, or restore it by hand: PUT /{}/_settings with the values in its _meta.sakuin_bulk_load, then remove that key",
                client.index, client.index
            ),
        )),
    }
}

/// The mapped `embedding`'s similarity and index type, as ", cosine, int8_hnsw".
fn vector_field(mapping: &Value) -> String {
    let field = mapping
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v.pointer("/mappings/properties/embedding"));
    let Some(field) = field else {
        return String::new();
    };
    let similarity = field["similarity"].as_str();
    let index_type = field.pointer("/index_options/type").and_then(Value::as_str);
    [similarity, index_type]
        .into_iter()
        .flatten()
        .map(|s| format!(", {s}"))
        .collect()
}

/// The index does not exist yet: what embed-index will create, unless the analyzer is missing.
async fn index_missing(
    deps: &ProbeDeps,
    client: &EsClient,
    planned: Option<(Version, Result<IndexType, String>)>,
) -> CheckResult {
    const NAME: &str = "elasticsearch.index";
    let index = &client.index;
    if let Some(failed) = missing_analyzer(deps, client).await {
        return failed;
    }
    let analyzer = &deps.config.text_analyzer;
    CheckResult::warn(
        NAME,
        0,
        match &planned {
            Some((r, Ok(t))) => format!(
                "{index} does not exist yet; embed-index will create it with index type {t} and the {analyzer} analyzer (Elasticsearch {r})"
            ),
            _ => format!("{index} does not exist yet"),
        },
    )
    .hint("embed-index creates it with the first batch; if documents were expected, check that ES_INDEX matches embed-index's")
}

/// Before the index exists: a failure when `ES_TEXT_ANALYZER` names a plugin's analyzer the
/// cluster lacks, so the first batch does not find out. Built-in analyzers need no question.
async fn missing_analyzer(deps: &ProbeDeps, client: &EsClient) -> Option<CheckResult> {
    let analyzer = &deps.config.text_analyzer;
    let plugin = analyzer_plugin(analyzer)?;
    match client.has_analyzer(analyzer).await {
        Ok(true) => None,
        Ok(false) => Some(
            CheckResult::fail(
                "elasticsearch.index",
                Layer::Analyzer,
                0,
                format!(
                    "ES_TEXT_ANALYZER={analyzer} needs the {plugin} plugin, which the cluster does not have; \
                     embed-index could not create {}",
                    client.index
                ),
            )
            .hint(format!(
                "install it on every node (bin/elasticsearch-plugin install {plugin}, then a rolling restart), \
                 or set EsTextAnalyzer (ES_TEXT_ANALYZER) to cjk, which is built in"
            )),
        ),
        // The question itself failed (a role without `monitor`, say): the creation will tell.
        Err(_) => None,
    }
}

/// Elasticsearch's `{"error":{"type","reason"}}`, or the start of the body.
fn es_reason(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match &v["error"] {
        Value::Object(e) => format!(
            "{}: {}",
            e.get("type").and_then(Value::as_str).unwrap_or("error"),
            e.get("reason").and_then(Value::as_str).unwrap_or("")
        ),
        Value::String(s) => s.clone(),
        _ => {
            let text = String::from_utf8_lossy(body);
            let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
            flat.chars().take(200).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_port_is_refused_and_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let tried = connect_each(&[addr], Duration::from_secs(2)).await;
        let (detail, hint) = describe_failures(&tried);
        assert!(detail.contains("refused"), "{detail}");
        assert!(hint.contains("nothing accepts port"), "{hint}");
    }

    #[test]
    fn the_mapped_vector_field_is_described() {
        let mapping = json!({"docs-v2": {"mappings": {"properties": {"embedding": {
            "type": "dense_vector", "dims": 256, "similarity": "cosine",
            "index_options": {"type": "int8_hnsw"}}}}}});
        assert_eq!(vector_field(&mapping), ", cosine, int8_hnsw");
        let bare =
            json!({"docs": {"mappings": {"properties": {"embedding": {"type": "dense_vector"}}}}});
        assert_eq!(vector_field(&bare), "");
        assert_eq!(vector_field(&json!({})), "");
    }

    #[test]
    fn es_reasons_are_read() {
        let body = br#"{"error":{"type":"security_exception","reason":"unable to authenticate user [probe]"},"status":401}"#;
        assert_eq!(
            es_reason(body),
            "security_exception: unable to authenticate user [probe]"
        );
        assert_eq!(es_reason(b"<html>\n  <p>nope</p>\n"), "<html> <p>nope</p>");
        assert_eq!(secs(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(secs(Duration::from_secs(2)), "2 s");
    }
}
