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
}

/// An object opened for streaming.
pub struct OpenedObject {
    pub body: Pin<Box<dyn AsyncRead + Send>>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub size: Option<i64>,
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

    /// One page of the objects under `prefix`, in key order, after `start_after`.
    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send;
}

/// A page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// `(key, eTag)` of each object.
    pub objects: Vec<(String, Option<String>)>,
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
        let name = || (object.bucket.clone(), object.key.clone());
        match request.send().await {
            Ok(out) => Ok(OpenedObject {
                etag: out.e_tag.map(|e| e.trim_matches('"').to_owned()),
                version_id: out.version_id,
                size: out.content_length,
                body: Box::pin(out.body.into_async_read()),
            }),
            Err(err) => {
                let (bucket, key) = name();
                let status = err.raw_response().map(|r| r.status().as_u16());
                match err.into_service_error() {
                    GetObjectError::NoSuchKey(_) => Err(StoreError::NotFound { bucket, key }),
                    _ if status == Some(404) => Err(StoreError::NotFound { bucket, key }),
                    _ if status == Some(412) => Err(StoreError::Superseded { bucket, key }),
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
            .map_err(|e| StoreError::Other {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                source: Box::new(e.into_service_error()),
            })
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
                Some((
                    o.key()?.to_owned(),
                    o.e_tag().map(|e| e.trim_matches('"').to_owned()),
                ))
            })
            .collect();
        Ok(ListPage {
            objects,
            truncated: out.is_truncated().unwrap_or(false),
        })
    }
}

fn quoted(etag: &str) -> String {
    if etag.starts_with('"') {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}
