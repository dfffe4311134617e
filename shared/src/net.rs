//! TCP to Elasticsearch with a clamped maximum segment size (`ES_TCP_MSS`).
//!
//! On a path with a smaller MTU than the hosts believe (IPsec, a tunnel) whose routers' ICMP
//! "fragmentation needed" is dropped, TCP connects and small requests work while every full-size
//! segment is lost: a path-MTU blackhole. Setting `TCP_MAXSEG` before `connect` makes this end
//! send smaller segments and advertise the smaller size in its SYN, so the cluster sends smaller
//! ones too: both directions fit through the path.
//!
//! reqwest opens its own sockets and offers no hook for socket options, but it can speak HTTP
//! (and TLS, with the URL's host name) over a Unix socket. [`MssRelay`] listens on one and joins
//! each connection to a clamped TCP connection to the cluster, byte for byte.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpSocket, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// The segment sizes `ES_TCP_MSS` accepts: IPv4's minimum datagram (576) less 40 bytes of
/// headers, up to a 9,001-byte jumbo frame's.
pub const MSS_RANGE: std::ops::RangeInclusive<u32> = 536..=8961;

/// Connects to `addr`, with `TCP_MAXSEG` set to `mss` first when given.
pub async fn connect(addr: SocketAddr, mss: Option<u32>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(mss) = mss {
        SockRef::from(&socket).set_tcp_mss(mss)?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects to the first of `host:port`'s addresses that answers within `timeout`, clamped.
pub async fn connect_host(
    host: &str,
    port: u16,
    mss: Option<u32>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let attempt = async {
        let mut last = None;
        for addr in tokio::net::lookup_host((host.trim_matches(['[', ']']), port)).await? {
            match connect(addr, mss).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(io::Error::new(e.kind(), format!("{addr}: {e}"))),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
        }))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {host}:{port} timed out"),
            ))
        })
}

/// A Unix socket whose connections are relayed to `host:port` over TCP with the segment size
/// clamped. It stops, and its socket file goes, when dropped.
#[derive(Debug)]
pub struct MssRelay {
    path: PathBuf,
    mss: u32,
    last_error: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl MssRelay {
    /// Listens on a fresh socket in the temporary directory (`/tmp`, writable on Lambda). Needs
    /// a Tokio runtime.
    pub fn start(host: &str, port: u16, mss: u32, connect_timeout: Duration) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "sakuin-es-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let last_error = Arc::new(Mutex::new(None));
        let target = Target {
            host: host.to_owned(),
            port,
            mss,
            connect_timeout,
            last_error: last_error.clone(),
        };
        let task = tokio::spawn(accept_loop(listener, Arc::new(target)));
        Ok(Self {
            path,
            mss,
            last_error,
            task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mss(&self) -> u32 {
        self.mss
    }

    /// Why the last connection to the cluster could not be made, if it could not: the client
    /// only sees its Unix connection close.
    pub fn take_error(&self) -> Option<String> {
        self.last_error.lock().expect("not poisoned").take()
    }
}

impl Drop for MssRelay {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Target {
    host: String,
    port: u16,
    mss: u32,
    connect_timeout: Duration,
    last_error: Arc<Mutex<Option<String>>>,
}

async fn accept_loop(listener: UnixListener, target: Arc<Target>) {
    loop {
        match listener.accept().await {
            Ok((local, _)) => {
                tokio::spawn(relay(local, target.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "ES_TCP_MSS relay: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn relay(mut local: UnixStream, target: Arc<Target>) {
    let remote = connect_host(
        &target.host,
        target.port,
        Some(target.mss),
        target.connect_timeout,
    )
    .await;
    let mut remote = match remote {
        Ok(r) => r,
        Err(e) => {
            *target.last_error.lock().expect("not poisoned") = Some(e.to_string());
            return;
        }
    };
    let _ = SockRef::from(&remote)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(30)));
    // Either side closing ends both; errors here are the HTTP client's to see.
    let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_clamped_connection_advertises_the_segment_size() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = connect(addr, Some(1200)).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert!(SockRef::from(&client).tcp_mss().unwrap() <= 1200);
        // The other end learnt it from the SYN: its segments are no larger either.
        assert!(SockRef::from(&server).tcp_mss().unwrap() <= 1200);
        let unclamped = connect(addr, None).await.unwrap();
        assert!(SockRef::from(&unclamped).tcp_mss().unwrap() > 1200);
    }

    #[tokio::test]
    async fn the_relay_joins_unix_to_tcp_and_says_why_a_connect_failed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf.repeat(1000)).await.unwrap();
        });
        let relay = MssRelay::start("127.0.0.1", port, 1000, Duration::from_secs(2)).unwrap();
        let mut local = UnixStream::connect(relay.path()).await.unwrap();
        local.write_all(b"hello").await.unwrap();
        let mut answer = Vec::new();
        local.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"hello".repeat(1000));
        assert_eq!(relay.take_error(), None);

        // Nothing listens on the port any more: the relay closes and keeps the reason.
        let mut local = UnixStream::connect(relay.path()).await.unwrap();
        let mut answer = Vec::new();
        local.read_to_end(&mut answer).await.unwrap();
        assert!(answer.is_empty());
        let error = relay.take_error().expect("a reason");
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");

        let path = relay.path().to_owned();
        drop(relay);
        assert!(!path.exists(), "the socket file goes with the relay");
    }
}
