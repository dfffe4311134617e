#!/usr/bin/env python3
"""Builds the labelled retrieval set in this directory from the material in material/.

    python3 dev/retrieval/build.py          # writes documents/, queries.jsonl, qrels.tsv
    python3 dev/retrieval/build.py --check  # fails if the committed files differ

Deterministic (no clock, no unseeded randomness) and standard library only.
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from material import (community, faq, gate, handbook, howto, internal, news,  # noqa: E402
                      offices, queries, reference, releases)
from material.corpus import Corpus  # noqa: E402

MODULES = [faq, reference, howto, gate, releases, offices, handbook, internal, news, community]
JSON_ARRAY_FILES = {"kb-en.json", "kb-ja.json", "handbook-en.json", "handbook-ja.json"}


def build():
    c = Corpus()
    for m in MODULES:
        m.build(c)
    queries.queries(c)
    return c


def audit(c):
    """Problems with the judgments: a grade-2 document without any phrase of the answer, a
    judgment of a missing document; and, as notes to review, unjudged documents that contain a
    phrase of a query's answer."""
    problems, notes = [], []
    judged = {}
    for q, d, g in c.qrels:
        judged.setdefault(q, {})[d] = g
        if d not in c.docs:
            problems.append(f"{q}: no document {d}")
    for q in c.queries:
        ev = [e.lower() for e in c.evidence.get(q["id"], [])]
        for d, g in judged.get(q["id"], {}).items():
            if g == 2 and d in c.docs:
                body = (c.docs[d]["title"] + "\n" + c.docs[d]["text"]).lower()
                if not any(e in body for e in ev):
                    problems.append(f"{q['id']}: {d} is graded 2 but holds none of {ev}")
        for d, rec in c.docs.items():
            if d in judged.get(q["id"], {}):
                continue
            body = (rec["title"] + "\n" + rec["text"]).lower()
            hits = [e for e in ev if e in body]
            if hits:
                notes.append(f"{q['id']} ({q['text']}): unjudged {d} holds {hits}")
    return problems, notes


def render(c):
    """File name -> content, for every file the set consists of."""
    out = {}
    by_file = {}
    for doc_id, rec in c.docs.items():
        by_file.setdefault(c.files[doc_id], []).append(rec)
    for name in sorted(by_file):
        recs = by_file[name]
        if name in JSON_ARRAY_FILES:
            body = json.dumps(recs, ensure_ascii=False, indent=2) + "\n"
        else:
            body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
        out["documents/" + name] = body
    out["queries.jsonl"] = "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in c.queries)
    out["qrels.tsv"] = "query_id\tdoc_id\tgrade\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q, d, g in c.qrels)
    return out


def main(argv):
    c = build()
    problems, notes = audit(c)
    if "--audit" in argv:
        print("\n".join(notes))
    if problems:
        print("\n".join(problems))
        return 1
    files = render(c)
    if "--check" in argv:
        stale = [n for n, body in files.items()
                 if not (HERE / n).exists() or (HERE / n).read_text(encoding="utf-8") != body]
        if stale:
            print("out of date: " + ", ".join(stale) + " (run build.py)")
            return 1
        return 0
    (HERE / "documents").mkdir(exist_ok=True)
    for old in (HERE / "documents").iterdir():
        if ("documents/" + old.name) not in files:
            old.unlink()
    for name, body in files.items():
        (HERE / name).write_text(body, encoding="utf-8")
    langs = {}
    for rec in c.docs.values():
        langs[rec["lang"]] = langs.get(rec["lang"], 0) + 1
    print(f"{len(c.docs)} documents {langs}, {len(c.queries)} queries, {len(c.qrels)} judgments")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
