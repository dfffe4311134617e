//! Elasticsearch: the REST client, the chunk document and its mapping, and `_bulk` encoding and
//! item classification.

pub mod auth;
#[cfg(test)]
mod auth_tests;
pub mod bulk;
pub mod bulk_load;
pub mod client;
pub mod document;
pub mod migration;
pub mod state;
pub mod version;

pub use auth::AuthFuture;
pub use bulk::{BulkOutcome, DocVersion, Expect, ItemOutcome};
pub use client::{
    ClientIdentity, EsAuth, EsClient, EsError, EsSettings, Similarity, VectorSettings,
    within_deadline,
};
pub use document::{ChunkDocument, index_mapping};
pub use state::{SourceMarker, Stored, StoredChunk, StoredMarker};
