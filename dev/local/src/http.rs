//! HTTP/1.1 for the loopback servers (the Runtime API, the Elasticsearch fault proxy), served by
//! hyper: each handler sees a whole request and answers a whole JSON response.

use std::future::Future;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One request, its body read whole. Header names are lower-cased.
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads hyper's request, body included.
    async fn read(request: hyper::Request<Incoming>) -> Result<Self, hyper::Error> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await?.to_bytes().to_vec();
        Ok(Self {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_owned(), value)
                })
                .collect(),
            body,
        })
    }
}

/// A JSON response.
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A JSON response with these extra headers.
pub fn http_response(status: u16, headers: &[(&str, String)], body: &[u8]) -> Response {
    Response {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        body: body.to_vec(),
    }
}

impl Response {
    fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let mut builder = hyper::Response::builder()
            .status(self.status)
            .header("content-type", "application/json");
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(Bytes::from(self.body)))
            .expect("a status and headers of our own make a valid response")
    }
}

/// Serves one accepted connection (keep-alive: its requests in turn) until the peer closes it.
pub async fn serve_connection<H, F>(stream: TcpStream, handler: H)
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let handler = handler.clone();
        async move {
            let request = Request::read(request).await?;
            Ok::<_, hyper::Error>(handler(request).await.into_hyper())
        }
    });
    // A peer that goes away mid-request is the end of its connection, nothing more.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
