//! Searching the index the way users search: by meaning (kNN on the chunks' vectors), by words
//! (BM25 on `text`), or both, fused by reciprocal rank; with filters on `metadata.*` and
//! `source.*` applied inside each search (a kNN pre-filter, not a post-filter).
//!
//! Reciprocal rank fusion is done by the cluster's `rrf` retriever where the release has it and
//! the licence allows it (Enterprise: <https://www.elastic.co/guide/en/elasticsearch/reference/8.14/rrf.html>),
//! else here, from the two ranked lists with the same constant, which needs no licence and no
//! particular release.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::embed::{EmbedError, Embedder, InputPurpose};
use crate::es::client::Hit;
use crate::es::{EsClient, EsError, version};

/// How the chunks are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    Knn,
    Keyword,
    /// Both, fused by reciprocal rank.
    #[default]
    Hybrid,
}

/// Who fuses the two lists of a hybrid search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fusion {
    /// The cluster where it can (release and licence), else the client.
    #[default]
    Auto,
    /// The client, from the two lists (each hit then knows its rank in each).
    Client,
    /// The cluster's `rrf` retriever, or an error saying why not.
    Cluster,
}

/// What to search for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub text: String,
    pub k: usize,
    pub mode: Mode,
    pub fusion: Fusion,
    /// `field = value` on `metadata.*` or `source.*`, all of which must hold.
    pub filters: Vec<(String, String)>,
    /// Only chunks of objects under `s3://bucket/prefix`.
    pub under: Option<(String, String)>,
}

impl Query {
    pub fn new(text: impl Into<String>, k: usize) -> Self {
        Self {
            text: text.into(),
            k,
            mode: Mode::default(),
            fusion: Fusion::default(),
            filters: Vec::new(),
            under: None,
        }
    }
}

/// Reads `field=value`; the field must be under `metadata.` or `source.`.
pub fn parse_filter(filter: &str) -> Result<(String, String), String> {
    let (field, value) = filter
        .split_once('=')
        .ok_or_else(|| format!("--filter {filter:?} is not field=value"))?;
    let field = field.trim();
    let known = field.starts_with("metadata.") || field.starts_with("source.");
    if !known || field.ends_with('.') {
        return Err(format!(
            "--filter {filter:?}: the field must be metadata.<name> (a record field) or source.<bucket|key|etag|version_id>"
        ));
    }
    Ok((field.to_owned(), value.to_owned()))
}

/// One hit and where it ranked in each list.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub hit: Hit,
    /// 1-based ranks in the kNN and the keyword lists.
    pub knn_rank: Option<usize>,
    pub keyword_rank: Option<usize>,
    /// The fused score (hybrid), else the list's own score.
    pub score: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("embedding the query with {0} failed: {1}")]
    Embed(String, EmbedError),
    #[error(transparent)]
    Index(EsError),
    #[error("the cluster cannot fuse the lists: {0}")]
    Fusion(String),
}

/// The hits of a search, and how a hybrid search was fused.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub hits: Vec<Ranked>,
    /// `Client` or `Cluster` for a hybrid search; `None` for one list.
    pub fused_by: Option<Fusion>,
    /// Why a hybrid search with [`Fusion::Auto`] was fused in the client.
    pub note: Option<String>,
}

/// The constant of reciprocal rank fusion (Elasticsearch's default `rank_constant`).
pub const RANK_CONSTANT: f64 = 60.0;

/// Fuses ranked lists of ids: each id scores Σ 1 / (RANK_CONSTANT + rank) over the lists it is
/// in; ties keep the order of first appearance.
pub fn fuse(lists: &[&[String]]) -> Vec<(String, f64)> {
    let mut scores: Vec<(String, f64)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for list in lists {
        for (i, id) in list.iter().enumerate() {
            let add = 1.0 / (RANK_CONSTANT + (i + 1) as f64);
            match at.get(id) {
                Some(&j) => scores[j].1 += add,
                None => {
                    at.insert(id.clone(), scores.len());
                    scores.push((id.clone(), add));
                }
            }
        }
    }
    scores.sort_by(|a, b| b.1.total_cmp(&a.1));
    scores
}

/// The filter clauses for the chunks of objects under `s3://bucket/prefix`.
pub fn under(bucket: &str, prefix: &str) -> Vec<Value> {
    let mut clauses = vec![json!({"term": {"source.bucket": bucket}})];
    if !prefix.is_empty() {
        clauses.push(json!({"prefix": {"source.key": prefix}}));
    }
    clauses
}

/// The filter clauses of `query`.
fn filter_clauses(query: &Query) -> Vec<Value> {
    let mut clauses: Vec<Value> = query
        .filters
        .iter()
        .map(|(field, value)| json!({"term": {field: value}}))
        .collect();
    if let Some((bucket, prefix)) = &query.under {
        clauses.extend(under(bucket, prefix));
    }
    clauses
}

/// The passage of a keyword hit that matched: one fragment of `text` around the best-scoring
/// terms, or its start when none matched (`no_match_size`).
fn highlight() -> Value {
    json!({
        "pre_tags": ["«"], "post_tags": ["»"],
        "fields": {"text": {"fragment_size": 200, "number_of_fragments": 1, "no_match_size": 200}}
    })
}

const FIELDS: [&str; 7] = [
    "doc_id",
    "chunk_index",
    "chunk_count",
    "text",
    "source",
    "metadata",
    "citation",
];

/// Runs `query` on `es`'s index; the query text is embedded (as a search query) only when the
/// mode needs a vector. Each list fetches twice `k` candidates, so fusion has some to work with.
pub async fn search<E: Embedder>(
    es: &EsClient,
    embedder: &E,
    query: &Query,
) -> Result<Found, SearchError> {
    let lists = Lists {
        filter: filter_clauses(query),
        window: if query.mode == Mode::Hybrid {
            (query.k * 2).max(10)
        } else {
            query.k
        },
    };
    let vector = match query.mode {
        Mode::Keyword => None,
        _ => Some(embed_query(embedder, &query.text).await?),
    };
    let mut note = None;
    if let (Mode::Hybrid, Some(vector)) = (query.mode, &vector)
        && query.fusion != Fusion::Client
    {
        match fused_by_cluster(es, query, &lists, vector).await {
            Ok(hits) => {
                return Ok(Found {
                    hits,
                    fused_by: Some(Fusion::Cluster),
                    note: None,
                });
            }
            Err(Unfused::Cannot(why)) if query.fusion == Fusion::Auto => note = Some(why),
            Err(Unfused::Cannot(why)) => return Err(SearchError::Fusion(why)),
            Err(Unfused::Failed(e)) => return Err(SearchError::Index(e)),
        }
    }
    // The two searches are independent: a hybrid search sends them at once.
    let knn = async {
        match &vector {
            Some(v) => lists.knn(es, v).await,
            None => Ok(Vec::new()),
        }
    };
    let keyword = async {
        match query.mode {
            Mode::Knn => Ok(Vec::new()),
            _ => lists.keyword(es, &query.text).await,
        }
    };
    let (knn, keyword) = futures::future::try_join(knn, keyword).await?;
    Ok(Found {
        hits: rank(query, knn, keyword),
        fused_by: (query.mode == Mode::Hybrid).then_some(Fusion::Client),
        note,
    })
}

/// The query text as a vector (`search_query` for Cohere).
async fn embed_query<E: Embedder>(embedder: &E, text: &str) -> Result<Vec<f32>, SearchError> {
    let model = embedder.model().id.clone();
    let out = embedder
        .invoke(&[text], InputPurpose::Query)
        .await
        .map_err(|e| SearchError::Embed(model.clone(), e))?;
    out.vectors.into_iter().next().ok_or_else(|| {
        SearchError::Embed(
            model,
            EmbedError::Permanent {
                code: "UnexpectedResponse".into(),
                message: "no vector in the answer".into(),
            },
        )
    })
}

/// The two searches of a query: their filter and how many candidates each ranks.
struct Lists {
    filter: Vec<Value>,
    window: usize,
}

impl Lists {
    /// The kNN search, pre-filtered.
    fn knn_clause(&self, vector: &[f32]) -> Value {
        json!({"field": "embedding", "query_vector": vector, "k": self.window,
               "num_candidates": (self.window * 10).max(50), "filter": self.filter})
    }

    /// BM25 on `text`, filtered.
    fn keyword_clause(&self, text: &str) -> Value {
        json!({"bool": {"must": {"match": {"text": text}}, "filter": self.filter}})
    }

    async fn knn(&self, es: &EsClient, vector: &[f32]) -> Result<Vec<Hit>, SearchError> {
        let body = json!({"knn": self.knn_clause(vector), "_source": FIELDS, "size": self.window});
        hits(es, &body).await.map_err(SearchError::Index)
    }

    async fn keyword(&self, es: &EsClient, text: &str) -> Result<Vec<Hit>, SearchError> {
        let body = json!({"query": self.keyword_clause(text), "_source": FIELDS,
                          "size": self.window, "highlight": highlight()});
        hits(es, &body).await.map_err(SearchError::Index)
    }

    /// One `rrf` retriever over both searches, with the client's constant and window.
    fn rrf_body(&self, text: &str, vector: &[f32], k: usize) -> Value {
        json!({
            "retriever": {"rrf": {
                "retrievers": [
                    {"knn": self.knn_clause(vector)},
                    {"standard": {"query": self.keyword_clause(text)}},
                ],
                "rank_window_size": self.window,
                "rank_constant": RANK_CONSTANT as u64,
            }},
            "_source": FIELDS,
            "size": k,
        })
    }
}

/// The hits of one `_search`.
async fn hits(es: &EsClient, body: &Value) -> Result<Vec<Hit>, EsError> {
    Ok(Hit::all_of(&es.search(body).await?))
}

/// Why the cluster did not fuse: it cannot (release, licence), or the search failed.
enum Unfused {
    Cannot(String),
    Failed(EsError),
}

/// The hybrid search fused by the cluster's `rrf` retriever.
async fn fused_by_cluster(
    es: &EsClient,
    query: &Query,
    lists: &Lists,
    vector: &[f32],
) -> Result<Vec<Ranked>, Unfused> {
    let since = version::since(version::RRF_RETRIEVER).expect("a row of the table");
    let release = es.version().await.map_err(|e| match e {
        EsError::Status { .. } => Unfused::Cannot(format!("the release is unknown ({e})")),
        e => Unfused::Failed(e),
    })?;
    if release < since {
        return Err(Unfused::Cannot(format!(
            "Elasticsearch {release} has no rrf retriever (it came in {since})"
        )));
    }
    let body = lists.rrf_body(&query.text, vector, query.k);
    match hits(es, &body).await {
        Ok(mut hits) => {
            with_passages(es, &query.text, &mut hits)
                .await
                .map_err(Unfused::Failed)?;
            Ok(hits
                .into_iter()
                .map(|hit| Ranked {
                    knn_rank: None,
                    keyword_rank: None,
                    score: hit.score,
                    hit,
                })
                .collect())
        }
        // A basic licence answers 403 ("current license is non-compliant for [rank-rrf]").
        Err(EsError::Status { status, reason, .. }) if (400..500).contains(&status) => {
            Err(Unfused::Cannot(format!(
                "Elasticsearch {release} refused the rrf retriever ({status}: {reason})"
            )))
        }
        Err(e) => Err(Unfused::Failed(e)),
    }
}

/// Gives the hits of a cluster-fused search the passages their words matched: a search may
/// not rank and highlight at once ("[rank] cannot be used with [highlighter]" before the
/// retrievers took highlighting), so one more search, of these chunks alone, asks for them.
async fn with_passages(es: &EsClient, text: &str, hits: &mut [Hit]) -> Result<(), EsError> {
    if hits.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    let body = json!({
        "query": {"bool": {"must": {"match": {"text": text}}, "filter": {"ids": {"values": ids}}}},
        "_source": false, "size": ids.len(), "highlight": highlight(),
    });
    let matched: HashMap<String, Option<String>> = Hit::all_of(&es.search(&body).await?)
        .into_iter()
        .map(|h| (h.id, h.highlight))
        .collect();
    for hit in hits {
        hit.highlight = matched.get(&hit.id).cloned().flatten();
    }
    Ok(())
}

/// The final list: one list as it came, or both fused.
fn rank(query: &Query, knn: Vec<Hit>, keyword: Vec<Hit>) -> Vec<Ranked> {
    let position = |list: &[Hit], id: &str| list.iter().position(|h| h.id == id).map(|i| i + 1);
    let knn_ids: Vec<String> = knn.iter().map(|h| h.id.clone()).collect();
    let keyword_ids: Vec<String> = keyword.iter().map(|h| h.id.clone()).collect();
    let order: Vec<(String, Option<f64>)> = match query.mode {
        Mode::Knn => knn_ids.iter().map(|id| (id.clone(), None)).collect(),
        Mode::Keyword => keyword_ids.iter().map(|id| (id.clone(), None)).collect(),
        Mode::Hybrid => fuse(&[&knn_ids, &keyword_ids])
            .into_iter()
            .map(|(id, s)| (id, Some(s)))
            .collect(),
    };
    // A keyword hit carries the passage that matched: it wins over the same chunk's kNN hit.
    let mut by_id: HashMap<String, Hit> = HashMap::new();
    for h in knn.iter().chain(&keyword) {
        by_id.insert(h.id.clone(), h.clone());
    }
    order
        .into_iter()
        .take(query.k)
        .filter_map(|(id, fused)| {
            let hit = by_id.get(&id)?.clone();
            Some(Ranked {
                knn_rank: position(&knn, &id),
                keyword_rank: position(&keyword, &id),
                score: fused.unwrap_or(hit.score),
                hit,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn hit(id: &str, score: f64) -> Hit {
        Hit {
            id: id.into(),
            score,
            source: json!({"text": id}),
            highlight: None,
        }
    }

    #[test]
    fn reciprocal_rank_fusion_rewards_agreement() {
        let fused = fuse(&[&ids(&["a", "b", "c"]), &ids(&["c", "d", "a"])]);
        let order: Vec<&str> = fused.iter().map(|(id, _)| id.as_str()).collect();
        // a: 1/61 + 1/63; c: 1/63 + 1/61: equal, a first seen; then b (1/62), d (1/62).
        assert_eq!(order, ["a", "c", "b", "d"]);
        assert!((fused[0].1 - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-12);
        assert!(fuse(&[&[], &[]]).is_empty());
    }

    #[test]
    fn each_hit_knows_its_ranks() {
        let mut query = Query::new("q", 3);
        let knn = vec![hit("a", 0.9), hit("b", 0.8)];
        let keyword = vec![hit("c", 7.0), hit("a", 3.0)];
        let ranked = rank(&query, knn.clone(), keyword.clone());
        assert_eq!(ranked[0].hit.id, "a");
        assert_eq!(
            (ranked[0].knn_rank, ranked[0].keyword_rank),
            (Some(1), Some(2))
        );
        assert_eq!(ranked.len(), 3);
        query.mode = Mode::Keyword;
        let ranked = rank(&query, Vec::new(), keyword);
        assert_eq!(ranked[0].hit.id, "c");
        assert_eq!(ranked[0].score, 7.0);
        assert_eq!(ranked[0].knn_rank, None);
    }

    #[test]
    fn a_chunk_both_lists_found_shows_the_passage_its_words_matched() {
        let query = Query::new("q", 3);
        let mut matched = hit("a", 3.0);
        matched.highlight = Some("the «q» passage".into());
        let ranked = rank(&query, vec![hit("a", 0.9)], vec![matched]);
        assert_eq!(ranked[0].hit.highlight.as_deref(), Some("the «q» passage"));
        // The cluster cannot rank and highlight in one search: its body asks for no passages.
        let lists = Lists {
            filter: vec![],
            window: 5,
        };
        assert!(lists.rrf_body("q", &[0.0], 3).get("highlight").is_none());
    }

    #[test]
    fn filters_name_metadata_or_source_fields() {
        assert_eq!(
            parse_filter("metadata.lang=ja"),
            Ok(("metadata.lang".into(), "ja".into()))
        );
        assert_eq!(
            parse_filter("source.key=a=b.jsonl"),
            Ok(("source.key".into(), "a=b.jsonl".into()))
        );
        assert!(parse_filter("text=x").is_err());
        assert!(parse_filter("metadata.").is_err());
        assert!(parse_filter("metadata.lang").is_err());
        let mut query = Query::new("q", 3);
        query.filters.push(("metadata.lang".into(), "ja".into()));
        query.under = Some(("b".into(), "faq/".into()));
        assert_eq!(
            filter_clauses(&query),
            [
                json!({"term": {"metadata.lang": "ja"}}),
                json!({"term": {"source.bucket": "b"}}),
                json!({"prefix": {"source.key": "faq/"}}),
            ]
        );
    }

    #[test]
    fn the_cluster_fuses_the_same_two_searches_with_the_same_constant() {
        let lists = Lists {
            filter: vec![json!({"term": {"metadata.lang": "ja"}})],
            window: 20,
        };
        let body = lists.rrf_body("パスワード", &[0.5, -0.5], 10);
        let rrf = &body["retriever"]["rrf"];
        assert_eq!(rrf["retrievers"][0]["knn"], lists.knn_clause(&[0.5, -0.5]));
        assert_eq!(
            rrf["retrievers"][1]["standard"]["query"],
            lists.keyword_clause("パスワード")
        );
        assert_eq!(
            rrf["retrievers"][0]["knn"]["filter"],
            json!([{"term": {"metadata.lang": "ja"}}]),
            "a pre-filter inside the kNN search"
        );
        assert_eq!(rrf["rank_window_size"], 20);
        assert_eq!(rrf["rank_constant"], 60);
        assert_eq!(body["size"], 10);
    }
}

/// The models whose vectors the index holds (`model_id` of its chunks), with their chunks.
pub async fn models_held(es: &EsClient) -> Result<Vec<(String, u64)>, EsError> {
    let answer = es
        .search(&json!({
            "size": 0,
            "aggs": {"models": {"terms": {"field": "model_id", "size": 10}}},
        }))
        .await?;
    Ok(answer
        .pointer("/aggregations/models/buckets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| Some((b["key"].as_str()?.to_owned(), b["doc_count"].as_u64()?)))
        .collect())
}

/// The model a query must be embedded by to be compared with the vectors `held` (see
/// [`models_held`]) of an index whose `embedding` has `mapped` dimensions: the configured one
/// when the index holds its vectors (or none yet), else the model the index was built with, and
/// a note saying so. An index holding several models' vectors, or one sakuin does not know, is
/// an error: a query vector compared with another model's vectors ranks noise.
pub fn model_for_index(
    index: &str,
    configured: &crate::embed::EmbeddingModel,
    held: &[(String, u64)],
    mapped: Option<usize>,
) -> Result<(crate::embed::EmbeddingModel, Option<String>), String> {
    match held {
        [] => Ok((configured.clone(), None)),
        [(id, _)] if configured.made(id) => Ok((configured.clone(), None)),
        [(id, chunks)] => {
            let dimensions = mapped.unwrap_or(configured.dimensions);
            let model = crate::embed::EmbeddingModel::resolve(id, Some(dimensions)).map_err(|e| {
                format!("{index} holds {chunks} chunks embedded by {id}, which this sakuin cannot embed a query with: {e}")
            })?;
            let note = format!(
                "{index} holds vectors of {id} ({chunks} chunks): the query is embedded by it, not by EMBEDDING_MODEL_ID {}",
                configured.id
            );
            Ok((model, Some(note)))
        }
        several => {
            let listed: Vec<String> = several
                .iter()
                .map(|(id, n)| format!("{id}: {n} chunks"))
                .collect();
            Err(format!(
                "{index} holds vectors of several models ({}): one query vector cannot be compared with all of them; \
                 give each model its own index (ES_INDEX) and backfill it",
                listed.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;
    use crate::embed::EmbeddingModel;

    #[test]
    fn the_query_is_embedded_by_the_model_the_index_holds() {
        let v2 = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", Some(1024)).unwrap();
        assert_eq!(
            model_for_index("docs", &v2, &[], Some(1024)).unwrap(),
            (v2.clone(), None)
        );
        let own = [("amazon.titan-embed-text-v2:0".to_owned(), 7)];
        assert_eq!(
            model_for_index("docs", &v2, &own, Some(1024)).unwrap().0,
            v2
        );
        let cohere = [("cohere.embed-multilingual-v3".to_owned(), 12)];
        let (model, note) = model_for_index("docs", &v2, &cohere, Some(1024)).unwrap();
        assert_eq!(model.id, "cohere.embed-multilingual-v3");
        assert_eq!(
            note.unwrap(),
            "docs holds vectors of cohere.embed-multilingual-v3 (12 chunks): the query is embedded by it, not by EMBEDDING_MODEL_ID amazon.titan-embed-text-v2:0"
        );
        let mixed = [cohere[0].clone(), own[0].clone()];
        let e = model_for_index("docs", &v2, &mixed, Some(1024)).unwrap_err();
        assert!(e.starts_with("docs holds vectors of several models (cohere.embed-multilingual-v3: 12 chunks, amazon.titan-embed-text-v2:0: 7 chunks)"), "{e}");
        let unknown = [("acme.embed-9".to_owned(), 3)];
        assert!(model_for_index("docs", &v2, &unknown, Some(1024)).is_err());
    }
}
