"""Reading the retrieval set, scoring a run against its judgments, and a lexical baseline.

    python3 dev/retrieval/dataset.py           # BM25 baseline figures, overall and by kind
    python3 dev/retrieval/dataset.py --lang    # ... and by language

Standard library only. A run is {query id: [doc id, ...]} ranked best first, one entry per
document (a chunk-level search collapses its hits to their doc_id, keeping the first).
"""

import csv
import json
import math
import pathlib
import re
import sys
from collections import Counter, defaultdict

HERE = pathlib.Path(__file__).resolve().parent
TEXT_FIELDS = ("title", "text")   # the TEXT_FIELDS the benchmark configures ingest with


def load_documents(root=HERE):
    docs = {}
    for path in sorted((root / "documents").iterdir()):
        if path.suffix == ".json":
            recs = json.loads(path.read_text(encoding="utf-8"))
        else:
            recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for rec in recs:
            rec["_file"] = path.name
            if rec["id"] in docs:
                raise ValueError(f"duplicate document id {rec['id']}")
            docs[rec["id"]] = rec
    return docs


def load_queries(root=HERE):
    return [json.loads(line) for line in (root / "queries.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def load_qrels(root=HERE):
    """{query id: {doc id: grade}}; grade 0 rows are judged not relevant (near-duplicate traps)."""
    qrels = defaultdict(dict)
    with open(root / "qrels.tsv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels[row["query_id"]][row["doc_id"]] = int(row["grade"])
    return dict(qrels)


def doc_text(rec):
    return "\n\n".join(str(rec[f]) for f in TEXT_FIELDS if rec.get(f))


# ---- metrics -------------------------------------------------------------------------------

def recall_at(ranked, judged, k=10):
    """Share of the documents that answer the query (grade 2) found in the first k."""
    answers = {d for d, g in judged.items() if g == 2}
    return len(answers & set(ranked[:k])) / len(answers)


def ndcg_at(ranked, judged, k=10):
    """nDCG with gain 2^grade - 1, so grade 2 counts 3 and grade 1 counts 1."""
    def dcg(grades):
        return sum((2 ** g - 1) / math.log2(i + 2) for i, g in enumerate(grades))
    ideal = dcg(sorted((g for g in judged.values() if g > 0), reverse=True)[:k])
    return dcg([judged.get(d, 0) for d in ranked[:k]]) / ideal


def rr_at(ranked, judged, k=10):
    """Reciprocal rank of the first grade-2 document within the first k (0 if none)."""
    for i, d in enumerate(ranked[:k]):
        if judged.get(d) == 2:
            return 1 / (i + 1)
    return 0.0


def trap_first(ranked, judged, k=10):
    """For a query with judged traps (grade 0): 1 if a trap ranks above every answer in the
    first k, else 0; None for a query without traps."""
    if 0 not in judged.values():
        return None
    for d in ranked[:k]:
        if judged.get(d) == 2:
            return 0
        if judged.get(d) == 0:
            return 1
    return 0


def evaluate(run, queries, qrels, k=10, by=None):
    """Mean recall@k, nDCG@k and MRR@k over the queries, and the share of queries with traps
    whose trap came first, per group of ``by(query)``."""
    groups = defaultdict(list)
    for q in queries:
        ranked, judged = run.get(q["id"], []), qrels[q["id"]]
        scores = (recall_at(ranked, judged, k), ndcg_at(ranked, judged, k), rr_at(ranked, judged, k),
                  trap_first(ranked, judged, k))
        groups["all"].append(scores)
        if by:
            groups[by(q)].append(scores)
    out = {}
    for g, s in groups.items():
        traps = [x[3] for x in s if x[3] is not None]
        out[g] = {"n": len(s), "recall": sum(x[0] for x in s) / len(s), "ndcg": sum(x[1] for x in s) / len(s),
                  "mrr": sum(x[2] for x in s) / len(s), "with_traps": len(traps),
                  "trap_first": sum(traps) / len(traps) if traps else None}
    return out


# ---- BM25 baseline ---------------------------------------------------------------------------

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_TOKEN = re.compile(rf"[{_CJK}]+|[0-9a-z]+")
_STOP = frozenset("a an and are as at be but by for if in into is it no not of on or such that the their then there these they this to was will with".split())


def tokenize(text):
    """Roughly what Elasticsearch's cjk analyzer does: NFKC-folded lowercase words, English
    stop words removed, runs of kana and kanji cut into overlapping bigrams."""
    import unicodedata
    out = []
    for tok in _TOKEN.findall(unicodedata.normalize("NFKC", text).lower()):
        if re.match(rf"[{_CJK}]", tok):
            out.extend(tok[i:i + 2] for i in range(max(1, len(tok) - 1)))
        elif tok not in _STOP:
            out.append(tok)
    return out


class BM25:
    def __init__(self, docs, k1=1.2, b=0.75):
        self.k1, self.b = k1, b
        self.ids = list(docs)
        self.postings = defaultdict(list)
        self.lengths = []
        for n, doc_id in enumerate(self.ids):
            tf = Counter(tokenize(doc_text(docs[doc_id])))
            self.lengths.append(sum(tf.values()))
            for term, count in tf.items():
                self.postings[term].append((n, count))
        self.avg = sum(self.lengths) / len(self.lengths)

    def search(self, query, k=10):
        scores = defaultdict(float)
        total = len(self.ids)
        for term in set(tokenize(query)):
            plist = self.postings.get(term)
            if not plist:
                continue
            idf = math.log(1 + (total - len(plist) + 0.5) / (len(plist) + 0.5))
            for n, tf in plist:
                norm = tf + self.k1 * (1 - self.b + self.b * self.lengths[n] / self.avg)
                scores[n] += idf * tf * (self.k1 + 1) / norm
        best = sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]
        return [self.ids[n] for n, _ in best]


def bm25_run(docs, queries, k=10):
    index = BM25(docs)
    return {q["id"]: index.search(q["text"], k) for q in queries}


def main(argv):
    docs, queries, qrels = load_documents(), load_queries(), load_qrels()
    run = bm25_run(docs, queries)
    print("BM25 (cjk-like analysis, title + text), document level, k = 10")
    print(f"{'group':<16}{'n':>5}{'recall@10':>11}{'nDCG@10':>10}{'MRR@10':>9}{'trap first':>13}")
    by_kind = evaluate(run, queries, qrels, by=lambda q: q["kind"])
    rows = list(by_kind.items())
    if "--lang" in argv:
        rows += [(f"lang={g}", r) for g, r in evaluate(run, queries, qrels, by=lambda q: q["lang"]).items() if g != "all"]
    for g, r in rows:
        trap = f"{r['trap_first']:.2f} of {r['with_traps']}" if r["with_traps"] else "-"
        print(f"{g:<16}{r['n']:>5}{r['recall']:>11.3f}{r['ndcg']:>10.3f}{r['mrr']:>9.3f}{trap:>13}")


if __name__ == "__main__":
    main(sys.argv[1:])
