"""Hand-written material the retrieval set is composed from.

Each module adds documents to a Corpus (``add``) and, next to the documents it writes, the
queries whose answers it holds (``query``), so that a query's relevant documents are named by
the same code that writes them.
"""
