//! The TLS layer of the Elasticsearch path: a handshake of our own, with the trust the
//! Elasticsearch client uses (the system roots plus `ES_CA_CERT`), that keeps the server's leaf
//! certificate and the verifier's verdict so a failure can be named precisely.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The roots a handshake trusts; built once per container.
#[derive(Debug)]
pub struct TlsTrust {
    verifier: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
    /// Certificates taken from `ES_CA_CERT`.
    pub extra_roots: usize,
    /// Certificates taken from the system store.
    pub system_roots: usize,
    /// The client certificate offered when the server asks for one.
    client_key: Option<Arc<CertifiedKey>>,
}

impl TlsTrust {
    /// The system roots (as `rustls-native-certs` finds them, like the Elasticsearch client's
    /// platform verifier on Linux) plus every certificate in `ca_pem`.
    pub fn new(ca_pem: Option<&str>) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        let mut extra_roots = 0;
        if let Some(pem) = ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert =
                    cert.map_err(|e| format!("ES_CA_CERT is not a PEM certificate bundle: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ES_CA_CERT holds a certificate rustls refuses: {e}"))?;
                extra_roots += 1;
            }
            if extra_roots == 0 {
                return Err("ES_CA_CERT holds no certificate".into());
            }
        }
        let native = rustls_native_certs::load_native_certs();
        let (system_roots, _) = roots.add_parsable_certificates(native.certs);
        if roots.is_empty() {
            return Err(
                "no trusted roots: the system store is empty and ES_CA_CERT is not set".into(),
            );
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .map_err(|e| format!("the TLS verifier could not be built: {e}"))?;
        Ok(Self {
            verifier,
            provider,
            extra_roots,
            system_roots,
            client_key: None,
        })
    }

    /// Offers `identity` to a server that asks for a client certificate.
    pub fn with_client_identity(
        mut self,
        identity: &crate::es::ClientIdentity,
    ) -> Result<Self, String> {
        let (certs, key) = identity.parse()?;
        let key = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("the client key cannot be used for TLS: {e}"))?;
        self.client_key = Some(Arc::new(CertifiedKey::new(certs, key)));
        Ok(self)
    }
}

/// Answers a server's request for a client certificate with the configured one (or none), and
/// remembers that it was asked.
#[derive(Debug)]
struct ClientCertOffer {
    key: Option<Arc<CertifiedKey>>,
    asked: AtomicBool,
}

impl ResolvesClientCert for ClientCertOffer {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        // Always asked, so the probe learns that the server wants one even when none is set.
        true
    }
}

/// What a handshake that completed learned.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub protocol: String,
    pub cipher: String,
    pub leaf: Option<LeafCertificate>,
    /// The verifier's verdict; only `Err` when verification is off (otherwise the handshake
    /// would have failed).
    pub verdict: Result<(), rustls::Error>,
    /// The server asked for a client certificate, and accepted the one offered.
    pub client_certificate_accepted: bool,
}

/// Why a handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The TCP connection for the handshake could not be made.
    Connect(String),
    /// No handshake answer in time.
    Timeout(Duration),
    /// The verifier rejected the server's certificate.
    Certificate {
        error: rustls::Error,
        leaf: Option<LeafCertificate>,
    },
    /// The server asks for a client certificate: none was configured (`offered` false), or it
    /// refused the one offered; `detail` is what the server or rustls said.
    ClientCertificate { offered: bool, detail: String },
    /// Anything else rustls or the socket said.
    Protocol(std::io::Error),
}

/// Collects the leaf certificate and the verdict, and decides whether a bad verdict stops the
/// handshake (`verify`) or is only reported.
#[derive(Debug)]
struct Capture {
    inner: Arc<WebPkiServerVerifier>,
    verify: bool,
    seen: Mutex<Option<Seen>>,
}

/// The leaf certificate's DER and the verifier's verdict on it.
type Seen = (Vec<u8>, Result<(), rustls::Error>);

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ());
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((end_entity.to_vec(), verdict.clone()));
        match verdict {
            Err(e) if self.verify => Err(e),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Connects to `addr` (with the TCP segment size clamped to `mss`, when given) and runs a TLS
/// handshake for `host`, all within `timeout`.
pub async fn handshake(
    trust: &TlsTrust,
    addr: SocketAddr,
    host: &str,
    verify: bool,
    mss: Option<u32>,
    timeout: Duration,
) -> Result<Handshake, HandshakeError> {
    let server_name =
        ServerName::try_from(host.trim_matches(['[', ']']).to_owned()).map_err(|e| {
            HandshakeError::Connect(format!("{host} is not a valid TLS server name: {e}"))
        })?;
    let capture = Arc::new(Capture {
        inner: trust.verifier.clone(),
        verify,
        seen: Mutex::new(None),
    });
    let offer = Arc::new(ClientCertOffer {
        key: trust.client_key.clone(),
        asked: AtomicBool::new(false),
    });
    let connector =
        connector(trust, capture.clone(), offer.clone()).map_err(HandshakeError::Connect)?;
    let attempt = async {
        let tcp = crate::net::connect(addr, mss)
            .await
            .map_err(|e| HandshakeError::Connect(format!("{addr}: {e}")))?;
        let mut stream = connector
            .connect(server_name, tcp)
            .await
            .map_err(HandshakeError::Protocol)?;
        if offer.asked.load(Ordering::Relaxed) {
            // In TLS 1.3 the server judges the client's certificate after the client has
            // finished: its refusal comes on the first read.
            client_certificate_judged(&mut stream, host)
                .await
                .map_err(HandshakeError::Protocol)?;
        }
        Ok(stream)
    };
    let offered = trust.client_key.is_some();
    let asked = || offer.asked.load(Ordering::Relaxed);
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(HandshakeError::Timeout(timeout)),
        Ok(Err(HandshakeError::Protocol(io))) => match capture.take() {
            Some((leaf, Err(error))) => Err(HandshakeError::Certificate {
                error,
                leaf: LeafCertificate::parse(&leaf),
            }),
            _ if asked() => Err(HandshakeError::ClientCertificate {
                offered,
                detail: io.to_string(),
            }),
            _ => Err(HandshakeError::Protocol(io)),
        },
        Ok(Err(e)) => Err(e),
        Ok(Ok(stream)) => {
            let mut done = Handshake::completed(stream.get_ref().1, capture.take());
            done.client_certificate_accepted = asked() && offered;
            Ok(done)
        }
    }
}

/// Sends a `HEAD /` on a connection whose server asked for a client certificate and reads the
/// start of the answer: a server that refuses the certificate closes with an alert here.
async fn client_certificate_judged(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    host: &str,
) -> std::io::Result<()> {
    let request = format!("HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut first = [0u8; 1];
    match stream.read(&mut first).await? {
        0 => Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "the server closed the connection after the handshake",
        )),
        _ => Ok(()),
    }
}

/// A TLS client with the trust's provider and protocol versions whose verifier is `capture`,
/// offering a client certificate through `offer`.
fn connector(
    trust: &TlsTrust,
    capture: Arc<Capture>,
    offer: Arc<ClientCertOffer>,
) -> Result<tokio_rustls::TlsConnector, String> {
    let config = rustls::ClientConfig::builder_with_provider(trust.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(capture)
        .with_client_cert_resolver(offer);
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl Handshake {
    /// What a completed handshake negotiated, and what the verifier saw.
    fn completed(conn: &rustls::ClientConnection, seen: Option<Seen>) -> Self {
        let protocol = conn
            .protocol_version()
            .map(|v| format!("{v:?}").replace('_', "."))
            .unwrap_or_default();
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default();
        let (leaf, verdict) = match seen {
            Some((der, verdict)) => (LeafCertificate::parse(&der), verdict),
            None => (None, Ok(())),
        };
        Self {
            protocol,
            cipher,
            leaf,
            verdict,
            client_certificate_accepted: false,
        }
    }
}

impl Capture {
    /// The leaf certificate and verdict the handshake left, once.
    fn take(&self) -> Option<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What the probe reads from the server's leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafCertificate {
    pub subject_cn: Option<String>,
    pub issuer_cn: Option<String>,
    /// Subject and issuer are the same name: a self-signed (or self-issued) certificate.
    pub self_issued: bool,
    /// Validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// The subjectAltName DNS names and IP addresses.
    pub names: Vec<String>,
}

impl LeafCertificate {
    /// Reads what the report needs from an X.509 certificate's DER; `None` when it is not one.
    pub fn parse(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let common_name = |name: &X509Name| {
            let cn = name.iter_common_name().next()?;
            Some(match cn.as_str() {
                Ok(text) => text.to_owned(),
                Err(_) => String::from_utf8_lossy(cn.as_slice()).into_owned(),
            })
        };
        // A certificate with a malformed or doubled subjectAltName is read without its names:
        // the handshake's own verdict says what is wrong with it.
        let san = cert.subject_alternative_name().ok().flatten();
        let names = san
            .iter()
            .flat_map(|ext| &ext.value.general_names)
            .filter_map(|name| match *name {
                GeneralName::DNSName(dns) => Some(dns.to_owned()),
                GeneralName::IPAddress(ip) => ip_address(ip),
                _ => None,
            })
            .collect();
        Some(Self {
            subject_cn: common_name(cert.subject()),
            issuer_cn: common_name(cert.issuer()),
            self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            names,
        })
    }

    /// Whole days from `now` until the certificate expires (negative once it has).
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    /// Names a client may use for this certificate, for messages.
    pub fn describe_names(&self) -> String {
        if self.names.is_empty() {
            match &self.subject_cn {
                Some(cn) => format!("no subjectAltName, only CN={cn} (which TLS clients ignore)"),
                None => "no names at all".into(),
            }
        } else {
            self.names.join(", ")
        }
    }
}

/// A calendar date for messages.
pub fn date(epoch_seconds: i64) -> String {
    chrono::DateTime::from_timestamp(epoch_seconds, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| epoch_seconds.to_string())
}

/// The certificate problem a verdict names, without the rustls wording.
pub fn certificate_error(error: &rustls::Error) -> Option<&CertificateError> {
    match error {
        rustls::Error::InvalidCertificate(e) => Some(e),
        _ => None,
    }
}

/// The rustls error inside an I/O error from a handshake, if there is one.
pub fn rustls_error(io: &std::io::Error) -> Option<&rustls::Error> {
    io.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// An iPAddress subjectAltName entry (4 or 16 octets) as text.
fn ip_address(octets: &[u8]) -> Option<String> {
    match octets.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(octets).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(octets).ok()?).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issued by a test CA with `openssl ca -startdate 20250101000000Z -enddate 20350615123000Z`,
    /// SANs DNS:es.example.internal, DNS:*.es.example.internal, IP:10.0.0.5.
    const LEAF: &str = "-----BEGIN CERTIFICATE-----
MIIB2jCCAYCgAwIBAgICEAAwCgYIKoZIzj0EAwIwGTEXMBUGA1UEAwwOU2FrdWlu
IFRlc3QgQ0EwHhcNMjUwMTAxMDAwMDAwWhcNMzUwNjE1MTIzMDAwWjAwMRwwGgYD
VQQDDBNlcy5leGFtcGxlLmludGVybmFsMRAwDgYDVQQKDAdFeGFtcGxlMFkwEwYH
KoZIzj0CAQYIKoZIzj0DAQcDQgAEhT/XU6pU/BifVKCe/oTFzqnyn17Tfmm7zvci
a5Z8xspAeir04lqiuU6mUW5N6zWoT2jbbcEvjmcDbIk5sc5+4KOBoDCBnTA7BgNV
HREENDAyghNlcy5leGFtcGxlLmludGVybmFsghUqLmVzLmV4YW1wbGUuaW50ZXJu
YWyHBAoAAAUwCQYDVR0TBAIwADATBgNVHSUEDDAKBggrBgEFBQcDATAdBgNVHQ4E
FgQUHkNwAlNau5EdoLq88ZaTD/4dTGQwHwYDVR0jBBgwFoAU6KjKLkUK/UE3pXRl
I7rY0I5MTqcwCgYIKoZIzj0EAwIDSAAwRQIgb/s8N/b722OxAjvjoN9CpiuyAixL
eYehuwv/tlmtslYCIQDT/IU03Qu1V6vM2KhmHwVr0Un0Ip98+bZalNNu64/LWw==
-----END CERTIFICATE-----";

    /// No SAN; notBefore 2049-12-31 23:59:59 as UTCTime, notAfter 2060-01-01 as GeneralizedTime.
    const CN_ONLY: &str = "-----BEGIN CERTIFICATE-----
MIIBdDCCARqgAwIBAgICEAEwCgYIKoZIzj0EAwIwGTEXMBUGA1UEAwwOU2FrdWlu
IFRlc3QgQ0EwIBcNNDkxMjMxMjM1OTU5WhgPMjA2MDAxMDEwMDAwMDBaMBwxGjAY
BgNVBAMMEW9sZC1zdHlsZS1jbi1vbmx5MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcD
QgAEEEAxa8m4STmjALXgdu3ytREjF4mlGeyWc4dj709XrtqS6YcuwLBB8t0ZUi6R
v7Y+iTMbl57F9ff60hGOduv/2aNNMEswCQYDVR0TBAIwADAdBgNVHQ4EFgQUrALx
1qPNZKekCaNNbiOeWpf9cwIwHwYDVR0jBBgwFoAU6KjKLkUK/UE3pXRlI7rY0I5M
TqcwCgYIKoZIzj0EAwIDSAAwRQIgLTTJhFGDjAlq6NExSSXkMskNgUhbUcAaiPQR
60KxmUQCIQClAuGw1LIrFvcdhQV9/zJk4DCQKuADayUOzN/fIhZcNA==
-----END CERTIFICATE-----";

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn reads_validity_names_and_issuer() {
        let leaf = LeafCertificate::parse(&der(LEAF)).unwrap();
        assert_eq!(leaf.not_before, 1_735_689_600); // 2025-01-01T00:00:00Z
        assert_eq!(leaf.not_after, 2_065_523_400); // 2035-06-15T12:30:00Z
        assert_eq!(
            leaf.names,
            vec!["es.example.internal", "*.es.example.internal", "10.0.0.5"]
        );
        assert_eq!(leaf.subject_cn.as_deref(), Some("es.example.internal"));
        assert_eq!(leaf.issuer_cn.as_deref(), Some("Sakuin Test CA"));
        assert!(!leaf.self_issued);
        assert_eq!(leaf.days_left(leaf.not_after - 86_400 * 3 - 5), 3);
        assert_eq!(leaf.days_left(leaf.not_after + 1), -1);
        assert_eq!(date(leaf.not_after), "2035-06-15 12:30 UTC");
    }

    #[test]
    fn reads_generalized_time_and_cn_only_certificates() {
        let leaf = LeafCertificate::parse(&der(CN_ONLY)).unwrap();
        assert_eq!(leaf.not_before, 2_524_607_999); // 2049-12-31T23:59:59Z
        assert_eq!(leaf.not_after, 2_840_140_800); // 2060-01-01T00:00:00Z
        assert!(leaf.names.is_empty());
        assert!(leaf.describe_names().contains("CN=old-style-cn-only"));
    }

    #[test]
    fn hostile_der_is_refused_not_panicked_on() {
        let good = der(LEAF);
        for cut in 0..good.len() {
            let _ = LeafCertificate::parse(&good[..cut]);
        }
        assert_eq!(
            LeafCertificate::parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(LeafCertificate::parse(b""), None);
    }

    #[test]
    fn a_bad_ca_bundle_is_named() {
        let err = TlsTrust::new(Some(
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        ))
        .unwrap_err();
        assert!(err.contains("ES_CA_CERT"), "{err}");
        let err = TlsTrust::new(Some("no pem here")).unwrap_err();
        assert!(err.contains("ES_CA_CERT holds no certificate"), "{err}");
        let trust = TlsTrust::new(Some(LEAF)).unwrap();
        assert_eq!(trust.extra_roots, 1);
    }
}
