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
