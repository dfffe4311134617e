//! CloudWatch Embedded Metric Format: one JSON line on stdout per batch of metrics, which
//! CloudWatch Logs turns into metrics with no API call.

use std::io::Write;

use serde_json::{Map, Value, json};

/// Namespace every sakuin metric is published under.
pub const NAMESPACE: &str = "sakuin";

/// Metrics that share one set of dimensions.
#[derive(Debug, Clone, Default)]
pub struct MetricSet {
    dimensions: Vec<(String, String)>,
    metrics: Vec<(String, f64, &'static str)>,
    properties: Map<String, Value>,
}

impl MetricSet {
    /// Metrics of one function, dimensioned by its name.
    pub fn new(function: &str) -> Self {
        Self::dimensions_only(&[("Function", function)])
    }

    /// Metrics with exactly these dimensions (alarms match dimension sets exactly).
    pub fn dimensions_only(dimensions: &[(&str, &str)]) -> Self {
        Self {
            dimensions: dimensions
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    pub fn dimension(mut self, name: &str, value: &str) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self
    }

    pub fn count(&mut self, name: &str, value: u64) -> &mut Self {
        self.metrics.push((name.into(), value as f64, "Count"));
        self
    }

    pub fn value(&mut self, name: &str, value: f64, unit: &'static str) -> &mut Self {
        self.metrics.push((name.into(), value, unit));
        self
    }

    /// A field carried on the log line but not turned into a metric (searchable in Logs Insights).
    pub fn property(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// The EMF line.
    pub fn to_line(&self) -> String {
        let timestamp = chrono::Utc::now().timestamp_millis();
        let names: Vec<&str> = self.dimensions.iter().map(|(n, _)| n.as_str()).collect();
        let definitions: Vec<Value> = self
            .metrics
            .iter()
            .map(|(n, _, unit)| json!({"Name": n, "Unit": unit}))
            .collect();
        let mut root = self.properties.clone();
        root.insert(
            "_aws".into(),
            json!({"Timestamp": timestamp, "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [names], "Metrics": definitions}]}),
        );
        for (n, v) in &self.dimensions {
            root.insert(n.clone(), Value::String(v.clone()));
        }
        for (n, v, _) in &self.metrics {
            root.insert(n.clone(), json!(v));
        }
        Value::Object(root).to_string()
    }

    /// Writes the line straight to stdout, outside the log formatter: EMF needs the whole line.
    pub fn emit(&self) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.to_line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_declares_every_metric_and_dimension() {
        let mut m = MetricSet::new("embed-index").dimension("Model", "titan");
        m.count("ChunksIndexed", 42)
            .value("BulkBytes", 1024.0, "Bytes")
            .property("requestId", "r-1");
        let v: Value = serde_json::from_str(&m.to_line()).unwrap();
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "sakuin");
        assert_eq!(directive["Dimensions"], json!([["Function", "Model"]]));
        assert_eq!(
            directive["Metrics"][0],
            json!({"Name": "ChunksIndexed", "Unit": "Count"})
        );
        assert_eq!(v["ChunksIndexed"], 42.0);
        assert_eq!(v["Function"], "embed-index");
        assert_eq!(v["Model"], "titan");
        assert_eq!(v["requestId"], "r-1");
        assert!(v["_aws"]["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    }
}
