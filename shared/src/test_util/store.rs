//! Object stores in memory: [`MemoryStore`], a plain key → bytes map with fixed eTags that unit
//! tests name directly, and [`VersionedStore`], S3's semantics for keys, versions and delete
//! markers, with the notifications each change makes.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use crate::store::{ObjectHead, ObjectRef, ObjectStore, OpenedObject, StoreError};

/// Objects in memory. Honours ranged reads, records every read, and can fail or slow down
/// the reads of chosen keys.
#[derive(Default)]
pub struct MemoryStore {
    pub objects: Mutex<HashMap<(String, String), Vec<u8>>>,
    /// The current version id of a key, in a versioned bucket.
    pub versions: Mutex<HashMap<String, String>>,
    /// Keys whose reads fail with a transient error.
    pub failing: Mutex<HashSet<String>>,
    /// Keys whose reads take this long (on tokio's paused clock).
    pub slow: Mutex<HashMap<String, Duration>>,
    pub opened: Mutex<Vec<ObjectRef>>,
}

impl ObjectStore for MemoryStore {
    async fn open(&self, object: &ObjectRef) -> Result<OpenedObject, StoreError> {
        self.opened.lock().unwrap().push(object.clone());
        let slow = self.slow.lock().unwrap().get(&object.key).copied();
        if let Some(delay) = slow {
            tokio::time::advance(delay).await;
        }
        if self.failing.lock().unwrap().contains(&object.key) {
            return Err(StoreError::Other {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                source: "connection reset".into(),
            });
        }
        let body = self
            .objects
            .lock()
            .unwrap()
            .get(&(object.bucket.clone(), object.key.clone()))
            .cloned()
            .ok_or(StoreError::NotFound {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
            })?;
        let start = object.range_start.unwrap_or(0).min(body.len() as u64);
        Ok(OpenedObject {
            size: Some(body.len() as i64),
            body: Box::pin(std::io::Cursor::new(body[start as usize..].to_vec())),
            etag: Some("e1".into()),
            version_id: self.versions.lock().unwrap().get(&object.key).cloned(),
            content_type: None,
            offset: start,
        })
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectHead>, StoreError> {
        if self.failing.lock().unwrap().contains(key) {
            return Err(StoreError::Other {
                bucket: bucket.into(),
                key: key.into(),
                source: "connection reset".into(),
            });
        }
        let exists = self
            .objects
            .lock()
            .unwrap()
            .contains_key(&(bucket.into(), key.into()));
        Ok(exists.then(|| ObjectHead {
            version_id: self.versions.lock().unwrap().get(key).cloned(),
            etag: Some("e2".into()),
        }))
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.objects
            .lock()
            .unwrap()
            .insert((bucket.into(), key.into()), body);
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.objects
            .lock()
            .unwrap()
            .remove(&(bucket.into(), key.into()));
        Ok(())
    }

    async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut objects = self.objects.lock().unwrap();
        let entry = objects.entry((bucket.into(), key.into()));
        match entry {
            std::collections::hash_map::Entry::Occupied(held) => Ok(Some(held.get().clone())),
            std::collections::hash_map::Entry::Vacant(free) => {
                free.insert(body);
                Ok(None)
            }
        }
    }

    /// Pages of two, so backfills cross page boundaries.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<crate::store::ListPage, StoreError> {
        let mut keys: Vec<String> = self
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|(b, k)| {
                b == bucket && k.starts_with(prefix) && start_after.is_none_or(|a| k.as_str() > a)
            })
            .map(|(_, k)| k.clone())
            .collect();
        keys.sort();
        let truncated = keys.len() > 2;
        keys.truncate(2);
        Ok(crate::store::ListPage {
            objects: keys
                .into_iter()
                .map(|key| crate::store::Listed {
                    key,
                    etag: Some("e1".into()),
                    size: 1,
                })
                .collect(),
            truncated,
        })
    }
}

/// One version of a key: an object, or a delete marker (`body` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// `"null"` in a bucket without versioning, as S3 names it.
    pub version_id: String,
    pub body: Option<Vec<u8>>,
    pub etag: Option<String>,
}

impl ObjectVersion {
    pub fn is_delete_marker(&self) -> bool {
        self.body.is_none()
    }
}

/// The S3 event notification a change makes, as S3 writes it into a queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Event {
    pub event_name: String,
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub etag: Option<String>,
    pub size: Option<usize>,
    pub sequencer: String,
}

impl S3Event {
    /// The notification's JSON body (one record), as S3 sends it to SQS.
    pub fn body(&self) -> String {
        let mut object = serde_json::json!({
            "key": encode_key(&self.key),
            "sequencer": self.sequencer,
        });
        if let Some(v) = &self.version_id {
            object["versionId"] = v.clone().into();
        }
        if let Some(e) = &self.etag {
            object["eTag"] = e.clone().into();
        }
        if let Some(s) = self.size {
            object["size"] = s.into();
        }
        serde_json::json!({"Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "eventName": self.event_name,
            "eventTime": "2026-01-01T00:00:00.000Z",
            "s3": {"bucket": {"name": self.bucket, "arn": format!("arn:aws:s3:::{}", self.bucket)}, "object": object},
        }]})
        .to_string()
    }
}

/// A key as S3 writes it into a notification: URL-encoded, spaces as `+`.
fn encode_key(key: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b' ');
    utf8_percent_encode(key, KEEP).to_string().replace(' ', "+")
}

/// An S3 bucket with S3's semantics for what ingest relies on: with versioning, every write is a
/// new version, a plain delete puts a delete marker on top, and deleting a version (a marker
/// included) removes just that one; without, a write replaces and a delete removes. Reads pinned
/// to a version id or an eTag (`If-Match`) see only that object. ETags are a hash of the
/// content; sequencers grow with every change. Each change returns the notification S3 sends.
#[derive(Debug)]
pub struct VersionedStore {
    pub bucket: String,
    pub versioned: bool,
    /// Keys per listing page (S3's is 1,000; small here so backfills cross pages).
    pub page_size: usize,
    /// Per key its versions, oldest first; the last is current.
    keys: Mutex<std::collections::BTreeMap<String, Vec<ObjectVersion>>>,
    next: std::sync::atomic::AtomicU64,
}

impl VersionedStore {
    pub fn new(bucket: &str, versioned: bool) -> Self {
        Self {
            bucket: bucket.into(),
            versioned,
            page_size: 2,
            keys: Mutex::default(),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// S3's eTag of a single-part upload is the MD5 of the content; a hash of it serves here.
    pub fn etag_of(body: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(body)[..16])
    }

    fn tick(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    fn event(&self, name: &str, key: &str, version: Option<&ObjectVersion>) -> S3Event {
        S3Event {
            event_name: name.into(),
            bucket: self.bucket.clone(),
            key: key.into(),
            version_id: version
                .filter(|_| self.versioned)
                .map(|v| v.version_id.clone()),
            etag: version.and_then(|v| v.etag.clone()),
            size: version.and_then(|v| v.body.as_ref().map(Vec::len)),
            sequencer: format!("{:016X}", self.tick()),
        }
    }

    /// PutObject.
    pub fn put_object(&self, key: &str, body: Vec<u8>) -> S3Event {
        let version = ObjectVersion {
            version_id: if self.versioned {
                format!("v{}", self.tick())
            } else {
                "null".into()
            },
            etag: Some(Self::etag_of(&body)),
            body: Some(body),
        };
        let event = self.event("ObjectCreated:Put", key, Some(&version));
        let mut keys = self.keys.lock().unwrap();
        let versions = keys.entry(key.into()).or_default();
        if !self.versioned {
            versions.clear();
        }
        versions.push(version);
        event
    }

    /// DeleteObject without a version id: a delete marker on top (versioned), or the key gone.
    pub fn delete_object(&self, key: &str) -> S3Event {
        if !self.versioned {
            self.keys.lock().unwrap().remove(key);
            return self.event("ObjectRemoved:Delete", key, None);
        }
        let marker = ObjectVersion {
            version_id: format!("v{}", self.tick()),
            body: None,
            etag: None,
        };
        let event = self.event("ObjectRemoved:DeleteMarkerCreated", key, Some(&marker));
        self.keys
            .lock()
            .unwrap()
            .entry(key.into())
            .or_default()
            .push(marker);
        event
    }

    /// DeleteObject of one version (an object or a delete marker); `None` when there is none.
    pub fn delete_version(&self, key: &str, version_id: &str) -> Option<S3Event> {
        let mut keys = self.keys.lock().unwrap();
        let versions = keys.get_mut(key)?;
        let at = versions.iter().position(|v| v.version_id == version_id)?;
        let removed = versions.remove(at);
        if versions.is_empty() {
            keys.remove(key);
        }
        drop(keys);
        let mut event = self.event("ObjectRemoved:Delete", key, Some(&removed));
        event.etag = None;
        event.size = None;
        Some(event)
    }

    /// The versions of `key`, oldest first.
    pub fn versions(&self, key: &str) -> Vec<ObjectVersion> {
        self.keys
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    /// The current object of `key`, unless it has none (absent, or a delete marker on top).
    pub fn current(&self, key: &str) -> Option<ObjectVersion> {
        self.versions(key).pop().filter(|v| !v.is_delete_marker())
    }

    /// Every key with a current object, in key order.
    pub fn current_objects(&self) -> Vec<(String, ObjectVersion)> {
        let keys = self.keys.lock().unwrap();
        keys.iter()
            .filter_map(|(k, versions)| {
                let v = versions.last()?;
                (!v.is_delete_marker()).then(|| (k.clone(), v.clone()))
            })
            .collect()
    }

    fn missing(&self, key: &str) -> StoreError {
        StoreError::NotFound {
            bucket: self.bucket.clone(),
            key: key.into(),
        }
    }
}

impl ObjectStore for VersionedStore {
    async fn open(&self, object: &ObjectRef) -> Result<OpenedObject, StoreError> {
        let versions = self.versions(&object.key);
        let version = match (&object.version_id, &object.etag) {
            (Some(id), _) => versions.into_iter().find(|v| &v.version_id == id),
            (None, etag) => {
                let current = versions.into_iter().last();
                if let (Some(c), Some(etag)) = (&current, etag)
                    && c.etag.as_ref() != Some(etag)
                {
                    if c.is_delete_marker() {
                        return Err(self.missing(&object.key));
                    }
                    // If-Match failed: 412.
                    return Err(StoreError::Superseded {
                        bucket: self.bucket.clone(),
                        key: object.key.clone(),
                    });
                }
                current
            }
        };
        let Some(ObjectVersion {
            body: Some(body),
            etag,
            version_id,
        }) = version
        else {
            return Err(self.missing(&object.key));
        };
        let start = object.range_start.unwrap_or(0).min(body.len() as u64);
        Ok(OpenedObject {
            size: Some((body.len() as u64 - start) as i64),
            body: Box::pin(std::io::Cursor::new(body[start as usize..].to_vec())),
            etag,
            version_id: self.versioned.then_some(version_id),
            content_type: None,
            offset: start,
        })
    }

    async fn head(&self, _bucket: &str, key: &str) -> Result<Option<ObjectHead>, StoreError> {
        Ok(self.current(key).map(|v| ObjectHead {
            version_id: self.versioned.then_some(v.version_id),
            etag: v.etag,
        }))
    }

    /// Writes a new version, with no notification (ingest's rejects are not data).
    async fn put(&self, _bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.put_object(key, body);
        Ok(())
    }

    async fn delete(&self, _bucket: &str, key: &str) -> Result<(), StoreError> {
        let _ = self.delete_object(key);
        Ok(())
    }

    async fn put_if_absent(
        &self,
        _bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        // One lock for the look and the write, as S3 decides a conditional write at once.
        let mut keys = self.keys.lock().unwrap();
        if let Some(held) = keys
            .get(key)
            .and_then(|v| v.last())
            .and_then(|v| v.body.clone())
        {
            return Ok(Some(held));
        }
        let version = ObjectVersion {
            version_id: "null".into(),
            etag: Some(Self::etag_of(&body)),
            body: Some(body),
        };
        keys.entry(key.into()).or_default().push(version);
        Ok(None)
    }

    async fn list(
        &self,
        _bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<crate::store::ListPage, StoreError> {
        let mut objects: Vec<crate::store::Listed> = self
            .current_objects()
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix) && start_after.is_none_or(|a| k.as_str() > a))
            .map(|(key, v)| crate::store::Listed {
                key,
                etag: v.etag,
                size: v.body.map_or(0, |b| b.len() as u64),
            })
            .collect();
        let truncated = objects.len() > self.page_size;
        objects.truncate(self.page_size);
        Ok(crate::store::ListPage { objects, truncated })
    }
}
