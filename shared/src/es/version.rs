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

/// The release that introduced vector index type `index_type`; `None` for an unknown type.
pub fn index_type_since(index_type: &str) -> Option<Version> {
    let feature = match index_type {
        "hnsw" => "dense_vector indexed (hnsw)",
        "int8_hnsw" => "index_options int8_hnsw",
        "flat" | "int8_flat" => "index_options flat, int8_flat",
        "int4_hnsw" | "int4_flat" => "index_options int4_hnsw, int4_flat",
        "bbq_hnsw" | "bbq_flat" => "index_options bbq_hnsw, bbq_flat",
        _ => return None,
    };
    since(feature)
}

/// Every index type, in the order the documentation lists them.
pub const INDEX_TYPES: &[&str] = &[
    "hnsw",
    "int8_hnsw",
    "int4_hnsw",
    "bbq_hnsw",
    "flat",
    "int8_flat",
    "int4_flat",
    "bbq_flat",
];

/// The index types `version` accepts.
pub fn index_types(version: Version) -> Vec<&'static str> {
    INDEX_TYPES
        .iter()
        .copied()
        .filter(|t| index_type_since(t).is_some_and(|since| version >= since))
        .collect()
}

/// The vector index type of a new index: the configured one if the cluster takes it, else
/// (unconfigured) the best the cluster has — `int8_hnsw` (a quarter of the memory of full floats
/// at a small recall cost) from 8.12, `hnsw` before.
pub fn choose_index_type(configured: Option<&str>, version: Version) -> Result<String, String> {
    if version < OLDEST_SUPPORTED {
        return Err(format!(
            "Elasticsearch {version} is older than {OLDEST_SUPPORTED}, the oldest release sakuin supports (it needs the knn search option)"
        ));
    }
    match configured {
        Some(t) => match index_type_since(t) {
            Some(since) if version >= since => Ok(t.to_owned()),
            Some(since) => Err(format!(
                "ES_VECTOR_INDEX_TYPE={t} needs Elasticsearch {since} or later, and the cluster runs {version}: \
                 choose one of {} or leave it empty for the best of them",
                index_types(version).join(", ")
            )),
            None => Err(format!(
                "ES_VECTOR_INDEX_TYPE={t} is not one of {}",
                INDEX_TYPES.join(", ")
            )),
        },
        None => Ok(if version >= Version::new(8, 12, 0) {
            "int8_hnsw"
        } else {
            "hnsw"
        }
        .to_owned()),
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
            for t in INDEX_TYPES {
                let since = index_type_since(t).unwrap();
                if since == f.since {
                    assert!(index_types(f.since).contains(t), "{t} at {}", f.since);
                    if f.since.minor > 0 {
                        assert!(!index_types(before).contains(t), "{t} before {}", f.since);
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
        assert_eq!(index_types(v("9.1.0")), INDEX_TYPES);
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
            choose_index_type(Some("bbq_hnsw"), v("9.1.0")).unwrap(),
            "bbq_hnsw"
        );
        let e = choose_index_type(Some("int8_hnsw"), v("8.11.4")).unwrap_err();
        assert!(
            e.contains("needs Elasticsearch 8.12.0")
                && e.contains("runs 8.11.4")
                && e.contains("choose one of hnsw"),
            "{e}"
        );
        let e = choose_index_type(None, v("8.3.3")).unwrap_err();
        assert!(e.contains("older than 8.4.0"), "{e}");
        assert!(choose_index_type(Some("ivf"), v("9.1.0")).is_err());
    }
}
