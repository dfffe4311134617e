//! A small client of the EC2 Query API for the probe's read-only questions about its own
//! network (subnets, route tables, security groups, network ACLs, VPN and transit gateway
//! attachments), signed with SigV4. A handful of `Describe*` calls do not warrant the EC2 SDK
//! crate, the largest of the SDK's crates by far; the Query API is stable (version 2016-11-15)
//! and answers XML: <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/Query-Requests.html>.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use quick_xml::Reader;
use quick_xml::events::Event;

const API_VERSION: &str = "2016-11-15";

/// The EC2 Query API of one Region.
#[derive(Clone)]
pub struct Ec2 {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: Option<SharedCredentialsProvider>,
}

impl fmt::Debug for Ec2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ec2")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Ec2 {
    /// From the shared SDK configuration: its Region and credentials, and the endpoint every SDK
    /// would use (`AWS_ENDPOINT_URL_EC2`, then `AWS_ENDPOINT_URL`, unless
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`), else the Region's public one.
    pub fn from_sdk(conf: &aws_config::SdkConfig) -> Self {
        let region = conf
            .region()
            .map(ToString::to_string)
            .unwrap_or_else(|| "us-east-1".into());
        let ignored = std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let own = std::env::var("AWS_ENDPOINT_URL_EC2")
            .ok()
            .filter(|v| !v.trim().is_empty() && !ignored);
        let endpoint = own
            .or_else(|| conf.endpoint_url().map(str::to_owned))
            .unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"));
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(4))
            .user_agent(concat!("sakuin/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            region,
            credentials: conf.credentials_provider(),
        }
    }

    /// The same API with another time limit per call (4 s by default: the probe's reading has
    /// its budget; a test setting up a network may wait longer).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .user_agent(concat!("sakuin/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        self
    }

    /// One action with its parameters (`Filter.1.Name`, `SubnetId.1`, …); the response's root
    /// element, or the API's error code and message.
    pub async fn call(&self, action: &str, params: &[(String, String)]) -> Result<Node, String> {
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", action);
            form.append_pair("Version", API_VERSION);
            for (k, v) in params {
                form.append_pair(k, v);
            }
            form.finish()
        };
        let url = format!("{}/", self.endpoint);
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let mut request = self
            .http
            .post(&url)
            .header("content-type", content_type)
            .body(body.clone());
        let provider = self
            .credentials
            .as_ref()
            .ok_or("no AWS credentials are configured")?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| format!("AWS credentials: {e}"))?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("signing {action}: {e}"))?
            .into();
        let headers = [("content-type", content_type)];
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| format!("signing {action}: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| format!("signing {action}: {e}"))?
            .into_parts();
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| {
            let what = if e.is_timeout() || e.is_connect() {
                format!(
                    "the EC2 API ({}) did not answer: from a private subnet it needs a VPC endpoint (com.amazonaws.{}.ec2) or a NAT gateway",
                    self.endpoint, self.region
                )
            } else {
                format!("the EC2 API ({}): {e}", self.endpoint)
            };
            format!("{action}: {what}")
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{action}: reading the answer: {e}"))?;
        let root = Node::parse(&text).map_err(|e| format!("{action}: {e}"))?;
        if !status.is_success() {
            let error = root.find("Error");
            let code = error.and_then(|e| e.text_of("Code")).unwrap_or_default();
            let message = error.and_then(|e| e.text_of("Message")).unwrap_or_default();
            return Err(format!("{action}: {status} {code}: {message}"));
        }
        Ok(root)
    }
}

/// An element of an XML answer: its local name, its text, its children.
#[derive(Debug, Default, Clone)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn parse(xml: &str) -> Result<Node, String> {
        let mut reader = Reader::from_str(xml);
        let mut stack = vec![Node::default()];
        loop {
            let event = reader
                .read_event()
                .map_err(|e| format!("the answer is not XML: {e}"))?;
            match event {
                Event::Start(e) => stack.push(Node {
                    name: e.local_name().as_ref().to_owned(),
                    ..Node::default()
                }),
                Event::Empty(e) => {
                    let node = Node {
                        name: e.local_name().as_ref().to_owned(),
                        ..Node::default()
                    };
                    if let Some(parent) = stack.last_mut() {
                        parent.children.push(node);
                    }
                }
                Event::Text(t) => {
                    if let Some(node) = stack.last_mut() {
                        node.text.push_str(&t.xml10_content());
                    }
                }
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                            .unwrap_or_default()
                            .to_string(),
                    };
                    if let Some(node) = stack.last_mut() {
                        node.text.push_str(&resolved);
                    }
                }
                Event::End(_) => {
                    let node = stack.pop().ok_or("unbalanced XML")?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => return Err("unbalanced XML".into()),
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        let document = stack.pop().ok_or("unbalanced XML")?;
        document
            .children
            .into_iter()
            .next()
            .ok_or_else(|| "an empty answer".into())
    }

    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The first element of this name at any depth.
    pub fn find(&self, name: &str) -> Option<&Node> {
        self.children.iter().find_map(|c| {
            if c.name == name {
                Some(c)
            } else {
                c.find(name)
            }
        })
    }

    /// A child's trimmed text, when present and not empty.
    pub fn text_of(&self, name: &str) -> Option<String> {
        self.child(name)
            .map(|c| c.text.trim().to_owned())
            .filter(|t| !t.is_empty())
    }

    /// The `<item>`s of a child set (`routeTableSet`, `entrySet`…), empty when absent.
    pub fn items(&self, set: &str) -> impl Iterator<Item = &Node> {
        self.child(set)
            .into_iter()
            .flat_map(|s| s.children.iter().filter(|c| c.name == "item"))
    }
}

/// Query parameters for a list of ids (`SubnetId.1`, `SubnetId.2`…).
pub fn ids(name: &str, values: &[String]) -> Vec<(String, String)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("{name}.{}", i + 1), v.clone()))
        .collect()
}

/// Query parameters for filters: `Filter.N.Name` and `Filter.N.Value.M`.
pub fn filters(filters: &[(&str, &[String])]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (n, (name, values)) in filters.iter().enumerate() {
        out.push((format!("Filter.{}.Name", n + 1), (*name).to_owned()));
        for (m, value) in values.iter().enumerate() {
            out.push((format!("Filter.{}.Value.{}", n + 1, m + 1), value.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_errors_parse_into_nodes() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeSubnetsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>7a62c49f</requestId>
  <subnetSet>
    <item><subnetId>subnet-1</subnetId><cidrBlock>10.0.1.0/24</cidrBlock><tagSet/></item>
    <item><subnetId>subnet-2</subnetId><cidrBlock>10.0.2.0/24</cidrBlock></item>
  </subnetSet>
</DescribeSubnetsResponse>"#;
        let root = Node::parse(xml).unwrap();
        assert_eq!(root.name, "DescribeSubnetsResponse");
        let ids: Vec<String> = root
            .items("subnetSet")
            .filter_map(|s| s.text_of("subnetId"))
            .collect();
        assert_eq!(ids, ["subnet-1", "subnet-2"]);
        let error = Node::parse(
            "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized &amp; so on</Message></Error></Errors></Response>",
        )
        .unwrap();
        let e = error.find("Error").unwrap();
        assert_eq!(e.text_of("Code").unwrap(), "UnauthorizedOperation");
        assert_eq!(
            e.text_of("Message").unwrap(),
            "You are not authorized & so on"
        );
    }

    #[test]
    fn filters_number_names_and_values() {
        let p = filters(&[("vpc-id", &["vpc-1".to_owned()]), ("state", &[])]);
        assert_eq!(
            p,
            [
                ("Filter.1.Name".to_owned(), "vpc-id".to_owned()),
                ("Filter.1.Value.1".to_owned(), "vpc-1".to_owned()),
                ("Filter.2.Name".to_owned(), "state".to_owned()),
            ]
        );
    }
}
