//! The probe's check names, their groups and the selectors that pick them: a leaf module, so
//! the configuration can validate `PROBE_REQUIRED_CHECKS` without depending on the probe.

/// Dependency groups, in report order.
pub const GROUPS: &[&str] = &["elasticsearch", "s3", "sqs", "bedrock", "secretsmanager"];

/// Every check the probe can report.
pub const CHECKS: &[&str] = &[
    "elasticsearch.dns",
    "elasticsearch.tcp",
    "elasticsearch.tls",
    "elasticsearch.http",
    "elasticsearch.path_mtu",
    "elasticsearch.link",
    "elasticsearch.auth",
    "elasticsearch.cluster",
    "elasticsearch.index",
    "s3.bucket",
    "sqs.queue",
    "sqs.dead_letter_queue",
    "sqs.intake_queue",
    "sqs.intake_dead_letter_queue",
    "bedrock.model",
    "secretsmanager.secret",
];

/// Whether `name` may appear in `PROBE_REQUIRED_CHECKS` or an event's `checks`: `all`, `none`,
/// a group or a check.
pub fn is_known_selector(name: &str) -> bool {
    name == "all" || name == "none" || GROUPS.contains(&name) || CHECKS.contains(&name)
}

/// The group of check `check` (`elasticsearch` for `elasticsearch.tls`).
pub fn group_of(check: &str) -> &str {
    check.split('.').next().unwrap_or(check)
}

/// Where a failed check broke: the layer a report's `layer` field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    // Elasticsearch, from the network up.
    Dns,
    Tcp,
    Tls,
    Http,
    PathMtu,
    /// The link too slow or too far for the configured `_bulk`.
    Link,
    Auth,
    Authz,
    Cluster,
    Version,
    Analyzer,
    Mapping,
    // The AWS services.
    Network,
    Access,
    ModelAccess,
    NotFound,
    Region,
    Throttled,
    Service,
    Request,
    Response,
    /// The probe's own settings or request.
    Config,
    /// A layer this build does not know (a report written by a newer probe).
    #[serde(other)]
    Other,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Http => "http",
            Self::PathMtu => "path_mtu",
            Self::Link => "link",
            Self::Auth => "auth",
            Self::Authz => "authz",
            Self::Cluster => "cluster",
            Self::Version => "version",
            Self::Analyzer => "analyzer",
            Self::Mapping => "mapping",
            Self::Network => "network",
            Self::Access => "access",
            Self::ModelAccess => "model_access",
            Self::NotFound => "not_found",
            Self::Region => "region",
            Self::Throttled => "throttled",
            Self::Service => "service",
            Self::Request => "request",
            Self::Response => "response",
            Self::Config => "config",
            Self::Other => "other",
        }
    }
}

/// Compares with the name a report writes.
impl PartialEq<&str> for Layer {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
