"""The registry the material modules fill: documents, queries and their judgments."""

import random


class Corpus:
    def __init__(self):
        self.docs = {}        # id -> record (dict, in output order of insertion)
        self.files = {}       # id -> output file name
        self.queries = []     # dicts: id, lang, text, kind
        self.qrels = []       # (query id, doc id, grade)
        self.evidence = {}    # query id -> phrases of its answer

    # -- documents -----------------------------------------------------------------------
    def add(self, file, lang, fam, key, title, text, **meta):
        doc_id = f"{lang}-{fam}-{key}"
        if doc_id in self.docs:
            raise ValueError(f"duplicate document id {doc_id}")
        text = text.strip()
        rec = {"id": doc_id, "title": title, "text": text, "lang": lang}
        rec.update({k: v for k, v in meta.items() if v is not None})
        self.docs[doc_id] = rec
        self.files[doc_id] = file
        return doc_id

    # -- queries ---------------------------------------------------------------------------
    def query(self, qid, lang, kind, text, rel2, rel1=(), traps=()):
        """rel2: documents that answer the query; rel1: partly relevant ones; traps:
        documents judged not relevant although they look it (grade 0 in the qrels)."""
        if any(q["id"] == qid for q in self.queries):
            raise ValueError(f"duplicate query id {qid}")
        self.queries.append({"id": qid, "lang": lang, "text": text, "kind": kind})
        seen = set()
        for grade, ids in ((2, rel2), (1, rel1), (0, traps)):
            for d in ids:
                if d in seen:
                    raise ValueError(f"{qid}: {d} judged twice")
                seen.add(d)
                self.qrels.append((qid, d, grade))


def rng_for(*parts):
    """A random source fixed by its name, so that a document's wording never depends on
    the order the material is built in."""
    return random.Random("/".join(str(p) for p in parts))


def pick(rng, *variants):
    return rng.choice(variants)


def ordinal(n):
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
