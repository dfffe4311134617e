//! Reading source objects: the `ObjectStore` seam and its S3 adapter.

use std::future::Future;
use std::pin::Pin;

use tokio::io::AsyncRead;

/// One object version named by a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub etag: Option<String>,
    /// Read from this byte on (`Range: bytes=N-`): a later part of plain content need not fetch
    /// what an earlier part already read.
    pub range_start: Option<u64>,
}

/// An object opened for streaming.
pub struct OpenedObject {
    pub body: Pin<Box<dyn AsyncRead + Send>>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub size: Option<i64>,
    /// The `Content-Type` stored with the object (what the uploader set), one input of
    /// [`crate::documents::detect`].
    pub content_type: Option<String>,
    /// Where `body` starts in the object: the range start when a ranged read was honoured, 0 when
    /// the whole object came back.
    pub offset: u64,
}

/// The current version of a key, as HeadObject without a version id reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub version_id: Option<String>,
    pub etag: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object (or that version) is gone: deleted after the event was sent.
    #[error("s3://{bucket}/{key} no longer exists")]
    NotFound { bucket: String, key: String },
    /// The object was overwritten after the event was sent; the newer write has its own event.
    #[error("s3://{bucket}/{key} changed since the event (eTag no longer matches)")]
    Superseded { bucket: String, key: String },
    #[error("reading s3://{bucket}/{key} failed: {source}")]
    Other {
        bucket: String,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    fn other(bucket: &str, key: &str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Other {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source: Box::new(e),
        }
    }
}

/// Where documents are read from.
pub trait ObjectStore: Send + Sync {
    fn open(
        &self,
        object: &ObjectRef,
    ) -> impl Future<Output = Result<OpenedObject, StoreError>> + Send;

    /// Writes a small object (ingest's rejects).
    fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes a small object only where no object has that key (a conditional write,
    /// `If-None-Match: *`); returns `None` when written, else what the key already holds.
    fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// The key's current version; `None` when it has none (deleted, or a delete marker on top).
    fn head(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<ObjectHead>, StoreError>> + Send;

    /// Removes the key's current object (a delete marker in a versioned bucket); a key with
    /// none is no error. Only staging files are ever removed (`crate::batch`).
    fn delete(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One page of the objects under `prefix`, in key order, after `start_after`.
    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send;
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    /// Without the quotes S3 puts around it.
    pub etag: Option<String>,
    pub size: u64,
}

/// A page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// In key order (UTF-8 bytes, as S3 lists them).
    pub objects: Vec<Listed>,
    /// More objects follow the last one.
    pub truncated: bool,
}

/// Amazon S3 through the AWS SDK.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client) -> Self {
        Self { client }
    }
}

impl ObjectStore for S3Store {
    async fn open(&self, object: &ObjectRef) -> Result<OpenedObject, StoreError> {
        use aws_sdk_s3::operation::get_object::GetObjectError;

        let mut request = self
            .client
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key);
        // A version id pins the exact object; without versioning the eTag guards against reading a
        // newer write under an older event's name.
        match (&object.version_id, &object.etag) {
            (Some(version), _) => request = request.version_id(version),
            (None, Some(etag)) => request = request.if_match(quoted(etag)),
            (None, None) => {}
        }
        let start = object.range_start.filter(|&s| s > 0);
        if let Some(start) = start {
            request = request.range(format!("bytes={start}-"));
        }
        let name = || (object.bucket.clone(), object.key.clone());
        match request.send().await {
            Ok(out) => Ok(OpenedObject {
                etag: out.e_tag.map(|e| e.trim_matches('"').to_owned()),
                version_id: out.version_id,
                size: out.content_length,
                content_type: out.content_type,
                // A 206 says where its bytes start; a 200 (a store that ignored the range) is the
                // whole object.
                offset: out
                    .content_range
                    .as_deref()
                    .and_then(range_start)
                    .unwrap_or(0),
                body: Box::pin(out.body.into_async_read()),
            }),
            Err(err) => {
                let (bucket, key) = name();
                let status = err.raw_response().map(|r| r.status().as_u16());
                match err.into_service_error() {
                    GetObjectError::NoSuchKey(_) => Err(StoreError::NotFound { bucket, key }),
                    _ if status == Some(404) => Err(StoreError::NotFound { bucket, key }),
                    _ if status == Some(412) => Err(StoreError::Superseded { bucket, key }),
                    // 416: the range starts at the end (a part paused after the last record);
                    // nothing is left to read.
                    // https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html
                    _ if status == Some(416) && start.is_some() => Ok(OpenedObject {
                        etag: object.etag.clone(),
                        version_id: object.version_id.clone(),
                        size: None,
                        content_type: None,
                        offset: start.unwrap_or(0),
                        body: Box::pin(std::io::Cursor::new(Vec::new())),
                    }),
                    other => Err(StoreError::Other {
                        bucket,
                        key,
                        source: Box::new(other),
                    }),
                }
            }
        }
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/x-ndjson")
            .body(body.into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::other(bucket, key, e.into_service_error()))
    }

    /// S3 answers 412 when the key exists, and 409 when a write of the same key raced this one
    /// (then it is tried once more, to read the winner).
    /// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>
    async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let other = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Other {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source: e,
        };
        for _ in 0..2 {
            let sent = self
                .client
                .put_object()
                .bucket(bucket)
                .key(key)
                .if_none_match("*")
                .body(body.clone().into())
                .send()
                .await;
            let status = match sent {
                Ok(_) => return Ok(None),
                Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                    Some(status @ (409 | 412)) => status,
                    _ => return Err(other(Box::new(e.into_service_error()))),
                },
            };
            if status == 409 {
                continue;
            }
            let held = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| other(Box::new(e.into_service_error())))?;
            let bytes = held.body.collect().await.map_err(|e| other(Box::new(e)))?;
            return Ok(Some(bytes.into_bytes().to_vec()));
        }
        Err(other("conditional writes of this key kept racing".into()))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::other(bucket, key, e.into_service_error()))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectHead>, StoreError> {
        // Without a version id HeadObject answers for the current version; a delete marker on
        // top answers 404 like a missing key. Without s3:ListBucket on the bucket, S3 answers 403
        // instead of 404 for a missing key, so a 403 here is most likely that permission.
        // https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectHead {
                etag: out.e_tag.map(|e| e.trim_matches('"').to_owned()),
                version_id: out.version_id,
            })),
            Err(err) => {
                let status = err.raw_response().map(|r| r.status().as_u16());
                let error = err.into_service_error();
                if error.is_not_found() || status == Some(404) {
                    return Ok(None);
                }
                let source: Box<dyn std::error::Error + Send + Sync> = if status == Some(403) {
                    "HeadObject was refused (403): the role needs s3:ListBucket on the bucket (without it S3 answers 403, not 404, for a key with no current version) and s3:GetObject on the key".into()
                } else {
                    Box::new(error)
                };
                Err(StoreError::Other {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    source,
                })
            }
        }
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        let mut request = self.client.list_objects_v2().bucket(bucket).prefix(prefix);
        if let Some(after) = start_after {
            request = request.start_after(after);
        }
        let out = request.send().await.map_err(|e| StoreError::Other {
            bucket: bucket.to_owned(),
            key: prefix.to_owned(),
            source: Box::new(e.into_service_error()),
        })?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(Listed {
                    key: o.key()?.to_owned(),
                    etag: o.e_tag().map(|e| e.trim_matches('"').to_owned()),
                    size: o.size().unwrap_or(0).max(0) as u64,
                })
            })
            .collect();
        Ok(ListPage {
            objects,
            truncated: out.is_truncated().unwrap_or(false),
        })
    }
}

/// The first byte of a `Content-Range: bytes N-M/T` answer.
fn range_start(content_range: &str) -> Option<u64> {
    let range = content_range.trim().strip_prefix("bytes")?.trim_start();
    range.split_once('-')?.0.trim().parse().ok()
}

fn quoted(etag: &str) -> String {
    if etag.starts_with('"') {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes 0-0/1"), Some(0));
        assert_eq!(range_start("bytes */200"), None);
        assert_eq!(range_start("items 1-2/3"), None);
    }

    /// On the wire, against an S3 endpoint (the local stack's moto server):
    /// `SAKUIN_TEST_S3_ENDPOINT=http://127.0.0.1:PORT cargo test -p sakuin --lib store -- --ignored`
    #[tokio::test]
    #[ignore = "needs an S3 endpoint in SAKUIN_TEST_S3_ENDPOINT (the local stack's moto server)"]
    async fn ranged_reads_and_current_versions_on_the_wire() {
        use tokio::io::AsyncReadExt;
        let endpoint = std::env::var("SAKUIN_TEST_S3_ENDPOINT").expect("SAKUIN_TEST_S3_ENDPOINT");
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("ap-northeast-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::for_tests())
            .endpoint_url(endpoint)
            .force_path_style(true)
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        let bucket = format!("store-test-{}", fastrand::u32(..));
        client
            .create_bucket()
            .bucket(&bucket)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::ApNortheast1)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        client
            .put_bucket_versioning()
            .bucket(&bucket)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let store = S3Store::new(client.clone());
        let put = |body: &'static str| {
            client
                .put_object()
                .bucket(&bucket)
                .key("k.jsonl")
                .body(body.as_bytes().to_vec().into())
                .send()
        };
        let first = put("0123456789").await.unwrap();
        let second = put("abcdefghij").await.unwrap();
        let read = |range_start, version_id: Option<&str>| ObjectRef {
            bucket: bucket.clone(),
            key: "k.jsonl".into(),
            version_id: version_id.map(str::to_owned),
            etag: None,
            range_start,
        };
        let body = |mut o: OpenedObject| async move {
            let mut text = String::new();
            o.body.read_to_string(&mut text).await.unwrap();
            (o.offset, text)
        };
        // A ranged read of the older version, pinned by its id.
        let older = store
            .open(&read(Some(4), first.version_id()))
            .await
            .unwrap();
        assert_eq!(body(older).await, (4, "456789".to_string()));
        assert_eq!(
            body(store.open(&read(None, None)).await.unwrap()).await,
            (0, "abcdefghij".to_string())
        );
        // A range that starts at the end: nothing left, not an error.
        assert_eq!(
            body(store.open(&read(Some(10), None)).await.unwrap()).await,
            (10, String::new())
        );

        let head = store.head(&bucket, "k.jsonl").await.unwrap().unwrap();
        assert_eq!(head.version_id.as_deref(), second.version_id());
        assert_eq!(store.head(&bucket, "missing.jsonl").await.unwrap(), None);
        // A delete marker on top: no current version.
        client
            .delete_object()
            .bucket(&bucket)
            .key("k.jsonl")
            .send()
            .await
            .unwrap();
        assert_eq!(store.head(&bucket, "k.jsonl").await.unwrap(), None);
    }

    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(quoted("abc"), "\"abc\"");
        assert_eq!(quoted("\"abc\""), "\"abc\"");
    }
}
