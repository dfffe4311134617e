//! What each Elasticsearch release can do that sakuin relies on, in one table, and the choices
//! made from it: the oldest release supported, and the vector index type of a new index.

use std::fmt;

/// A release, as `GET /` reports it in `version.number` (`8.15.3`, `9.1.0-SNAPSHOT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    pub fn parse(number: &str) -> Option<Self> {
        let release = number.split(['-', '+']).next()?;
        let mut parts = release.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Self::new(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A capability sakuin uses, the release that introduced it, and where that is documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub since: Version,
    pub source: &'static str,
}

const DENSE_VECTOR: &str =
    "https://www.elastic.co/guide/en/elasticsearch/reference/current/dense-vector.html";

/// Every feature the pipeline, the probe or the search depends on.
pub const FEATURES: &[Feature] = &[
    // Indexed dense_vector fields (HNSW) with a similarity, and `index_options` with `hnsw`.
    Feature {
        name: "dense_vector indexed (hnsw)",
        since: Version::new(8, 0, 0),
        source: "https://www.elastic.co/guide/en/elasticsearch/reference/8.0/dense-vector.html",
    },
    // The `knn` option of `_search` (8.0–8.3 had only the `_knn_search` endpoint).
    Feature {
        name: "knn search option",
        since: Version::new(8, 4, 0),
        source: "https://www.elastic.co/guide/en/elasticsearch/reference/8.4/knn-search.html",
    },
    Feature {
        name: "similarity max_inner_product",
        since: Version::new(8, 11, 0),
        source: DENSE_VECTOR,
    },
    Feature {
        name: "index_options int8_hnsw",
        since: Version::new(8, 12, 0),
        source: DENSE_VECTOR,
    },
    Feature {
        name: "index_options flat, int8_flat",
        since: Version::new(8, 13, 0),
        source: DENSE_VECTOR,
    },
    Feature {
        name: "index_options int4_hnsw, int4_flat",
        since: Version::new(8, 15, 0),
        source: DENSE_VECTOR,
    },
    Feature {
        name: "index_options bbq_hnsw, bbq_flat",
        since: Version::new(8, 16, 0),
        source: DENSE_VECTOR,
    },
    // Hybrid search fused by the cluster: the `rrf` retriever (technical preview in 8.14, GA in
    // 8.16). It is an Enterprise-licence feature (`rank-rrf`): a basic cluster answers 403
    // "current license is non-compliant for [rank-rrf]", and the search fuses in the client.
    Feature {
        name: RRF_RETRIEVER,
        since: Version::new(8, 14, 0),
        source: "https://www.elastic.co/guide/en/elasticsearch/reference/8.14/rrf.html",
    },
];

/// The name of the cluster-side reciprocal rank fusion row of [`FEATURES`].
pub const RRF_RETRIEVER: &str = "rrf retriever (Enterprise licence)";

/// The release that introduced feature `name` of [`FEATURES`].
pub fn since(name: &str) -> Option<Version> {
    FEATURES.iter().find(|f| f.name == name).map(|f| f.since)
}

/// The oldest release sakuin supports: the first with the `knn` search option.
pub const OLDEST_SUPPORTED: Version = Version::new(8, 4, 0);

/// A `dense_vector` field's `index_options.type` (`ES_VECTOR_INDEX_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexType {
    Hnsw,
    Int8Hnsw,
    Int4Hnsw,
    BbqHnsw,
    Flat,
    Int8Flat,
    Int4Flat,
    BbqFlat,
}

impl IndexType {
    /// Every index type, in the order the documentation lists them.
    pub const ALL: [IndexType; 8] = [
        IndexType::Hnsw,
        IndexType::Int8Hnsw,
        IndexType::Int4Hnsw,
        IndexType::BbqHnsw,
        IndexType::Flat,
        IndexType::Int8Flat,
        IndexType::Int4Flat,
        IndexType::BbqFlat,
    ];

    /// The name the mapping uses.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexType::Hnsw => "hnsw",
            IndexType::Int8Hnsw => "int8_hnsw",
            IndexType::Int4Hnsw => "int4_hnsw",
            IndexType::BbqHnsw => "bbq_hnsw",
            IndexType::Flat => "flat",
            IndexType::Int8Flat => "int8_flat",
            IndexType::Int4Flat => "int4_flat",
            IndexType::BbqFlat => "bbq_flat",
        }
    }

    /// The release that introduced it (its row of [`FEATURES`]).
    pub fn since(self) -> Version {
        let feature = match self {
            IndexType::Hnsw => "dense_vector indexed (hnsw)",
            IndexType::Int8Hnsw => "index_options int8_hnsw",
            IndexType::Flat | IndexType::Int8Flat => "index_options flat, int8_flat",
            IndexType::Int4Hnsw | IndexType::Int4Flat => "index_options int4_hnsw, int4_flat",
            IndexType::BbqHnsw | IndexType::BbqFlat => "index_options bbq_hnsw, bbq_flat",
        };
        since(feature).expect("every index type has its row in FEATURES")
    }

    fn names() -> String {
        Self::ALL.map(IndexType::as_str).join(", ")
    }
}

impl fmt::Display for IndexType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IndexType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "not one of {} (or empty: the best the cluster takes)",
                    Self::names()
                )
            })
    }
}

/// Compares with the name, as the mapping and the settings write it.
impl PartialEq<&str> for IndexType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The index types `version` accepts.
pub fn index_types(version: Version) -> Vec<IndexType> {
    IndexType::ALL
        .into_iter()
        .filter(|t| version >= t.since())
        .collect()
}

/// The vector index type of a new index: the configured one if the cluster takes it, else
/// (unconfigured) the best the cluster has — `int8_hnsw` (a quarter of the memory of full floats
/// at a small recall cost) from 8.12, `hnsw` before.
pub fn choose_index_type(
    configured: Option<IndexType>,
    version: Version,
) -> Result<IndexType, String> {
    if version < OLDEST_SUPPORTED {
        return Err(format!(
            "Elasticsearch {version} is older than {OLDEST_SUPPORTED}, the oldest release sakuin supports (it needs the knn search option)"
        ));
    }
    match configured {
        Some(t) if version >= t.since() => Ok(t),
        Some(t) => Err(format!(
            "ES_VECTOR_INDEX_TYPE={t} needs Elasticsearch {} or later, and the cluster runs {version}: \
             choose one of {} or leave it empty for the best of them",
            t.since(),
            index_types(version)
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None if version >= IndexType::Int8Hnsw.since() => Ok(IndexType::Int8Hnsw),
        None => Ok(IndexType::Hnsw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_read_as_the_cluster_writes_them() {
        assert_eq!(v("8.15.3"), Version::new(8, 15, 3));
        assert_eq!(v("9.1.0-SNAPSHOT"), Version::new(9, 1, 0));
        assert_eq!(v("8.4"), Version::new(8, 4, 0));
        assert!(v("8.10.0") > v("8.9.9"));
        assert!(Version::parse("seven").is_none());
        assert_eq!(v("8.11.4").to_string(), "8.11.4");
    }

    #[test]
    fn every_row_of_the_table() {
        // Each feature: absent one minor release before, present from its release on.
        for f in FEATURES {
            let before = Version::new(f.since.major, f.since.minor.saturating_sub(1), 99);
            assert!(
                f.source.starts_with("https://www.elastic.co/"),
                "{}",
                f.name
            );
            for t in IndexType::ALL {
                if t.since() == f.since {
                    assert!(index_types(f.since).contains(&t), "{t} at {}", f.since);
                    if f.since.minor > 0 {
                        assert!(!index_types(before).contains(&t), "{t} before {}", f.since);
                    }
                }
            }
        }
        assert_eq!(index_types(v("8.4.3")), ["hnsw"]);
        assert_eq!(index_types(v("8.11.4")), ["hnsw"]);
        assert_eq!(index_types(v("8.12.0")), ["hnsw", "int8_hnsw"]);
        assert_eq!(
            index_types(v("8.15.3")),
            [
                "hnsw",
                "int8_hnsw",
                "int4_hnsw",
                "flat",
                "int8_flat",
                "int4_flat"
            ]
        );
        assert_eq!(index_types(v("9.1.0")), IndexType::ALL);
        assert_eq!(since(RRF_RETRIEVER), Some(v("8.14.0")));
        assert_eq!(since("no such feature"), None);
    }

    #[test]
    fn the_index_type_is_the_best_the_cluster_takes_or_the_one_configured() {
        assert_eq!(choose_index_type(None, v("8.4.0")).unwrap(), "hnsw");
        assert_eq!(choose_index_type(None, v("8.11.4")).unwrap(), "hnsw");
        assert_eq!(choose_index_type(None, v("8.12.0")).unwrap(), "int8_hnsw");
        assert_eq!(choose_index_type(None, v("9.1.0")).unwrap(), "int8_hnsw");
        assert_eq!(
            choose_index_type(Some(IndexType::BbqHnsw), v("9.1.0")).unwrap(),
            "bbq_hnsw"
        );
        let e = choose_index_type(Some(IndexType::Int8Hnsw), v("8.11.4")).unwrap_err();
        assert!(
            e.contains("needs Elasticsearch 8.12.0")
                && e.contains("runs 8.11.4")
                && e.contains("choose one of hnsw"),
            "{e}"
        );
        let e = choose_index_type(None, v("8.3.3")).unwrap_err();
        assert!(e.contains("older than 8.4.0"), "{e}");
        assert!("ivf".parse::<IndexType>().is_err());
    }
}
