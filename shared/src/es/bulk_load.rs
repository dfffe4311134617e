//! Bulk-load mode: while a large backfill writes, the index's `refresh_interval` is `-1` and
//! its replicas `0`, so the cluster neither makes a new segment searchable every second nor
//! copies every write to a replica; both come back when the backfill ends — Elasticsearch's
//! own advice for a bulk load:
//! <https://www.elastic.co/guide/en/elasticsearch/reference/current/tune-for-indexing-speed.html>.
//!
//! Nothing in sakuin's writes depends on the refresh: embed-index refreshes itself before the
//! `_delete_by_query` of its sweeps, reads chunks by id (real time), and only the reuse of a
//! vector by content (a search) may miss chunks written since the last refresh, which costs an
//! embedding, never a wrong document.
//!
//! The mode must never be left on. Its record — the settings it replaced, per concrete index,
//! and a lease — is written into the index's `_meta` *before* the settings are relaxed, and
//! removed only *after* they are restored, so a crash at any point leaves either nothing to do
//! or a record that says what to restore. The backfill renews the lease while it follows the
//! queues; a record whose lease ran out belongs to a backfill that stopped, and the scheduled
//! probe restores it ([`EsClient::restore_expired_bulk_load`]).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::{EsClient, EsError, encode_path};

/// The key of the record in the index's `_meta`.
const META_KEY: &str = "sakuin_bulk_load";

/// The settings one index had before bulk-load mode, as the cluster reported them (`None`:
/// unset, the default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    pub refresh_interval: Option<String>,
    pub number_of_replicas: Option<String>,
}

/// Bulk-load mode's record in `_meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkLoad {
    /// Who turned it on (the backfill's scope, host and process).
    pub by: String,
    pub since: String,
    /// Renewed while the backfill runs; past it, the mode is a leftover to restore.
    pub lease_until: String,
    /// Per concrete index behind the name (an alias may stand for several).
    pub replaced: BTreeMap<String, Replaced>,
}

impl BulkLoad {
    /// The record in a `GET <index>/_mapping` answer already read (from the first concrete
    /// index that has one); `None` when the mode is off.
    pub fn in_mapping(mapping: &Value, index: &str) -> Result<Option<BulkLoad>, EsError> {
        for m in mapping.as_object().into_iter().flatten().map(|(_, m)| m) {
            let record = m.pointer(&format!("/mappings/_meta/{META_KEY}"));
            if let Some(record) = record.filter(|r| !r.is_null()) {
                let record =
                    serde_json::from_value(record.clone()).map_err(|e| EsError::Decode {
                        what: format!("the bulk-load record in {index}'s _meta"),
                        detail: e.to_string(),
                    })?;
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// Whether its lease ran out at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        DateTime::parse_from_rfc3339(&self.lease_until)
            .map(|t| t.with_timezone(&Utc) < now)
            .unwrap_or(true)
    }

    /// One line for `status` and the probe.
    pub fn describe(&self) -> String {
        format!(
            "bulk-load mode on since {} by {} (refresh_interval -1, 0 replicas; lease until {})",
            self.since, self.by, self.lease_until
        )
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl EsClient {
    /// The index's `_meta` per concrete index.
    async fn metas(&self) -> Result<BTreeMap<String, Value>, EsError> {
        let mapping = self.mapping().await?;
        Ok(mapping
            .as_object()
            .into_iter()
            .flatten()
            .map(|(index, m)| {
                let meta = m.pointer("/mappings/_meta").cloned();
                (index.clone(), meta.unwrap_or_else(|| json!({})))
            })
            .collect())
    }

    /// Bulk-load mode's record, when it is on (read from the first concrete index that has one).
    pub async fn bulk_load(&self) -> Result<Option<BulkLoad>, EsError> {
        BulkLoad::in_mapping(&self.mapping().await?, &self.index)
    }

    /// Writes (or clears, with `None`) the record in every concrete index's `_meta`, keeping
    /// the rest of it. A mapping update replaces `_meta` whole on some clusters and merges it on
    /// others, so a cleared record is `null` rather than absent: that reads the same on both.
    async fn write_record(&self, record: Option<&BulkLoad>) -> Result<(), EsError> {
        for (index, mut meta) in self.metas().await? {
            let object = meta.as_object_mut().expect("_meta is an object");
            match record {
                Some(r) => {
                    object.insert(
                        META_KEY.into(),
                        serde_json::to_value(r).expect("serialises"),
                    );
                }
                None => {
                    if object.get(META_KEY).is_none_or(Value::is_null) {
                        continue;
                    }
                    object.insert(META_KEY.into(), Value::Null);
                }
            }
            let what = format!("recording bulk-load mode in {index}'s _meta");
            let body = serde_json::to_vec(&json!({ "_meta": meta })).expect("serialises");
            self.call(
                Method::PUT,
                &format!("/{}/_mapping", encode_path(&index)),
                Some((body, "application/json")),
                &what,
            )
            .await?;
        }
        Ok(())
    }

    /// The settings bulk-load mode replaces, per concrete index.
    async fn current_settings(&self) -> Result<BTreeMap<String, Replaced>, EsError> {
        let what = format!("reading the settings of {}", self.index);
        let bytes = self
            .call(
                Method::GET,
                &format!("/{}/_settings?flat_settings=true", encode_path(&self.index)),
                None,
                &what,
            )
            .await?;
        let answer = Self::json(&what, &bytes)?;
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        Ok(answer
            .as_object()
            .into_iter()
            .flatten()
            .map(|(index, s)| {
                let settings = &s["settings"];
                (
                    index.clone(),
                    Replaced {
                        refresh_interval: text(&settings["index.refresh_interval"]),
                        number_of_replicas: text(&settings["index.number_of_replicas"]),
                    },
                )
            })
            .collect())
    }

    async fn put_settings(&self, index: &str, settings: Value) -> Result<(), EsError> {
        let what = format!("changing the settings of {index}");
        let body = serde_json::to_vec(&json!({ "index": settings })).expect("serialises");
        self.call(
            Method::PUT,
            &format!("/{}/_settings", encode_path(index)),
            Some((body, "application/json")),
            &what,
        )
        .await?;
        Ok(())
    }

    /// Turns bulk-load mode on for `lease` (renew it with [`EsClient::renew_bulk_load`]). When
    /// it is on already (another backfill, or one that stopped), the settings it replaced stay
    /// those recorded then, never the relaxed ones.
    pub async fn start_bulk_load(&self, by: &str, lease: Duration) -> Result<BulkLoad, EsError> {
        let now = Utc::now();
        let lease_until = stamp(now + chrono::Duration::from_std(lease).unwrap_or_default());
        let record = match self.bulk_load().await? {
            Some(existing) => BulkLoad {
                by: by.to_owned(),
                lease_until,
                ..existing
            },
            None => BulkLoad {
                by: by.to_owned(),
                since: stamp(now),
                lease_until,
                replaced: self.current_settings().await?,
            },
        };
        // The record first: from here a crash leaves what to restore.
        self.write_record(Some(&record)).await?;
        for index in record.replaced.keys() {
            self.put_settings(
                index,
                json!({"refresh_interval": "-1", "number_of_replicas": 0}),
            )
            .await?;
        }
        Ok(record)
    }

    /// Extends the lease of the mode `record` turned on.
    pub async fn renew_bulk_load(
        &self,
        record: &BulkLoad,
        lease: Duration,
    ) -> Result<BulkLoad, EsError> {
        let renewed = BulkLoad {
            lease_until: stamp(Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default()),
            ..record.clone()
        };
        self.write_record(Some(&renewed)).await?;
        Ok(renewed)
    }

    /// Restores the settings bulk-load mode replaced, refreshes, then removes its record;
    /// returns the record, or `None` when the mode was off.
    pub async fn end_bulk_load(&self) -> Result<Option<BulkLoad>, EsError> {
        let Some(record) = self.bulk_load().await? else {
            return Ok(None);
        };
        for (index, replaced) in &record.replaced {
            // `null` puts a setting back to its default.
            self.put_settings(
                index,
                json!({
                    "refresh_interval": replaced.refresh_interval,
                    "number_of_replicas": replaced.number_of_replicas,
                }),
            )
            .await?;
        }
        self.refresh().await?;
        self.write_record(None).await?;
        Ok(Some(record))
    }

    /// Ends bulk-load mode when its lease ran out (the backfill that turned it on stopped
    /// without ending it); returns the record it ended.
    pub async fn restore_expired_bulk_load(&self) -> Result<Option<BulkLoad>, EsError> {
        match self.bulk_load().await? {
            Some(record) if record.expired(Utc::now()) => self.end_bulk_load().await,
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_in_the_past_or_unreadable_has_expired() {
        let record = |lease: &str| BulkLoad {
            by: "t".into(),
            since: "2026-12-07T00:00:00Z".into(),
            lease_until: lease.into(),
            replaced: BTreeMap::new(),
        };
        let now = DateTime::parse_from_rfc3339("2026-12-07T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(record("2026-12-07T00:59:59Z").expired(now));
        assert!(!record("2026-12-07T01:10:00Z").expired(now));
        assert!(record("whenever").expired(now));
    }
}
