//! Path-MTU blackholes between the functions and the cluster, on a network of namespaces
//! (`sakuin_local::netns`): the probe names the cause and the segment size that passes, in each
//! direction, and `ES_TCP_MSS` carries a `_bulk` of 1,000 chunks across.
//!
//! Needs root, `ip` and `iptables` (`make test` installs them as root); elsewhere each test says
//! why it skipped. Figures: `cargo test -p sakuin-local --test path_mtu -- --nocapture`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sakuin::es::bulk::{Expect, push_index};
use sakuin::es::{EsClient, EsError, EsSettings, VectorSettings};
use sakuin_local::netns::{Blackhole, Topology, in_netns};
use sakuin_local::stack::LocalStack;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The network for one test, or the reason it cannot be built here (the test then skips).
fn topology(id: u8, blackhole: Blackhole) -> Option<Topology> {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!(
            "skipped: `openssl` is missing (apt-get install openssl; `make test` installs it as root)"
        );
        return None;
    }
    match Topology::build(id, blackhole) {
        Ok(t) => Some(t),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// A CA and a server certificate, both RSA 4096 (a chain of about 3 KB, so the server's first
/// flight is several full-size segments), for the servers' addresses in every topology.
struct Chain {
    dir: PathBuf,
}

impl Chain {
    fn get() -> &'static Chain {
        static CHAIN: OnceLock<Chain> = OnceLock::new();
        CHAIN.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("sakuin-path-mtu-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let sans: Vec<String> = (0..8).map(|id| format!("IP:198.18.{id}.10")).collect();
            std::fs::write(
                dir.join("leaf.ext"),
                format!(
                    "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
                    sans.join(",")
                ),
            )
            .unwrap();
            let openssl = |args: &[&str]| {
                let out = std::process::Command::new("openssl")
                    .args(args)
                    .current_dir(&dir)
                    .output()
                    .expect("openssl (Debian's openssl package)");
                assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            };
            openssl(&["req", "-x509", "-newkey", "rsa:4096", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                "-days", "2", "-subj", "/CN=sakuin path-MTU test CA"]);
            openssl(&["req", "-newkey", "rsa:4096", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
                "-subj", "/CN=elasticsearch.test"]);
            openssl(&["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext"]);
            Chain { dir }
        })
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn acceptor(&self) -> TlsAcceptor {
        let mut certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.dir.join("leaf.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        certs.extend(
            CertificateDer::pem_file_iter(self.ca())
                .unwrap()
                .map(Result::unwrap),
        );
        let key = PrivateKeyDer::from_pem_file(self.dir.join("leaf.key")).unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// The local Elasticsearch on the server's side of the network: a listener in the server's
/// namespace (TLS-terminating when `tls` is given) joined to the cluster on this host's
/// loopback. Returns the port.
async fn front(topology: &Topology, es_port: u16, tls: Option<TlsAcceptor>) -> u16 {
    // Every address of the server's namespace (a test may give it more than one).
    let listener = in_netns(topology.server_ns(), move || {
        let l = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    })
    .unwrap();
    let port = listener.local_addr().unwrap().port();
    let listener = TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        while let Ok((outside, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok(mut cluster) = TcpStream::connect(("127.0.0.1", es_port)).await else {
                    return;
                };
                match tls {
                    Some(acceptor) => {
                        if let Ok(mut outside) = acceptor.accept(outside).await {
                            let _ = tokio::io::copy_bidirectional(&mut outside, &mut cluster).await;
                        }
                    }
                    None => {
                        let mut outside = outside;
                        let _ = tokio::io::copy_bidirectional(&mut outside, &mut cluster).await;
                    }
                }
            });
        }
    });
    port
}

/// `sakuin probe --checks elasticsearch --json`, run in the client's namespace.
async fn probe(topology: &Topology, port: u16, env: &[(&str, &str)]) -> (Output, Duration) {
    let sakuin = sakuin_local::pipeline::require(&sakuin_local::pipeline::binary_dir(), "sakuin")
        .expect("cargo build --workspace builds the sakuin CLI");
    let started = Instant::now();
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", topology.client_ns()])
        .arg(sakuin)
        .args(["probe", "--checks", "elasticsearch", "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_REGION", "ap-northeast-1")
        .env("ES_HOST", topology.server_addr.to_string())
        .env("ES_PORT", port.to_string())
        .env("ES_INDEX", "path-mtu")
        .env("PROBE_TIMEOUT_SECS", "5")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    (out, started.elapsed())
}

fn check<'a>(out: &'a Value, name: &str) -> &'a Value {
    out["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {out}"))
}

fn report_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A failed probe whose `elasticsearch.path_mtu` names a blackhole (`says`) and a segment size
/// within 4 bytes of the narrow link's, with `ES_TCP_MSS` at that size as the workaround.
fn diagnosed(out: &Output, says: &str) -> (Value, u32) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report = report_of(out);
    let path = check(&report, "elasticsearch.path_mtu");
    assert_eq!(path["layer"], "path_mtu", "{path}");
    let detail = path["detail"].as_str().unwrap();
    assert!(detail.contains(says), "{detail}");
    let mss = path["metrics"]["PathMss"]
        .as_f64()
        .unwrap_or_else(|| panic!("{path}")) as u32;
    let limit = sakuin_local::netns::NARROW_MTU - 40;
    assert!(
        mss <= limit && limit - mss < 5,
        "{mss} for a path of {limit}: {report:#}"
    );
    let hint = path["hint"].as_str().unwrap();
    assert!(hint.contains(&format!("(ES_TCP_MSS) to {mss}")), "{hint}");
    (report, mss)
}

/// The probe with `ES_TCP_MSS` set passes where the path broke.
async fn passes_with_the_workaround(net: &Topology, port: u16, env: &[(&str, &str)], mss: u32) {
    let mss = mss.to_string();
    let env: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([("ES_TCP_MSS", mss.as_str())])
        .collect();
    let (out, _) = probe(net, port, &env).await;
    let report = report_of(&out);
    for name in ["elasticsearch.http", "elasticsearch.path_mtu"] {
        assert_eq!(check(&report, name)["ok"], true, "{report:#}");
    }
    let detail = check(&report, "elasticsearch.path_mtu")["detail"]
        .as_str()
        .unwrap();
    assert!(detail.contains("ES_TCP_MSS"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_names_a_blackhole_on_the_way_from_the_cluster() {
    let Some(net) = topology(1, Blackhole::TowardClient) else {
        return;
    };
    let stack = LocalStack::start(&[]).await.unwrap();
    let chain = Chain::get();
    let port = front(&net, stack.elasticsearch.port, Some(chain.acceptor())).await;
    let ca = chain.ca().display().to_string();
    let tls = [("ES_USE_SSL", "true"), ("ES_CA_CERT", ca.as_str())];

    // The server's certificate chain is lost: the handshake stalls after TCP connected.
    let (out, took) = probe(&net, port, &tls).await;
    let (report, mss) = diagnosed(
        &out,
        "the TLS handshake's client hello or certificate chain",
    );
    let tls_check = check(&report, "elasticsearch.tls");
    assert_eq!(tls_check["layer"], "tls", "{tls_check}");
    let detail = tls_check["detail"].as_str().unwrap();
    assert!(detail.contains("path-MTU blackhole"), "{detail}");
    println!(
        "a stalled TLS handshake: diagnosed in {:.1} s, MSS {mss}",
        took.as_secs_f64()
    );
    passes_with_the_workaround(&net, port, &tls, mss).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_names_a_blackhole_on_the_way_to_the_cluster() {
    let Some(net) = topology(2, Blackhole::TowardServer) else {
        return;
    };
    let stack = LocalStack::start(&[]).await.unwrap();
    let port = front(&net, stack.elasticsearch.port, None).await;

    // GET / crosses; a 6 KB request does not.
    let (out, took) = probe(&net, port, &[]).await;
    let (report, mss) = diagnosed(&out, "on the way from the function to the cluster");
    assert_eq!(
        check(&report, "elasticsearch.http")["ok"],
        true,
        "{report:#}"
    );
    println!(
        "a stalled 6 KB request: diagnosed in {:.1} s, MSS {mss}",
        took.as_secs_f64()
    );
    passes_with_the_workaround(&net, port, &[], mss).await;
}

/// 1,000 chunk documents of 256 dimensions in one `_bulk` body.
fn thousand_chunks(index: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..1000 {
        let vector: Vec<f32> = (0..256)
            .map(|d| ((i * 7 + d) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let doc = json!({"doc_id": format!("d{i}"), "chunk_index": 0, "chunk_count": 1,
                         "text": format!("chunk {i} of the path-MTU test"), "embedding": vector});
        push_index(&mut body, index, &format!("d{i}#0"), Expect::Any, &doc);
    }
    body
}

/// Indexes the 1,000 chunks from the client's namespace; the time it took, or the error.
fn index_from_client(
    net: &Topology,
    addr: Ipv4Addr,
    port: u16,
    ca: &Path,
    tcp_mss: Option<u32>,
) -> (Result<usize, EsError>, Duration) {
    let settings = EsSettings {
        host: addr.to_string(),
        port,
        use_ssl: true,
        verify_certs: true,
        ca_cert_pem: Some(std::fs::read_to_string(ca).unwrap()),
        auth: None,
        index: "path-mtu-bulk".into(),
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        tcp_mss,
        client_identity: None,
    };
    in_netns(net.client_ns(), move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let started = Instant::now();
            let result = async {
                let es = EsClient::new(&settings)?;
                let vectors = VectorSettings {
                    similarity: sakuin::es::Similarity::Cosine,
                    index_type: Some(sakuin::es::version::IndexType::Hnsw),
                    text_analyzer: "standard".into(),
                };
                es.ensure_index(256, &vectors, "amazon.titan-embed-text-v2:0")
                    .await?;
                let outcome = es.bulk(thousand_chunks(&es.index), 1000).await?;
                Ok(outcome.items.len())
            }
            .await;
            (result, started.elapsed())
        })
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_of_a_thousand_chunks_crosses_the_blackhole_with_es_tcp_mss() {
    let Some(net) = topology(3, Blackhole::Both) else {
        return;
    };
    let stack = LocalStack::start(&[]).await.unwrap();
    let chain = Chain::get();
    let port = front(&net, stack.elasticsearch.port, Some(chain.acceptor())).await;
    let (addr, ca) = (net.server_addr, chain.ca());

    // Without the workaround: an error within the request's deadline, not a hang.
    let (result, took) =
        tokio::task::block_in_place(|| index_from_client(&net, addr, port, &ca, None));
    match result {
        Err(EsError::Unreachable { timeout: true, .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(took < Duration::from_secs(16), "{took:?}");
    println!(
        "without ES_TCP_MSS: failed after {:.1} s",
        took.as_secs_f64()
    );

    let (result, took) =
        tokio::task::block_in_place(|| index_from_client(&net, addr, port, &ca, Some(1360)));
    assert_eq!(result.unwrap(), 1000);
    let es = stack.es("path-mtu-bulk");
    es.refresh().await.unwrap();
    assert_eq!(es.count().await.unwrap(), 1000);
    println!(
        "with ES_TCP_MSS=1360: the index created and 1,000 chunks (256 dimensions) in one _bulk in {:.2} s",
        took.as_secs_f64()
    );
}

/// On any path (here loopback, no namespaces needed): the deployed functions with
/// `ES_TCP_MSS` index a batch and probe through the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_functions_index_and_probe_through_es_tcp_mss() {
    let pipeline =
        sakuin_local::pipeline::Pipeline::start_logged(sakuin_local::pipeline::PipelineOptions {
            index: "mss".into(),
            extra_env: vec![("ES_TCP_MSS".into(), "1200".into())],
            ..Default::default()
        })
        .await;
    let lines: String = (0..20)
        .map(|i| {
            json!({"id": format!("m{i}"), "text": format!("Clamped record {i}.")}).to_string()
                + "\n"
        })
        .collect();
    let event = pipeline
        .put_object("mss/a.jsonl", lines.into_bytes())
        .await
        .unwrap();
    pipeline.invoke_ingest(&event).await.unwrap();
    let stats = pipeline.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(stats.function_errors, 0, "{stats:?}");
    let es = pipeline.es();
    es.refresh().await.unwrap();
    // The whole index against the whole bucket: every record, its current text, nothing else.
    let comparison = sakuin_local::truth::compare_index_with_bucket(
        &pipeline.s3,
        sakuin_local::pipeline::BUCKET,
        &es,
    )
    .await
    .unwrap();
    assert!(comparison.is_equal(), "index ≠ bucket: {comparison}");
    assert_eq!(comparison.expected, 20);
    assert_eq!(pipeline.dead_letters().await.unwrap(), 0, "chunk DLQ");

    let report = pipeline
        .invoke_probe(&json!({"checks": ["elasticsearch"]}))
        .await
        .unwrap();
    let path = check(&report, "elasticsearch.path_mtu");
    assert_eq!(path["ok"], true, "{report:#}");
    let detail = path["detail"].as_str().unwrap();
    assert!(
        detail.contains("clamped to 1200 bytes by ES_TCP_MSS"),
        "{detail}"
    );
    pipeline.stop().await;
}

/// A name with three addresses, one of them dead (the server's firewall drops its packets):
/// the probe connects to each, says which one is dead and why, fails the TCP check (the worker
/// would fail whenever the resolver hands it that address), and checks the cluster over a live
/// one — all within the probe's budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_tries_every_address_of_the_name_and_names_the_dead_one() {
    let Some(net) = topology(5, Blackhole::TowardClient) else {
        return;
    };
    let stack = LocalStack::start(&[]).await.unwrap();
    let port = front(&net, stack.elasticsearch.port, None).await;
    let second = net.add_server_address(20, false).unwrap();
    let dead = net.add_server_address(21, true).unwrap();
    net.client_hosts("es.sakuin.test", &[net.server_addr, second, dead])
        .unwrap();
    let env = [
        ("ES_HOST", "es.sakuin.test"),
        ("ES_CONNECT_TIMEOUT_SECS", "2"),
    ];
    let (out, took) = probe(&net, port, &env).await;
    let report = report_of(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let dns = check(&report, "elasticsearch.dns");
    assert!(
        dns["detail"].as_str().unwrap().contains(&dead.to_string()),
        "{dns}"
    );
    let tcp = check(&report, "elasticsearch.tcp");
    assert_eq!(
        (&tcp["ok"], &tcp["layer"]),
        (&json!(false), &json!("tcp")),
        "{tcp}"
    );
    let detail = tcp["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("2 of 3 addresses of es.sakuin.test answer")
            && detail.contains(&format!("{dead}:{port} did not answer within 2 s")),
        "{detail}"
    );
    assert!(
        tcp["hint"].as_str().unwrap().contains("whichever address"),
        "{tcp}"
    );
    assert_eq!(tcp["metrics"]["AddressesDown"], 1.0);
    // The layers above were checked over a live address.
    assert_eq!(
        check(&report, "elasticsearch.http")["ok"],
        true,
        "{report:#}"
    );
    println!("a dead address among three: {detail} ({took:?} for the probe)");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A firewall on the path that forgets connections idle for 3 s and drops their later packets
/// (a NAT, firewall or VPN concentrator with an idle timeout): a request on a pooled connection
/// idle longer than that fails within `ES_CONNECT_TIMEOUT_SECS` (`TCP_USER_TIMEOUT` on the data
/// the path dropped) and is sent again at once on a fresh connection, and counted. A client
/// without that (sakuin's before) waits the whole `ES_TIMEOUT_SECS` and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_while_idle_costs_seconds_not_the_request_timeout() {
    let Some(net) = topology(6, Blackhole::TowardClient) else {
        return;
    };
    net.forget_idle_connections(3).unwrap();
    let stack = LocalStack::start(&[]).await.unwrap();
    let port = front(&net, stack.elasticsearch.port, None).await;
    let addr = net.server_addr;
    let (now, before) = in_netns(net.client_ns(), move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let settings = EsSettings {
                host: addr.to_string(),
                port,
                use_ssl: false,
                verify_certs: true,
                ca_cert_pem: None,
                auth: None,
                index: "idle".into(),
                timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(2),
                tcp_mss: None,
                client_identity: None,
            };
            let client = EsClient::new(&settings).unwrap();
            client.version().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            let started = Instant::now();
            let answered = client.version().await;
            let now = (
                answered.is_ok(),
                started.elapsed(),
                client.stale_connections(),
            );

            // The client as it was: pooled for 50 s, keepalive after 30 s, no user timeout.
            let plain = reqwest::Client::builder()
                .timeout(settings.timeout)
                .connect_timeout(settings.connect_timeout)
                .pool_idle_timeout(Duration::from_secs(50))
                .tcp_keepalive(Duration::from_secs(30))
                .build()
                .unwrap();
            let url = format!("http://{addr}:{port}/");
            // The body read to its end, so the connection goes back to the pool (a response
            // dropped unread closes it, and the next request would open a fresh one).
            plain.get(&url).send().await.unwrap().bytes().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            let started = Instant::now();
            let answered = plain.get(&url).send().await;
            (now, (answered.is_ok(), started.elapsed()))
        })
    })
    .unwrap();
    println!(
        "a request after 5 s idle behind a 3 s idle cut: {:?} and answered (one stale connection retried); before: {:?} and {}",
        now.1,
        before.1,
        if before.0 { "answered" } else { "failed" }
    );
    let (answered, took, stale) = now;
    assert!(answered, "answered on a fresh connection");
    assert_eq!(stale, 1);
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(
        !before.0 && before.1 >= Duration::from_secs(9),
        "{before:?}"
    );
}

/// A link of 2 Mbit/s toward the cluster (a token bucket on the router) with the workers'
/// 10 MiB `_bulk` and a 30 s request timeout: the probe measures the link, says a batch would
/// take about 40 s to cross, fails `elasticsearch.link`, and gives a bulk size that fits — and
/// the same link with 1 MiB bulks passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_says_when_the_link_is_too_slow_for_the_bulk_size() {
    let Some(net) = topology(7, Blackhole::TowardClient) else {
        return;
    };
    if let Err(why) = net.limit_toward_server(2_000) {
        eprintln!("skipped: the kernel cannot shape the link here: {why}");
        return;
    }
    let stack = LocalStack::start(&[]).await.unwrap();
    let port = front(&net, stack.elasticsearch.port, None).await;
    let env = [("ES_TIMEOUT_SECS", "30")];
    let (out, took) = probe(&net, port, &env).await;
    let report = report_of(&out);
    let link = check(&report, "elasticsearch.link");
    assert_eq!(
        (&link["ok"], &link["layer"]),
        (&json!(false), &json!("link")),
        "{report:#}"
    );
    let mbps = link["metrics"]["LinkUploadMbps"].as_f64().unwrap();
    assert!((1.4..2.6).contains(&mbps), "measured {mbps} Mbit/s: {link}");
    let crossing = link["metrics"]["BulkCrossingSeconds"].as_f64().unwrap();
    assert!((30.0..60.0).contains(&crossing), "{link}");
    let hint = link["hint"].as_str().unwrap();
    assert!(hint.contains("set ES_BULK_MAX_BYTES"), "{hint}");
    // The check after it still ran.
    check(&report, "elasticsearch.index");
    println!(
        "{} ({took:?} for the probe)",
        link["detail"].as_str().unwrap()
    );
    println!("hint: {hint}");

    let env = [("ES_TIMEOUT_SECS", "30"), ("ES_BULK_MAX_BYTES", "1048576")];
    let (out, _) = probe(&net, port, &env).await;
    let report = report_of(&out);
    assert_eq!(
        check(&report, "elasticsearch.link")["ok"],
        true,
        "{report:#}"
    );
}

/// Every address of the cluster dead, and the probe running in a VPC whose route table lacks the
/// route to it: the TCP check's hint is what the EC2 API (the local stack's, reached across the
/// topology) says is missing, not the list of every possibility.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_times_out_is_explained_by_the_vpc_configuration() {
    let Some(net) = topology(8, Blackhole::Neither) else {
        return;
    };
    let stack = LocalStack::start(&[]).await.unwrap();
    let aws = front(&net, stack.moto.port, None).await;
    let dead = net.add_server_address(21, true).unwrap();
    let ec2 = sakuin::aws::ec2::Ec2::from_sdk(&stack.moto_config().await);
    let vpc = sakuin_local::vpc::Network::build(&ec2, "10.1.0.0/16", "198.18.0.0/16").await;
    vpc.remove_route(&ec2).await;
    let endpoint = format!("http://{}:{aws}", net.server_addr);
    let dead_host = dead.to_string();
    let env = [
        ("ES_HOST", dead_host.as_str()),
        ("ES_CONNECT_TIMEOUT_SECS", "2"),
        ("SUBNET_IDS", vpc.subnet.as_str()),
        ("SECURITY_GROUP_IDS", vpc.group.as_str()),
        ("AWS_ENDPOINT_URL_EC2", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let (out, took) = probe(&net, 9200, &env).await;
    let report = report_of(&out);
    let tcp = check(&report, "elasticsearch.tcp");
    assert_eq!(tcp["ok"], false, "{report:#}");
    assert!(
        tcp["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("{dead}:9200 did not answer within 2 s")),
        "{tcp}"
    );
    let hint = tcp["hint"].as_str().unwrap();
    assert_eq!(
        hint,
        format!(
            "the AWS side of the path: no route to {dead} in {} (subnet {}); enable route propagation from the virtual private gateway {}, or add a static route to it",
            vpc.table, vpc.subnet, vpc.vgw
        ),
        "{tcp}"
    );
    println!("{}\nhint: {hint} ({took:?} for the probe)", tcp["detail"]);
    assert!(took < Duration::from_secs(10), "{took:?}");
}
