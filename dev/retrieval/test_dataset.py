"""Checks of the retrieval set: python3 -m unittest dev/retrieval/test_dataset.py"""

import json
import pathlib
import sys
import unittest
from collections import Counter

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build  # noqa: E402
import dataset  # noqa: E402

KINDS = {"keyword", "question", "paraphrase", "cross-lang", "deep", "near-dup"}


class Dataset(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = dataset.load_documents()
        cls.queries = dataset.load_queries()
        cls.qrels = dataset.load_qrels()

    def test_counts(self):
        self.assertGreaterEqual(len(self.docs), 1000)
        self.assertGreaterEqual(len(self.queries), 120)

    def test_committed_files_are_what_build_writes(self):
        c = build.build()
        problems, _ = build.audit(c)
        self.assertEqual(problems, [])
        for name, body in build.render(c).items():
            self.assertEqual((HERE / name).read_text(encoding="utf-8"), body, f"{name} is stale: run build.py")
        on_disk = {p.name for p in (HERE / "documents").iterdir()}
        self.assertEqual(on_disk, {n.split("/", 1)[1] for n in build.render(c) if n.startswith("documents/")})

    def test_records(self):
        for doc_id, rec in self.docs.items():
            self.assertIn(rec["lang"], ("en", "ja"), doc_id)
            self.assertTrue(rec["title"].strip() and rec["text"].strip(), doc_id)
            self.assertTrue(doc_id.startswith(rec["lang"] + "-"), doc_id)

    def test_both_formats_and_several_files(self):
        files = {r["_file"] for r in self.docs.values()}
        self.assertGreaterEqual(len(files), 6)
        self.assertTrue(any(f.endswith(".jsonl") for f in files))
        self.assertTrue(any(f.endswith(".json") for f in files))
        for f in files:
            if f.endswith(".json"):
                self.assertIsInstance(json.loads((HERE / "documents" / f).read_text(encoding="utf-8")), list)

    def test_languages_balanced(self):
        langs = Counter(r["lang"] for r in self.docs.values())
        self.assertLess(abs(langs["en"] - langs["ja"]) / len(self.docs), 0.1)
        qlangs = Counter(q["lang"] for q in self.queries)
        self.assertGreaterEqual(min(qlangs["en"], qlangs["ja"]) / len(self.queries), 0.35)

    def test_lengths(self):
        long_docs = Counter(r["lang"] for r in self.docs.values() if len(r["text"]) >= 1500)
        self.assertGreaterEqual(sum(long_docs.values()), 30)
        self.assertGreaterEqual(long_docs["ja"], 10)
        self.assertTrue(all(len(r["text"]) <= 6000 for r in self.docs.values()))
        self.assertGreaterEqual(sum(1 for r in self.docs.values() if len(r["text"]) < 300), 300)

    def test_queries(self):
        ids = [q["id"] for q in self.queries]
        self.assertEqual(len(ids), len(set(ids)))
        for q in self.queries:
            self.assertEqual(set(q), {"id", "lang", "text", "kind"})
            self.assertIn(q["kind"], KINDS)
        kinds = Counter(q["kind"] for q in self.queries)
        self.assertGreaterEqual(kinds["cross-lang"], 6)
        for kind in KINDS - {"cross-lang"}:
            self.assertGreaterEqual(kinds[kind], 20, kind)

    def test_qrels(self):
        qids = {q["id"] for q in self.queries}
        self.assertEqual(set(self.qrels), qids)
        for qid, judged in self.qrels.items():
            for doc_id, grade in judged.items():
                self.assertIn(doc_id, self.docs, qid)
                self.assertIn(grade, (0, 1, 2), qid)
            self.assertIn(2, judged.values(), f"{qid} has no answer")

    def test_kinds_hold_what_they_say(self):
        for q in self.queries:
            judged = self.qrels[q["id"]]
            answers = [d for d, g in judged.items() if g == 2]
            if q["kind"] == "cross-lang":
                self.assertTrue(all(self.docs[d]["lang"] != q["lang"] for d in answers), q["id"])
            else:
                self.assertTrue(any(self.docs[d]["lang"] == q["lang"] for d in answers), q["id"])
            if q["kind"] == "deep":
                self.assertTrue(any(len(self.docs[d]["text"]) >= 1500 for d in answers), q["id"])
            if q["kind"] == "near-dup":
                self.assertIn(0, judged.values(), q["id"])

    def test_size(self):
        total = sum(p.stat().st_size for p in (HERE / "documents").iterdir())
        self.assertLess(total, 6 * 1024 * 1024)

    def test_bm25_is_neither_trivial_nor_broken(self):
        run = dataset.bm25_run(self.docs, self.queries)
        r = dataset.evaluate(run, self.queries, self.qrels, by=lambda q: q["kind"])
        self.assertGreater(r["all"]["recall"], 0.6)
        self.assertLess(r["all"]["recall"], 0.95)
        self.assertLess(r["all"]["mrr"], 0.85)
        self.assertGreater(r["keyword"]["recall"], 0.9)
        self.assertLess(r["paraphrase"]["recall"], r["keyword"]["recall"] - 0.15)
        self.assertLess(r["cross-lang"]["recall"], 0.5)


if __name__ == "__main__":
    unittest.main()
