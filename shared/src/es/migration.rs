//! A model switch without downtime: one index per model behind the alias that search and writes
//! use (`ES_INDEX`).
//!
//! - Each index sakuin creates records in its `_meta.sakuin` the model and dimensions it holds.
//! - `sakuin migrate start` on an index named `ES_INDEX` first makes the name an alias: writes
//!   are blocked for the moment it takes to clone the index (hard links) to a versioned name
//!   (`<alias>-<model>-<dimensions>`), and one `_aliases` request removes the index and gives
//!   its name to the clone as an alias — searches read on throughout, and a write refused by the
//!   block is retried from the queue. Then it creates the new model's index beside it and
//!   records the migration
//!   in the current index's `_meta.sakuin_migration`. From then embed-index writes every batch
//!   to both: the current index as always, then the new one with the new model (only what the
//!   first write finished, so a message is done when both hold it), and a backfill of the bucket
//!   fills the new index (the current one finds its chunks unchanged and embeds nothing).
//! - `sakuin migrate swap` moves the alias in one `_aliases` request, once `reconcile` finds
//!   the new index equal to the bucket. Search answers from the old index until that request and
//!   from the new one after; embed-index follows the model the alias's index records.
//! - `sakuin migrate remove-old` deletes the former index, only when the alias has left it.
//!
//! <https://www.elastic.co/guide/en/elasticsearch/reference/current/indices-aliases.html>
//! (the actions of one request are applied atomically).

use chrono::{SecondsFormat, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::{EsClient, EsError, VectorSettings, encode_path};

/// `_meta.sakuin`: what an index holds.
const MODEL_KEY: &str = "sakuin";
/// `_meta.sakuin_migration`: a migration from this index.
const MIGRATION_KEY: &str = "sakuin_migration";

/// The model an index records holding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexModel {
    pub model: String,
    pub dimensions: usize,
}

/// A migration from the alias's index to a new model's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// The index the alias named when it began ...
    pub from: String,
    /// ... and the new model's.
    pub to: String,
    pub model: String,
    pub dimensions: usize,
    pub started: String,
    /// When the alias moved to `to`.
    #[serde(default)]
    pub swapped: Option<String>,
}

impl Migration {
    /// One line for `status` and `migrate`.
    pub fn describe(&self) -> String {
        match &self.swapped {
            None => format!(
                "migration under way since {}: {} → {} ({}, {} dimensions); writes go to both, search reads {}",
                self.started, self.from, self.to, self.model, self.dimensions, self.from
            ),
            Some(at) => format!(
                "migrated at {at}: {} → {} ({}, {} dimensions); {} is kept until `sakuin migrate remove-old {}`",
                self.from, self.to, self.model, self.dimensions, self.from, self.from
            ),
        }
    }
}

/// What the name (`ES_INDEX`) stands for, from one `GET <name>/_mapping`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// The concrete indices behind the name (the name itself when it is an index).
    pub indices: Vec<String>,
    /// The model the first of them records holding (none for an index created before sakuin
    /// recorded it).
    pub model: Option<IndexModel>,
    /// A migration from it, under way.
    pub migration: Option<Migration>,
}

impl Routing {
    pub fn in_mapping(mapping: &Value, name: &str) -> Result<Self, EsError> {
        let mut routing = Routing::default();
        for (index, m) in mapping.as_object().into_iter().flatten() {
            routing.indices.push(index.clone());
            let meta = |key: &str| {
                m.pointer(&format!("/mappings/_meta/{key}"))
                    .filter(|v| !v.is_null())
                    .cloned()
            };
            let decode = |what: &str, e: serde_json::Error| EsError::Decode {
                what: format!("the {what} in {index}'s _meta (behind {name})"),
                detail: e.to_string(),
            };
            if routing.model.is_none()
                && let Some(v) = meta(MODEL_KEY)
            {
                routing.model =
                    Some(serde_json::from_value(v).map_err(|e| decode("model record", e))?);
            }
            if routing.migration.is_none()
                && let Some(v) = meta(MIGRATION_KEY)
            {
                let m: Migration =
                    serde_json::from_value(v).map_err(|e| decode("migration record", e))?;
                routing.migration = m.swapped.is_none().then_some(m);
            }
        }
        Ok(routing)
    }

    /// Whether the name is an alias (rather than an index of that name).
    pub fn is_alias(&self, name: &str) -> bool {
        self.indices.iter().all(|i| i != name)
    }
}

/// The versioned name of `alias`'s index for a model: `docs-amazon-titan-embed-text-v2-0-1024`.
pub fn versioned_name(alias: &str, model_id: &str, dimensions: usize) -> String {
    let slug: String = model_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{alias}-{}-{dimensions}", slug.trim_matches('-'))
}

/// The `_meta` an index is created with.
pub fn created_meta(model_id: &str, dimensions: usize) -> Value {
    json!({ MODEL_KEY: IndexModel { model: model_id.to_owned(), dimensions } })
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl EsClient {
    /// The same cluster and credentials, for another index.
    pub fn for_index(&self, index: &str) -> EsClient {
        let mut client = self.clone();
        client.index = index.to_owned();
        client.markers = None;
        client
    }

    /// What the name stands for: its indices, their model, a migration under way.
    pub async fn routing(&self) -> Result<Routing, EsError> {
        Routing::in_mapping(&self.mapping().await?, &self.index)
    }

    /// Writes `record` as `_meta.<key>` of `index`, keeping the rest of its `_meta`.
    async fn put_meta(&self, index: &str, key: &str, record: Value) -> Result<(), EsError> {
        let client = self.for_index(index);
        let mapping = client.mapping().await?;
        let mut meta = mapping
            .get(index)
            .and_then(|m| m.pointer("/mappings/_meta"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        meta.as_object_mut()
            .expect("_meta is an object")
            .insert(key.to_owned(), record);
        self.call_json(
            Method::PUT,
            &format!("/{}/_mapping", encode_path(index)),
            &json!({ "_meta": meta }),
            &format!("recording the migration in {index}'s _meta"),
        )
        .await?;
        Ok(())
    }

    /// Starts a migration of the alias to `model_id` (`dimensions`): creates the new model's
    /// index (no alias yet) and records the migration in the current one, which makes
    /// embed-index write to both. Starting the same migration again returns it.
    pub async fn start_migration(
        &self,
        model_id: &str,
        dimensions: usize,
        vectors: &VectorSettings,
    ) -> Result<Migration, EsError> {
        let alias = &self.index;
        let routing = self.routing().await?;
        if let Some(m) = &routing.migration {
            if m.model == model_id && m.dimensions == dimensions {
                return Ok(m.clone());
            }
            return Err(EsError::Unsupported(format!(
                "a migration of {alias} to {} is under way: swap it (`sakuin migrate swap`) first",
                m.model
            )));
        }
        let from = match routing.indices.as_slice() {
            [one] if one != alias => {
                // Writable (a conversion stopped between its steps leaves the block on).
                self.set_write_block(one, false).await?;
                one.clone()
            }
            [_] => self.convert_to_alias(&routing).await?,
            many => {
                return Err(EsError::Unsupported(format!(
                    "{alias} is an alias of {} indices ({}): a migration needs it to name one",
                    many.len(),
                    many.join(", ")
                )));
            }
        };
        if routing
            .model
            .as_ref()
            .is_some_and(|m| m.model == model_id && m.dimensions == dimensions)
        {
            return Err(EsError::Unsupported(format!(
                "{alias} ({from}) already holds {model_id} with {dimensions} dimensions"
            )));
        }
        let to = versioned_name(alias, model_id, dimensions);
        let target = self.for_index(&to);
        target
            .create_versioned_index(dimensions, vectors, model_id, None)
            .await?;
        let migration = Migration {
            from: from.clone(),
            to,
            model: model_id.to_owned(),
            dimensions,
            started: now(),
            swapped: None,
        };
        let record = serde_json::to_value(&migration).expect("serialises");
        self.put_meta(&from, MIGRATION_KEY, record).await?;
        Ok(migration)
    }

    /// Sets or lifts `index.blocks.write` on `index` (documents; its metadata stays writable).
    async fn set_write_block(&self, index: &str, on: bool) -> Result<(), EsError> {
        self.call_json(
            Method::PUT,
            &format!("/{}/_settings", encode_path(index)),
            &json!({"index.blocks.write": on}),
            &format!("setting index.blocks.write={on} on {index}"),
        )
        .await?;
        Ok(())
    }

    /// Makes the index named like the alias a versioned index behind that alias: writes blocked,
    /// the index cloned, then in one `_aliases` request the index removed and its name added to
    /// the clone as an alias, the block lifted. Returns the clone's name. Every step may be run
    /// again after a crash (`sakuin migrate start` again).
    /// <https://www.elastic.co/guide/en/elasticsearch/reference/current/indices-clone-index.html>
    async fn convert_to_alias(&self, routing: &Routing) -> Result<String, EsError> {
        let alias = &self.index;
        let versioned = match &routing.model {
            Some(m) => versioned_name(alias, &m.model, m.dimensions),
            None => format!("{alias}-{}", Utc::now().format("%Y%m%d%H%M%S")),
        };
        tracing::info!(index = %alias, to = %versioned, "making the index name an alias: writes wait for the clone");
        self.set_write_block(alias, true).await?;
        let body = serde_json::to_vec(&json!({"settings": {"index.blocks.write": null}}))
            .expect("serialises");
        let (status, bytes) = self
            .send(
                Method::POST,
                &format!("/{}/_clone/{}", encode_path(alias), encode_path(&versioned)),
                Some((body, "application/json")),
            )
            .await?;
        let exists = String::from_utf8_lossy(&bytes).contains("resource_already_exists_exception");
        if !status.is_success() && !exists {
            return Err(super::client::status_error(
                &format!("cloning {alias} to {versioned}"),
                status,
                &bytes,
            ));
        }
        let actions = json!({"actions": [
            {"remove_index": {"index": alias}},
            {"add": {"index": versioned, "alias": alias}},
        ]});
        self.call_json(
            Method::POST,
            "/_aliases",
            &actions,
            &format!("giving {alias}'s name to {versioned} as an alias"),
        )
        .await?;
        self.set_write_block(&versioned, false).await?;
        Ok(versioned)
    }

    /// Moves the alias from the migration's former index to its new one, in one request, and
    /// marks the migration swapped on the former index. The caller checks first that the new
    /// index equals the bucket.
    pub async fn swap_migration(&self, migration: &Migration) -> Result<Migration, EsError> {
        let alias = &self.index;
        let actions = json!({"actions": [
            {"remove": {"index": migration.from, "alias": alias}},
            {"add": {"index": migration.to, "alias": alias}},
        ]});
        self.call_json(
            Method::POST,
            "/_aliases",
            &actions,
            &format!("moving {alias} from {} to {}", migration.from, migration.to),
        )
        .await?;
        let swapped = Migration {
            swapped: Some(now()),
            ..migration.clone()
        };
        let record = serde_json::to_value(&swapped).expect("serialises");
        self.put_meta(&migration.from, MIGRATION_KEY, record)
            .await?;
        Ok(swapped)
    }

    /// The migration recorded on `index`, a former index of the alias or the current one.
    pub async fn migration_of(&self, index: &str) -> Result<Option<Migration>, EsError> {
        let mapping = self.for_index(index).mapping().await?;
        let record = mapping
            .as_object()
            .into_iter()
            .flatten()
            .find_map(|(_, m)| m.pointer(&format!("/mappings/_meta/{MIGRATION_KEY}")))
            .filter(|v| !v.is_null())
            .cloned();
        record
            .map(|v| {
                serde_json::from_value(v).map_err(|e| EsError::Decode {
                    what: format!("the migration record in {index}'s _meta"),
                    detail: e.to_string(),
                })
            })
            .transpose()
    }

    /// Deletes `index`, a former index of the alias: only one a migration moved the alias away
    /// from (and the new index's own marker index, which served its build).
    pub async fn remove_former_index(&self, index: &str) -> Result<Migration, EsError> {
        let alias = &self.index;
        let routing = self.routing().await?;
        if routing.indices.iter().any(|i| i == index) {
            return Err(EsError::Unsupported(format!(
                "{alias} still names {index}: swap the migration first"
            )));
        }
        let Some(migration) = self.migration_of(index).await? else {
            return Err(EsError::Unsupported(format!(
                "{index} records no migration of {alias}: sakuin removes only an index it migrated away from"
            )));
        };
        if !routing.indices.contains(&migration.to) {
            return Err(EsError::Unsupported(format!(
                "{alias} does not name {}, where {index} was migrated to: nothing is removed",
                migration.to
            )));
        }
        for name in [
            index.to_owned(),
            self.for_index(&migration.to).marker_index(),
        ] {
            let (status, bytes) = self
                .send(Method::DELETE, &format!("/{}", encode_path(&name)), None)
                .await?;
            if !status.is_success() && status != reqwest::StatusCode::NOT_FOUND {
                return Err(super::client::status_error(
                    &format!("deleting {name}"),
                    status,
                    &bytes,
                ));
            }
        }
        Ok(migration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names_are_index_names() {
        assert_eq!(
            versioned_name("docs", "amazon.titan-embed-text-v2:0", 1024),
            "docs-amazon-titan-embed-text-v2-0-1024"
        );
        assert_eq!(
            versioned_name("docs", "us.cohere.embed-v4:0", 256),
            "docs-us-cohere-embed-v4-0-256"
        );
    }

    #[test]
    fn routing_reads_the_model_and_a_migration_under_way() {
        let migration = Migration {
            from: "docs-a-8".into(),
            to: "docs-b-16".into(),
            model: "b".into(),
            dimensions: 16,
            started: "2026-12-07T00:00:00Z".into(),
            swapped: None,
        };
        let mapping = json!({"docs-a-8": {"mappings": {"_meta": {
            "sakuin": {"model": "a", "dimensions": 8},
            "sakuin_migration": migration,
        }}}});
        let routing = Routing::in_mapping(&mapping, "docs").unwrap();
        assert_eq!(routing.indices, ["docs-a-8"]);
        assert!(routing.is_alias("docs"));
        assert_eq!(
            routing.model,
            Some(IndexModel {
                model: "a".into(),
                dimensions: 8
            })
        );
        assert_eq!(routing.migration, Some(migration.clone()));
        // Swapped: no longer under way. Cleared (null): none. An index of the name: no alias.
        let swapped = Migration {
            swapped: Some("2026-12-07T01:00:00Z".into()),
            ..migration
        };
        let mapping = json!({"docs": {"mappings": {"_meta": {"sakuin_migration": swapped}}}});
        let routing = Routing::in_mapping(&mapping, "docs").unwrap();
        assert_eq!(routing.migration, None);
        assert!(!routing.is_alias("docs"));
        let broken =
            json!({"docs-a-8": {"mappings": {"_meta": {"sakuin_migration": {"from": 1}}}}});
        let e = Routing::in_mapping(&broken, "docs")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("migration record in docs-a-8's _meta (behind docs)"),
            "{e}"
        );
    }
}
