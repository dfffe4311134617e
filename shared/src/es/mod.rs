//! Elasticsearch: the REST client, the chunk document and its mapping, and `_bulk` encoding and
//! item classification.

pub mod auth;
pub mod bulk;
pub mod client;
pub mod document;

pub use auth::AuthFuture;
pub use bulk::{BulkOutcome, ItemOutcome};
pub use client::{EsAuth, EsClient, EsError, EsSettings, Stored, VectorSettings};
pub use document::{ChunkDocument, index_mapping};
