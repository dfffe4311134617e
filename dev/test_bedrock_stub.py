"""Tests for dev/bedrock_stub.py, run against a real stub process over HTTP.

Run from the repository root: python3 -m unittest dev/test_bedrock_stub.py -v
"""

import http.client
import importlib.util
import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote

STUB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bedrock_stub.py")
ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
TITAN_V1 = "amazon.titan-embed-text-v1"
TITAN_V2 = "amazon.titan-embed-text-v2:0"
COHERE_EN = "cohere.embed-english-v3"
COHERE_ML = "cohere.embed-multilingual-v3"
COHERE_V4 = "us.cohere.embed-v4:0"


def load_stub_module():
    spec = importlib.util.spec_from_file_location("bedrock_stub", STUB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def norm(vector):
    return math.sqrt(sum(x * x for x in vector))


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))


class StubTestCase(unittest.TestCase):
    """Starts a fresh stub for every test so counters and fault settings never leak."""

    stub_args = ()

    def setUp(self):
        self.proc = None
        self.start_stub(*self.stub_args)

    def tearDown(self):
        self.stop_stub()

    def start_stub(self, *args, env=None):
        self.stop_stub()
        self.proc = subprocess.Popen(
            [sys.executable, STUB, "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on 127.0.0.1:"):
            self.stop_stub()
            self.fail(f"stub did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    def stop_stub(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # SIGTERM lets the stub shut its worker processes down with it.
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.proc = None

    def request(self, method, path, body=None, headers=None):
        """Return (status, headers, decoded JSON body) without raising on HTTP errors."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
            headers={"content-type": "application/json", "accept": "application/json",
                     **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.headers, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.headers, json.loads(err.read())

    def invoke(self, model_id, body):
        return self.request("POST", f"/model/{quote(model_id, safe='')}/invoke", body)

    def embed_ok(self, model_id, body):
        status, headers, payload = self.invoke(model_id, body)
        self.assertEqual(status, 200, payload)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertGreaterEqual(int(headers["X-Amzn-Bedrock-Input-Token-Count"]), 1)
        return payload

    def titan(self, text, **options):
        return self.embed_ok(TITAN_V2, {"inputText": text, **options})["embedding"]

    def assertBedrockError(self, response, status, code):
        got_status, headers, payload = response
        self.assertEqual(got_status, status, payload)
        self.assertEqual(headers["x-amzn-ErrorType"], f"{code}:{ERROR_NAMESPACE}")
        self.assertEqual(headers["content-type"], "application/json")
        self.assertIsInstance(payload["message"], str)
        return payload["message"]

    def stats(self):
        return self.request("GET", "/_stub/stats")[2]


class ModelShapeTests(StubTestCase):
    def test_health(self):
        status, _, payload = self.request("GET", "/_stub/health")
        self.assertEqual((status, payload), (200, {"ok": True}))

    def test_titan_v1(self):
        status, headers, payload = self.invoke(TITAN_V1, {"inputText": "Hello world"})
        self.assertEqual(status, 200)
        self.assertEqual(set(payload), {"embedding", "inputTextTokenCount"})
        self.assertEqual(len(payload["embedding"]), 1536)
        self.assertEqual(payload["inputTextTokenCount"], 2)
        self.assertEqual(headers["X-Amzn-Bedrock-Input-Token-Count"], "2")
        self.assertAlmostEqual(norm(payload["embedding"]), 1.0, places=4)

    def test_titan_v2_defaults(self):
        payload = self.embed_ok(TITAN_V2, {"inputText": "Elasticsearch stores the chunks"})
        self.assertEqual(set(payload), {"embedding", "inputTextTokenCount", "embeddingsByType"})
        self.assertEqual(len(payload["embedding"]), 1024)
        self.assertEqual(payload["embeddingsByType"], {"float": payload["embedding"]})
        self.assertAlmostEqual(norm(payload["embedding"]), 1.0, places=4)

    def test_titan_v2_dimensions_and_binary(self):
        for dims in (256, 512, 1024):
            with self.subTest(dims=dims):
                payload = self.embed_ok(TITAN_V2, {
                    "inputText": "binary vectors", "dimensions": dims,
                    "embeddingTypes": ["float", "binary"],
                })
                floats = payload["embeddingsByType"]["float"]
                binary = payload["embeddingsByType"]["binary"]
                self.assertEqual(payload["embedding"], floats)
                self.assertEqual(len(floats), dims)
                self.assertEqual(len(binary), dims)
                self.assertEqual(binary, [1 if x > 0 else 0 for x in floats])

    def test_titan_v2_without_normalize(self):
        text = "raw magnitude"
        unit = self.titan(text)
        raw = self.titan(text, normalize=False)
        self.assertTrue(1.0 <= norm(raw) < 2.0 + 1e-4, norm(raw))
        self.assertNotAlmostEqual(norm(raw), 1.0, places=3)
        self.assertAlmostEqual(cosine(unit, raw), 1.0, places=4)
        self.assertEqual(raw, self.titan(text, normalize=False))

    def test_cohere_v3_floats(self):
        for model in (COHERE_EN, COHERE_ML):
            with self.subTest(model=model):
                texts = ["first chunk", "second chunk", "三番目のチャンク"]
                payload = self.embed_ok(model, {"texts": texts, "input_type": "search_document"})
                self.assertEqual(payload["response_type"], "embeddings_floats")
                self.assertEqual(payload["texts"], texts)
                self.assertIsInstance(payload["id"], str)
                self.assertEqual(len(payload["embeddings"]), 3)
                for vector in payload["embeddings"]:
                    self.assertEqual(len(vector), 1024)
                    self.assertAlmostEqual(norm(vector), 1.0, places=4)

    def test_cohere_v3_by_type(self):
        payload = self.embed_ok(COHERE_EN, {
            "texts": ["quantised vectors", "another one"], "input_type": "search_query",
            "embedding_types": ["float", "int8", "uint8", "binary", "ubinary"],
        })
        self.assertEqual(payload["response_type"], "embeddings_by_type")
        by_type = payload["embeddings"]
        self.assertEqual(set(by_type), {"float", "int8", "uint8", "binary", "ubinary"})
        for name, dims, low, high in (("float", 1024, -1, 1), ("int8", 1024, -128, 127),
                                      ("uint8", 1024, 0, 255), ("binary", 128, -128, 127),
                                      ("ubinary", 128, 0, 255)):
            with self.subTest(type=name):
                self.assertEqual(len(by_type[name]), 2)
                for vector in by_type[name]:
                    self.assertEqual(len(vector), dims)
                    self.assertTrue(all(low <= x <= high for x in vector))
                    if name != "float":
                        self.assertTrue(all(isinstance(x, int) for x in vector))
        self.assertTrue(any(by_type["int8"][0]))

    def test_cohere_v4_profiles(self):
        for prefix in ("us", "eu", "apac", "global"):
            with self.subTest(prefix=prefix):
                payload = self.embed_ok(f"{prefix}.cohere.embed-v4:0", {
                    "texts": ["cross-region inference"], "input_type": "search_document",
                })
                self.assertEqual(payload["response_type"], "embeddings_floats")
                self.assertEqual(len(payload["embeddings"][0]), 1536)
        payload = self.embed_ok(COHERE_V4, {
            "texts": ["small"], "input_type": "search_query", "output_dimension": 256,
            "embedding_types": ["float", "int8"], "max_tokens": 512, "truncate": "RIGHT",
        })
        self.assertEqual(len(payload["embeddings"]["float"][0]), 256)
        self.assertEqual(len(payload["embeddings"]["int8"][0]), 256)

    def test_cohere_v4_truncates_by_tokens(self):
        body = {"texts": ["one two three four"], "input_type": "search_query", "max_tokens": 2}
        self.assertEqual(self.embed_ok(COHERE_V4, {**body, "truncate": "LEFT"})["texts"],
                         ["three four"])
        self.assertEqual(self.embed_ok(COHERE_V4, {**body, "truncate": "RIGHT"})["texts"],
                         ["one two"])
        self.assertBedrockError(self.invoke(COHERE_V4, body), 400, "ValidationException")

    def test_cohere_v3_truncation(self):
        long_text = "a" * 2000 + " tail" * 20
        body = {"texts": [long_text], "input_type": "search_document"}
        self.assertEqual(self.embed_ok(COHERE_EN, {**body, "truncate": "END"})["texts"],
                         [long_text[:2048]])
        self.assertEqual(self.embed_ok(COHERE_EN, {**body, "truncate": "START"})["texts"],
                         [long_text[-2048:]])
        message = self.assertBedrockError(self.invoke(COHERE_EN, body), 400, "ValidationException")
        self.assertIn("#/texts/0", message)

    def test_profile_alias_of_titan(self):
        self.assertEqual(self.embed_ok("us." + TITAN_V2, {"inputText": "alias"})["embedding"],
                         self.titan("alias"))

    def test_arn_model_id(self):
        arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/" + COHERE_V4
        payload = self.embed_ok(arn, {"texts": ["arn"], "input_type": "search_query"})
        self.assertEqual(len(payload["embeddings"][0]), 1536)


class EmbeddingQualityTests(StubTestCase):
    def test_deterministic(self):
        text = "The ingest Lambda splits documents into chunks."
        first = self.titan(text)
        self.assertEqual(first, self.titan(text))
        self.assertAlmostEqual(norm(first), 1.0, places=4)
        cohere = self.embed_ok(COHERE_EN, {"texts": [text], "input_type": "search_document"})
        self.assertEqual(cohere["embeddings"][0], first)

    def test_survives_restart(self):
        before = self.titan("same text, new process")
        self.start_stub()
        self.assertEqual(before, self.titan("same text, new process"))

    def test_japanese_and_english_differ(self):
        english = self.titan("The weather in Tokyo is sunny today.")
        japanese = self.titan("今日の東京の天気は晴れです。")
        self.assertNotEqual(english, japanese)
        self.assertLess(cosine(english, japanese), 0.5)
        self.assertAlmostEqual(norm(japanese), 1.0, places=4)

    def test_similar_sentences_score_higher(self):
        query = self.titan("how to configure the elasticsearch index mapping")
        similar = self.titan("configure the index mapping in elasticsearch")
        unrelated = self.titan("bake bread with flour water and yeast")
        self.assertGreater(cosine(query, similar), cosine(query, unrelated) + 0.3)

    def test_a_paraphrase_is_near_its_original(self):
        original = self.titan("How to reset your password from the sign-in page.")
        paraphrase = self.titan("recover a lost passcode")
        unrelated = self.titan("Invoices can be downloaded from the billing page as PDF.")
        self.assertGreater(cosine(original, paraphrase), cosine(unrelated, paraphrase) + 0.2)
        self.assertGreater(cosine(original, paraphrase), 0.25)

    def test_similar_japanese_sentences_score_higher(self):
        query = self.titan("東京の天気予報")
        similar = self.titan("明日の東京の天気予報を確認する")
        unrelated = self.titan("パンの焼き方とレシピ")
        self.assertGreater(cosine(query, similar), cosine(query, unrelated) + 0.3)

    def test_punctuation_only_is_not_zero(self):
        for text in ("!!!", "...", "—"):
            with self.subTest(text=text):
                vector = self.titan(text)
                self.assertAlmostEqual(norm(vector), 1.0, places=4)
        self.assertNotEqual(self.titan("!!!"), self.titan("???"))

    def test_large_cohere_call_is_cheap(self):
        stub = load_stub_module()
        words = [f"w{i}x{i * 7919 % 1000}" for i in range(5000)]
        texts = [" ".join(words[j:j + 400])[:2000] for j in range(0, 96 * 40, 40)]
        body = json.dumps({"texts": texts, "input_type": "search_document"}).encode()
        started = time.process_time()
        payload, _, count = stub.cohere_v3(stub.parse_body(body))
        stub.to_json(payload)
        elapsed = time.process_time() - started
        self.assertEqual(count, 96)
        # Budget is ~100 ms; the slack absorbs slow shared CI machines.
        self.assertLess(elapsed, 0.5)
        self.assertEqual(json.loads(stub.to_json(payload)), json.loads(json.dumps(payload)))


class ValidationTests(StubTestCase):
    CASES = [
        ("extraneous key", TITAN_V2, {"inputText": "x", "foo": 1}, "extraneous key [foo]"),
        ("extraneous key v1", TITAN_V1, {"inputText": "x", "dimensions": 256}, "[dimensions]"),
        ("bad dimensions", TITAN_V2, {"inputText": "x", "dimensions": 300}, "256, 512, 1024"),
        ("dimensions as bool", TITAN_V2, {"inputText": "x", "dimensions": True}, "#/dimensions"),
        ("normalize not bool", TITAN_V2, {"inputText": "x", "normalize": "yes"}, "#/normalize"),
        ("bad embeddingTypes", TITAN_V2, {"inputText": "x", "embeddingTypes": ["int8"]},
         "float, binary"),
        ("empty inputText", TITAN_V2, {"inputText": ""}, "#/inputText"),
        ("missing inputText", TITAN_V1, {}, "required key [inputText]"),
        ("too long inputText", TITAN_V2, {"inputText": "a" * 50_001}, "50000"),
        ("missing input_type", COHERE_EN, {"texts": ["x"]}, "required key [input_type]"),
        ("bad input_type", COHERE_EN, {"texts": ["x"], "input_type": "query"}, "search_query"),
        ("97 texts", COHERE_EN, {"texts": ["x"] * 97, "input_type": "search_query"}, "96"),
        ("0 texts", COHERE_ML, {"texts": [], "input_type": "search_query"}, "#/texts"),
        ("texts not strings", COHERE_EN, {"texts": [1], "input_type": "search_query"},
         "#/texts/0"),
        ("v3 truncate LEFT", COHERE_EN,
         {"texts": ["x"], "input_type": "search_query", "truncate": "LEFT"}, "START"),
        ("bad embedding_types", COHERE_EN,
         {"texts": ["x"], "input_type": "search_query", "embedding_types": ["int4"]}, "ubinary"),
        ("bad output_dimension", COHERE_V4,
         {"texts": ["x"], "input_type": "search_query", "output_dimension": 1024.0}, "1536"),
        ("v4 truncate START", COHERE_V4,
         {"texts": ["x"], "input_type": "search_query", "truncate": "START"}, "LEFT"),
        ("bad max_tokens", COHERE_V4,
         {"texts": ["x"], "input_type": "search_query", "max_tokens": 0}, "#/max_tokens"),
        ("bare cohere v4", "cohere.embed-v4:0", {"texts": ["x"], "input_type": "search_query"},
         "on-demand throughput isn't supported"),
        ("unknown model", "amazon.titan-embed-image-v1", {"inputText": "x"},
         "The provided model identifier is invalid."),
        ("profile of unknown model", "us.meta.llama3-8b-instruct-v1:0", {"inputText": "x"},
         "The provided model identifier is invalid."),
        ("body not JSON", TITAN_V2, b"inputText=x", "not valid JSON"),
        ("body not object", TITAN_V2, ["x"], "JSONObject"),
    ]

    def test_closed_schemas(self):
        for name, model, body, fragment in self.CASES:
            with self.subTest(name):
                message = self.assertBedrockError(self.invoke(model, body), 400,
                                                  "ValidationException")
                self.assertIn(fragment, message)
        stats = self.stats()
        self.assertEqual(stats["invalid"], len(self.CASES))
        self.assertEqual(stats["ok"], 0)

    def test_unknown_route(self):
        self.assertBedrockError(self.request("GET", "/model/x/invoke"), 404,
                                "ResourceNotFoundException")
        self.assertEqual(self.stats()["calls"], 0)


class ThrottleFlagTests(StubTestCase):
    stub_args = ("--throttle-every", "3")

    def test_every_third_call_is_throttled(self):
        statuses = []
        for i in range(9):
            response = self.invoke(TITAN_V2 if i % 2 else COHERE_EN,
                                   {"inputText": "x"} if i % 2 else
                                   {"texts": ["x"], "input_type": "search_query"})
            statuses.append(response[0])
            if response[0] == 429:
                message = self.assertBedrockError(response, 429, "ThrottlingException")
                self.assertEqual(message, "Too many requests, please wait before trying again.")
        self.assertEqual(statuses, [200, 200, 429] * 3)
        stats = self.stats()
        self.assertEqual((stats["calls"], stats["ok"], stats["throttled"]), (9, 6, 3))


class QuotaTests(StubTestCase):
    # 60 a minute: a burst of 10 (ten seconds' worth), then one a second.
    stub_args = ("--quota-rpm", "60")

    def test_requests_over_the_quota_are_throttled(self):
        statuses = [self.invoke(TITAN_V2, {"inputText": "x"})[0] for _ in range(12)]
        self.assertEqual(statuses, [200] * 10 + [429] * 2)
        self.assertBedrockError(self.invoke(TITAN_V2, {"inputText": "x"}), 429,
                                "ThrottlingException")
        time.sleep(1.1)
        self.assertEqual(self.invoke(TITAN_V2, {"inputText": "x"})[0], 200, "refilled")
        self.assertEqual(self.stats()["throttled"], 3)

    def test_tokens_over_the_quota_are_throttled(self):
        self.request("POST", "/_stub/config", {"quota_rpm": 0, "quota_tpm": 600})
        # The bucket holds at least one large call; it drains by the tokens each call carries.
        texts = ["word " * 100] * 96
        body = {"texts": texts, "input_type": "search_document"}
        first = self.invoke(COHERE_EN, body)
        self.assertEqual(first[0], 200)
        tokens = int(first[1]["X-Amzn-Bedrock-Input-Token-Count"])
        self.assertGreater(tokens, 600)
        outcomes = [self.invoke(COHERE_EN, body)[0] for _ in range(200_000 // tokens)]
        self.assertIn(429, outcomes)
        message = self.assertBedrockError(self.invoke(COHERE_EN, body), 429,
                                          "ThrottlingException")
        self.assertEqual(message, "Too many tokens, please wait before trying again.")


class QuotaBurstTests(StubTestCase):
    # 60 a minute with a minute's burst: 60 at once, then one a second.
    stub_args = ("--quota-rpm", "60", "--quota-burst-secs", "60")

    def test_the_burst_is_a_minute_of_the_quota(self):
        statuses = [self.invoke(TITAN_V2, {"inputText": "x"})[0] for _ in range(61)]
        self.assertEqual(statuses, [200] * 60 + [429])
        self.assertEqual(self.request("GET", "/_stub/config")[2]["quota_burst_secs"], 60)


class ModelErrorTests(StubTestCase):
    def test_the_rest_of_bedrocks_errors(self):
        for code, status in (("ModelNotReadyException", 429), ("ModelErrorException", 424),
                             ("ServiceQuotaExceededException", 400)):
            with self.subTest(code=code):
                self.request("POST", "/_stub/config", {"fail_every": 1, "fail_error": code})
                self.assertBedrockError(self.invoke(TITAN_V2, {"inputText": "x"}), status, code)


class DenyFlagTests(StubTestCase):
    stub_args = ("--deny-models", f"{COHERE_ML},{TITAN_V1}")

    def test_denied_models(self):
        body = {"texts": ["x"], "input_type": "search_query"}
        message = self.assertBedrockError(self.invoke(COHERE_ML, body), 403,
                                          "AccessDeniedException")
        self.assertEqual(message, "You don't have access to the model with the specified model ID.")
        self.assertBedrockError(self.invoke("us." + TITAN_V1, {"inputText": "x"}), 403,
                                "AccessDeniedException")
        self.assertEqual(self.invoke(COHERE_EN, body)[0], 200)
        self.assertEqual(self.stats()["denied"], 2)


class ControlApiTests(StubTestCase):
    def test_stats_count_calls_by_model(self):
        self.embed_ok(TITAN_V2, {"inputText": "one"})
        self.embed_ok(COHERE_EN, {"texts": ["a", "b", "c"], "input_type": "search_document"})
        self.invoke(TITAN_V2, {"inputText": ""})
        self.assertEqual(self.stats(), {
            "calls": 3, "ok": 2, "throttled": 0, "failed": 0, "invalid": 1, "denied": 0,
            "texts": 4, "by_model": {TITAN_V2: 2, COHERE_EN: 1},
            "batch": {"jobs_created": 0, "jobs_completed": 0, "jobs_partially_completed": 0,
                      "jobs_failed": 0, "jobs_stopped": 0, "records_embedded": 0,
                      "records_failed": 0, "jobs_in_flight": 0},
        })
        status, _, zeroed = self.request("POST", "/_stub/reset")
        self.assertEqual(status, 200)
        self.assertEqual(zeroed["calls"], 0)
        self.assertEqual(self.stats()["by_model"], {})

    def test_config_changes_apply_at_run_time(self):
        status, _, config = self.request("POST", "/_stub/config",
                                         {"fail_every": 2, "deny_models": [COHERE_EN]})
        self.assertEqual(status, 200)
        self.assertEqual(config["fail_every"], 2)
        self.assertEqual(config["deny_models"], [COHERE_EN])
        self.assertEqual(config["throttle_every"], 0)
        self.assertEqual(self.invoke(TITAN_V2, {"inputText": "x"})[0], 200)
        message = self.assertBedrockError(self.invoke(TITAN_V2, {"inputText": "x"}), 500,
                                          "InternalServerException")
        self.assertTrue(message)
        self.assertBedrockError(
            self.invoke(COHERE_EN, {"texts": ["x"], "input_type": "search_query"}), 403,
            "AccessDeniedException")

        self.request("POST", "/_stub/config", {"fail_error": "ServiceUnavailableException"})
        self.assertBedrockError(self.invoke(TITAN_V2, {"inputText": "x"}), 503,
                                "ServiceUnavailableException")
        self.assertEqual(self.stats()["failed"], 2)

        self.request("POST", "/_stub/config", {"fail_every": 0, "deny_models": []})
        self.assertEqual(self.invoke(COHERE_EN, {"texts": ["x"], "input_type": "search_query"})[0],
                         200)

    def test_bad_config_is_rejected_whole(self):
        for body in ({"throttle_every": -1}, {"latency_ms": "fast"}, {"deny_models": "a"},
                     {"nope": 1}, {"fail_every": 2, "fail_error": "Oops"}):
            with self.subTest(body=body):
                self.assertEqual(self.request("POST", "/_stub/config", body)[0], 400)
        self.assertEqual(self.request("GET", "/_stub/config")[2]["fail_every"], 0)

    def test_latency(self):
        self.request("POST", "/_stub/config", {"latency_ms": 150})
        started = time.monotonic()
        self.embed_ok(TITAN_V2, {"inputText": "slow"})
        self.assertGreaterEqual(time.monotonic() - started, 0.15)

    def test_errors_take_the_latency_too(self):
        # A throttled call is no faster than a served one: clients back off from its answer.
        self.request("POST", "/_stub/config", {"latency_ms": 150, "throttle_every": 1})
        started = time.monotonic()
        self.assertBedrockError(self.invoke(TITAN_V2, {"inputText": "slow"}), 429,
                                "ThrottlingException")
        self.assertGreaterEqual(time.monotonic() - started, 0.15)


def _is_stub_worker(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"multiprocessing" in f.read()
    except OSError:
        return False


class WorkerProcessTests(StubTestCase):
    stub_args = ("--workers", "2")

    def children(self):
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with open(path) as f:
            return [int(pid) for pid in f.read().split()]

    def test_workers_exit_when_the_stub_is_killed(self):
        workers = self.children()
        self.assertGreaterEqual(len(workers), 2)
        # A 96-text call runs in a worker; the answer is the same as computed inline.
        body = {"texts": [f"text {i}" for i in range(96)], "input_type": "search_document"}
        self.assertEqual(len(self.embed_ok(COHERE_EN, body)["embeddings"]), 96)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 10
        alive = workers
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if _is_stub_worker(pid)]
        self.assertEqual(alive, [], "worker processes outlived the stub")


class RealModelTests(StubTestCase):
    """`--embedder e5`: vectors from multilingual-e5-small, behind the same bodies. The model
    costs tens of milliseconds a text, so these calls are few and short."""

    stub_args = ("--embedder", "e5")
    PASSAGES = [
        "パスワードを忘れた場合は、ログイン画面の「パスワードをお忘れですか？」を押してください。",
        "If you forgot your password, open the sign-in page and choose Forgot password.",
        "請求書は管理画面の「請求」タブからPDFでダウンロードできます。",
        "Invoices can be downloaded as PDF files from the Billing tab of the admin console.",
        "明日の東京は晴れのち曇りで、最高気温は二十度の予報です。",
    ]
    # (query, its paraphrase, an unrelated passage in the paraphrase's language), by index.
    QUERIES = [
        ("パスワードを忘れました", 0, 2),
        ("how can I get my invoices", 3, 1),
        # Across languages, both ways.
        ("請求書をPDFでダウンロードしたい", 3, 1),
        ("I lost my passcode and cannot log in", 0, 2),
        ("what is the weather forecast for Tokyo", 4, 0),
    ]

    def cohere(self, texts, input_type, model=COHERE_ML, **options):
        return self.embed_ok(model, {"texts": texts, "input_type": input_type,
                                     **options})["embeddings"]

    def test_a_query_ranks_its_paraphrase_above_an_unrelated_passage(self):
        # Cohere marks queries and documents, so they get e5's "query: " and "passage: "; Titan
        # cannot, so both sides get "query: ", at the dimensions the demo asks for.
        cohere_docs = self.cohere(self.PASSAGES, "search_document")
        cohere_queries = self.cohere([q for q, _, _ in self.QUERIES], "search_query")
        titan_docs = [self.titan(p, dimensions=256) for p in self.PASSAGES]
        for i, (query, near, far) in enumerate(self.QUERIES):
            with self.subTest(query=query):
                q = cohere_queries[i]
                self.assertGreater(cosine(q, cohere_docs[near]), cosine(q, cohere_docs[far]))
                q = self.titan(query, dimensions=256)
                self.assertGreater(cosine(q, titan_docs[near]), cosine(q, titan_docs[far]))

    def test_dimensions_keep_the_model_ranking(self):
        texts = [self.QUERIES[1][0], *self.PASSAGES[:4]]
        by_dims = {dims: self.cohere(texts, "search_document", COHERE_V4, output_dimension=dims)
                   for dims in (256, 512, 1024, 1536)}
        by_dims[1024] = self.cohere(texts, "search_document", COHERE_EN)
        model = by_dims[512]
        for dims, vectors in by_dims.items():
            with self.subTest(dims=dims):
                self.assertTrue(all(len(v) == dims for v in vectors))
                self.assertTrue(all(abs(norm(v) - 1.0) < 1e-4 for v in vectors))
                scores = [cosine(vectors[0], v) for v in vectors[1:]]
                expected = [cosine(model[0], v) for v in model[1:]]
                if dims > 384:
                    # The model's 384 values, then zeros: its cosines and so its ranking exactly.
                    self.assertTrue(all(x == 0 for v in vectors for x in v[384:]))
                    for got, want in zip(scores, expected):
                        self.assertAlmostEqual(got, want, places=5)
                else:
                    # A fixed projection keeps cosines near the model's, not exactly: texts
                    # within a few hundredths of each other may swap, the nearest stays first.
                    for got, want in zip(scores, expected):
                        self.assertAlmostEqual(got, want, delta=0.05)
                    self.assertEqual(scores.index(max(scores)), expected.index(max(expected)))
        titan_v1 = self.embed_ok(TITAN_V1, {"inputText": texts[1]})["embedding"]
        self.assertEqual(len(titan_v1), 1536)
        self.assertEqual(titan_v1[:512], self.titan(texts[1], dimensions=512))

    def test_normalisation_and_embedding_types(self):
        unit = self.titan("raw magnitude")
        raw = self.titan("raw magnitude", normalize=False)
        self.assertTrue(1.0 <= norm(raw) < 2.0 + 1e-4, norm(raw))
        self.assertAlmostEqual(cosine(unit, raw), 1.0, places=4)
        payload = self.embed_ok(TITAN_V2, {"inputText": "binary", "embeddingTypes": ["binary"]})
        self.assertEqual(payload["embeddingsByType"]["binary"],
                         [1 if x > 0 else 0 for x in payload["embedding"]])
        types = ["float", "int8", "uint8", "binary", "ubinary"]
        by_type = self.cohere(["quantised vectors"], "search_query", embedding_types=types)
        for name, dims, low, high in (("int8", 1024, -128, 127), ("uint8", 1024, 0, 255),
                                      ("binary", 128, -128, 127), ("ubinary", 128, 0, 255)):
            with self.subTest(type=name):
                vector = by_type[name][0]
                self.assertEqual(len(vector), dims)
                self.assertTrue(all(isinstance(x, int) and low <= x <= high for x in vector))
        floats = by_type["float"][0]
        self.assertEqual(max(map(abs, by_type["int8"][0])), 127)
        self.assertEqual(sum(x > 0 for x in floats),
                         sum(bin(b).count("1") for b in by_type["ubinary"][0]))

    def test_switched_at_run_time(self):
        status, _, config = self.request("POST", "/_stub/config", {"embedder": "hashed"})
        self.assertEqual((status, config["embedder"]), (200, "hashed"))
        hashed = self.titan("パスワードを忘れました", dimensions=256)
        self.assertEqual(self.request("POST", "/_stub/config", {"embedder": "bert"})[0], 400)
        self.request("POST", "/_stub/config", {"embedder": "e5"})
        real = self.titan("パスワードを忘れました", dimensions=256)
        self.assertNotEqual(hashed, real)
        self.assertEqual(real, self.titan("パスワードを忘れました", dimensions=256))


class RealModelValidationTests(ValidationTests):
    """The same bodies are refused with the same messages when the model makes the vectors."""

    stub_args = ("--embedder", "e5")


class HttpTests(StubTestCase):
    def test_keep_alive(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            path = "/model/" + quote(TITAN_V2, safe="") + "/invoke"
            conn.request("POST", path, json.dumps({"inputText": "first"}),
                         {"content-type": "application/json"})
            first = conn.getresponse()
            self.assertEqual(first.status, 200)
            first.read()
            sock = conn.sock
            self.assertIsNotNone(sock)
            # An error response must not close the connection either.
            conn.request("POST", path, json.dumps({"inputText": ""}),
                         {"content-type": "application/json"})
            second = conn.getresponse()
            self.assertEqual(second.status, 400)
            second.read()
            conn.request("GET", "/_stub/health")
            third = conn.getresponse()
            self.assertEqual(json.loads(third.read()), {"ok": True})
            self.assertIs(conn.sock, sock)
        finally:
            conn.close()

    def test_chunked_body(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            body = json.dumps({"inputText": "chunked upload"}).encode()
            conn.request("POST", "/model/" + quote(TITAN_V2, safe="") + "/invoke",
                         iter([body[:7], body[7:]]),
                         {"content-type": "application/json"}, encode_chunked=True)
            response = conn.getresponse()
            payload = json.loads(response.read())
            self.assertEqual(response.status, 200)
            self.assertEqual(payload["embedding"], self.titan("chunked upload"))
        finally:
            conn.close()

    def test_refuses_non_loopback_host(self):
        result = subprocess.run([sys.executable, STUB, "--host", "0.0.0.0", "--port", "0"],
                                capture_output=True, timeout=10)
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(result.stdout, b"")


# --- batch inference jobs ------------------------------------------------------------------

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    from moto.server import ThreadedMotoServer
except ImportError:  # outside the project's virtualenv (make venv)
    boto3 = None

TEST_KEYS = {"region_name": "us-east-1", "aws_access_key_id": "testing",
             "aws_secret_access_key": "testing"}
ROLE = "arn:aws:iam::111122223333:role/bedrock-batch"
JOB_STATES = ["Submitted", "Validating", "Scheduled", "InProgress"]


def batch_env():
    """The stand-in's environment for the batch tests: us-east-1, no S3 endpoint but the flag,
    and no credentials at all (so the stand-in falls back to dummy keys, which moto takes)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                        "AWS_DEFAULT_REGION")}
    env.update(AWS_REGION="us-east-1", AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_CONFIG_FILE=os.devnull)
    return env


@unittest.skipIf(boto3 is None, "needs boto3 and moto from the project's virtualenv")
class BatchTestCase(StubTestCase):
    """moto's S3 server for the class; per test a fresh stand-in pointed at it, its own bucket,
    and boto3 clients (so requests and answers go through botocore's `bedrock` model)."""

    stub_args = ("--workers", "0", "--batch-seconds", "0.2")

    @classmethod
    def setUpClass(cls):
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        cls.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        cls.moto.start()
        host, port = cls.moto.get_host_and_port()
        cls.s3_url = f"http://{host}:{port}"
        cls.s3 = boto3.client("s3", endpoint_url=cls.s3_url, **TEST_KEYS)

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    def setUp(self):
        self.proc = None
        self.start_stub("--s3-endpoint", self.s3_url, *self.stub_args, env=batch_env())
        self.bedrock = boto3.client("bedrock", endpoint_url=f"http://127.0.0.1:{self.port}",
                                    config=Config(retries={"max_attempts": 1}), **TEST_KEYS)
        self.bucket = f"batch-{uuid.uuid4().hex[:16]}"
        self.s3.create_bucket(Bucket=self.bucket)

    def upload(self, key, records):
        lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
        self.s3.put_object(Bucket=self.bucket, Key=key, Body="\n".join(lines).encode())

    def titan_records(self, n, prefix="doc"):
        dims = (256, 512, 1024)
        return [{"recordId": f"{prefix}{i:03d}",
                 "modelInput": {"inputText": f"chunk {i} of the manual, section {i % 7}",
                                "dimensions": dims[i % 3]}} for i in range(n)]

    def create(self, name, input_key="input/", model=TITAN_V2, **extra):
        return self.bedrock.create_model_invocation_job(
            jobName=name, roleArn=ROLE, modelId=model,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{self.bucket}/{input_key}",
                                                   "s3InputFormat": "JSONL"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{self.bucket}/output"}},
            **extra)["jobArn"]

    def wait(self, arn, until=("Completed", "PartiallyCompleted", "Failed", "Stopped"),
             timeout=20):
        """Polls the job until its status is in `until`; returns (statuses seen, the job)."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            job = self.bedrock.get_model_invocation_job(jobIdentifier=arn)
            if not seen or seen[-1] != job["status"]:
                seen.append(job["status"])
            if job["status"] in until:
                return seen, job
            self.assertLess(time.monotonic(), deadline, f"still {job['status']}: {seen}")
            time.sleep(0.02)

    def outputs(self, arn):
        """{key under output/<jobId>/: its text} for everything the job wrote."""
        prefix = f"output/{arn.rsplit('/', 1)[1]}/"
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return {o["Key"][len(prefix):]: self.s3.get_object(Bucket=self.bucket, Key=o["Key"])
                ["Body"].read().decode() for o in listing.get("Contents", ())}

    def client_error(self, call, **kwargs):
        with self.assertRaises(ClientError) as caught:
            call(**kwargs)
        return caught.exception.response["Error"]["Code"], caught.exception.response

    def batch_stats(self):
        return self.stats()["batch"]

    def assertStatesInOrder(self, seen, last):
        """`seen` is the documented progression, polled: some states may pass unseen."""
        self.assertEqual(seen[-1], last)
        order = JOB_STATES + [last]
        self.assertEqual(seen, sorted(seen, key=order.index), seen)


class BatchJobTests(BatchTestCase):
    def test_a_job_embeds_every_record_and_writes_them_out_of_order(self):
        records = self.titan_records(20)
        self.upload("input/part-1.jsonl", records)
        self.upload("input/notes.txt", ["not a .jsonl file: ignored"])
        arn = self.create("embed-manual")
        job_id = arn.rsplit("/", 1)[1]
        self.assertRegex(arn, r"^arn:aws:bedrock:us-east-1:111122223333:"
                              r"model-invocation-job/[a-z0-9]{12}$")
        seen, job = self.wait(arn)
        self.assertStatesInOrder(seen, "Completed")
        self.assertEqual(seen[0], "Submitted")
        self.assertEqual((job["jobArn"], job["jobName"], job["modelId"], job["roleArn"]),
                         (arn, "embed-manual", TITAN_V2, ROLE))
        self.assertNotIn("message", job)
        self.assertGreaterEqual(job["endTime"], job["submitTime"])
        self.assertEqual(job["timeoutDurationInHours"], 168)
        self.assertEqual((job["jobExpirationTime"] - job["submitTime"]).total_seconds(), 168 * 3600)
        self.assertEqual(job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"],
                         f"s3://{self.bucket}/input/")
        self.assertEqual((job["totalRecordCount"], job["processedRecordCount"],
                          job["successRecordCount"], job["errorRecordCount"]), (20, 20, 20, 0))

        files = self.outputs(arn)
        self.assertEqual(set(files), {"part-1.jsonl.out", "manifest.json.out"})
        lines = [json.loads(line) for line in files["part-1.jsonl.out"].splitlines()]
        ids = [line["recordId"] for line in lines]
        self.assertEqual(sorted(ids), [r["recordId"] for r in records])
        self.assertNotEqual(ids, [r["recordId"] for r in records], "the output is shuffled")
        by_id = {r["recordId"]: r["modelInput"] for r in records}
        tokens = 0
        for line in lines:
            self.assertEqual(set(line), {"recordId", "modelInput", "modelOutput"})
            self.assertEqual(line["modelInput"], by_id[line["recordId"]])
            output = line["modelOutput"]
            self.assertEqual(len(output["embedding"]), line["modelInput"]["dimensions"])
            self.assertAlmostEqual(norm(output["embedding"]), 1.0, places=4)
            tokens += output["inputTextTokenCount"]
        # The same vectors InvokeModel gives for the same body.
        first = lines[0]
        self.assertEqual(first["modelOutput"], self.embed_ok(TITAN_V2, first["modelInput"]))
        self.assertEqual(json.loads(files["manifest.json.out"]), {
            "totalRecordCount": 20, "processedRecordCount": 20, "successRecordCount": 20,
            "errorRecordCount": 0, "inputTokenCount": tokens, "outputTokenCount": 0})
        stats = self.stats()
        self.assertEqual(stats["batch"], {
            "jobs_created": 1, "jobs_completed": 1, "jobs_partially_completed": 0,
            "jobs_failed": 0, "jobs_stopped": 0, "records_embedded": 20, "records_failed": 0,
            "jobs_in_flight": 0})
        self.assertEqual(stats["calls"], 1, "batch records are not InvokeModel calls")
        self.assertEqual(job_id, self.bedrock.get_model_invocation_job(
            jobIdentifier=job_id)["jobArn"].rsplit("/", 1)[1])

    def test_a_single_file_and_records_without_an_id(self):
        self.upload("in/a.jsonl", [{"modelInput": {"inputText": "no id here"}},
                                   {"recordId": "x1", "modelInput": {"inputText": "an id"}}])
        self.upload("in/b.jsonl", [{"recordId": "other", "modelInput": {"inputText": "b"}}])
        arn = self.create("single-file", input_key="in/a.jsonl")
        self.assertEqual(self.wait(arn)[1]["status"], "Completed")
        files = self.outputs(arn)
        self.assertEqual(set(files), {"a.jsonl.out", "manifest.json.out"})
        ids = {json.loads(line)["recordId"] for line in files["a.jsonl.out"].splitlines()}
        self.assertIn("x1", ids)
        [made] = ids - {"x1"}
        self.assertRegex(made, r"^[A-Z0-9]{11}$")

    def test_bad_model_inputs_become_error_objects(self):
        good = self.titan_records(4)
        bad = [{"recordId": "empty", "modelInput": {"inputText": ""}},
               {"recordId": "extra", "modelInput": {"inputText": "x", "foo": 1}},
               {"recordId": "cohere", "modelInput": {"texts": ["x"], "input_type": "search_query"}}]
        self.upload("input/mixed.jsonl", good[:2] + bad + good[2:])
        seen, job = self.wait(self.create("mixed"))
        self.assertStatesInOrder(seen, "PartiallyCompleted")
        self.assertEqual((job["successRecordCount"], job["errorRecordCount"]), (4, 3))
        files = self.outputs(job["jobArn"])
        lines = {line["recordId"]: line for line in map(json.loads,
                                                         files["mixed.jsonl.out"].splitlines())}
        self.assertEqual(len(lines), 7)
        for record in bad:
            line = lines[record["recordId"]]
            self.assertEqual(set(line), {"recordId", "modelInput", "error"})
            self.assertEqual(line["modelInput"], record["modelInput"])
            self.assertEqual(line["error"]["errorCode"], 400)
            self.assertIn("Malformed input request", line["error"]["errorMessage"])
        self.assertIn("extraneous key [foo]", lines["extra"]["error"]["errorMessage"])
        manifest = json.loads(files["manifest.json.out"])
        self.assertEqual((manifest["successRecordCount"], manifest["errorRecordCount"]), (4, 3))
        stats = self.batch_stats()
        self.assertEqual((stats["jobs_partially_completed"], stats["records_embedded"],
                          stats["records_failed"]), (1, 4, 3))

    def test_injected_record_errors(self):
        status, _, config = self.request("POST", "/_stub/config", {"batch_record_error_every": 3})
        self.assertEqual((status, config["batch_record_error_every"]), (200, 3))
        records = self.titan_records(9)
        self.upload("input/r.jsonl", records)
        _, job = self.wait(self.create("faulty-records"))
        self.assertEqual(job["status"], "PartiallyCompleted")
        lines = [json.loads(line) for line in self.outputs(job["jobArn"])["r.jsonl.out"]
                 .splitlines()]
        failed = sorted(line["recordId"] for line in lines if "error" in line)
        self.assertEqual(failed, ["doc002", "doc005", "doc008"])
        for line in lines:
            if "error" in line:
                self.assertEqual(line["error"]["errorCode"], 500)
                self.assertTrue(line["error"]["errorMessage"])

    def test_injected_job_failures(self):
        self.request("POST", "/_stub/config", {"batch_fail_job_every": 2})
        self.upload("input/r.jsonl", self.titan_records(3))
        first = self.create("first")
        second = self.create("second")
        self.assertEqual(self.wait(first)[1]["status"], "Completed")
        seen, job = self.wait(second)
        self.assertStatesInOrder(seen, "Failed")
        # It failed after validation, as a job does part way through InProgress.
        self.assertEqual(job["totalRecordCount"], 3)
        self.assertTrue(job["message"])
        self.assertIn("endTime", job)
        self.assertEqual(self.outputs(second), {}, "a failed job writes nothing")
        stats = self.batch_stats()
        self.assertEqual((stats["jobs_completed"], stats["jobs_failed"]), (1, 1))

    def test_input_that_fails_validation(self):
        self.upload("broken/r.jsonl", [self.titan_records(1)[0], "{not json"])
        self.upload("noinput/r.jsonl", ['{"recordId": "a", "modelInput": "a string"}'])
        self.upload("few/r.jsonl", self.titan_records(3))
        self.request("POST", "/_stub/config", {"batch_min_records": 5})
        for key, fragment in (("broken/", "Line 2 of broken/r.jsonl is not a JSON object"),
                              ("noinput/", "no modelInput object"),
                              ("empty/", "No .jsonl files"),
                              ("few/", "the minimum number of records per batch inference "
                                       "job for amazon.titan-embed-text-v2:0 is 5")):
            with self.subTest(key):
                seen, job = self.wait(self.create(key.strip("/"), input_key=key))
                self.assertEqual(seen[-1], "Failed")
                self.assertNotIn("InProgress", seen)
                self.assertIn(fragment, job["message"])
                self.assertEqual(self.outputs(job["jobArn"]), {})
        self.request("POST", "/_stub/config", {"batch_min_records": 1, "batch_max_records": 2})
        seen, job = self.wait(self.create("many", input_key="few/"))
        self.assertIn("maximum number of records", job["message"])
        self.assertEqual(self.batch_stats()["jobs_failed"], 5)

    def test_a_missing_bucket_fails_the_job(self):
        arn = self.bedrock.create_model_invocation_job(
            jobName="nobucket", roleArn=ROLE, modelId=TITAN_V2,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://no-such-bucket-here/in/"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{self.bucket}/out/"}},
        )["jobArn"]
        _, job = self.wait(arn)
        self.assertEqual(job["status"], "Failed")
        self.assertIn("NoSuchBucket", job["message"])

    def test_the_client_request_token_makes_create_idempotent(self):
        self.upload("input/r.jsonl", self.titan_records(2))
        first = self.create("once", clientRequestToken="token-1")
        self.assertEqual(self.create("once-again", clientRequestToken="token-1"), first)
        code, _ = self.client_error(self.create, name="once", clientRequestToken="token-2")
        self.assertEqual(code, "ConflictException")
        jobs = self.bedrock.list_model_invocation_jobs()["invocationJobSummaries"]
        self.assertEqual([(j["jobArn"], j["clientRequestToken"]) for j in jobs],
                         [(first, "token-1")])
        self.assertEqual(self.batch_stats()["jobs_created"], 1)

    def test_jobs_are_found_by_id_and_by_arn(self):
        self.upload("input/r.jsonl", self.titan_records(2))
        arn = self.create("lookup")
        job_id = arn.rsplit("/", 1)[1]
        for ident in (job_id, quote(arn, safe=""), arn):
            with self.subTest(ident):
                status, _, job = self.request("GET", f"/model-invocation-job/{ident}")
                self.assertEqual((status, job["jobArn"]), (200, arn))
        self.assertBedrockError(self.request("GET", "/model-invocation-job/abcdefabcdef"), 404,
                                "ResourceNotFoundException")
        other = quote(arn.replace("111122223333", "999999999999"), safe="")
        self.assertBedrockError(self.request("GET", f"/model-invocation-job/{other}"), 404,
                                "ResourceNotFoundException")
        self.assertBedrockError(self.request("GET", "/model-invocation-job/not-an-id"), 400,
                                "ValidationException")

    def test_the_list_filters_sorts_and_pages(self):
        self.upload("input/r.jsonl", self.titan_records(2))
        arns = []
        for name, key in (("alpha-1", "input/"), ("alpha-2", "input/"), ("beta-1", "missing/")):
            arns.append(self.create(name, input_key=key))
            time.sleep(0.01)  # a distinct submitTime (milliseconds) for each
        for arn in arns:
            self.wait(arn)
        listed = self.bedrock.list_model_invocation_jobs()["invocationJobSummaries"]
        self.assertEqual([j["jobArn"] for j in listed], arns[::-1], "newest first")
        self.assertEqual(set(listed[0]), set(self.bedrock.get_model_invocation_job(
            jobIdentifier=arns[2])) - {"ResponseMetadata"})
        ascending = self.bedrock.list_model_invocation_jobs(sortBy="CreationTime",
                                                            sortOrder="Ascending")
        self.assertEqual([j["jobArn"] for j in ascending["invocationJobSummaries"]], arns)
        named = self.bedrock.list_model_invocation_jobs(nameContains="alpha")
        self.assertEqual({j["jobName"] for j in named["invocationJobSummaries"]},
                         {"alpha-1", "alpha-2"})
        failed = self.bedrock.list_model_invocation_jobs(statusEquals="Failed")
        self.assertEqual([j["jobName"] for j in failed["invocationJobSummaries"]], ["beta-1"])
        self.assertEqual(self.bedrock.list_model_invocation_jobs(
            statusEquals="InProgress")["invocationJobSummaries"], [])
        submitted = listed[1]["submitTime"]
        after = self.bedrock.list_model_invocation_jobs(submitTimeAfter=submitted,
                                                        sortOrder="Ascending")
        self.assertEqual([j["jobArn"] for j in after["invocationJobSummaries"]], arns[2:])
        before = self.bedrock.list_model_invocation_jobs(submitTimeBefore=submitted)
        self.assertEqual([j["jobArn"] for j in before["invocationJobSummaries"]], arns[:1])
        paged, token = [], None
        while True:
            page = self.bedrock.list_model_invocation_jobs(
                maxResults=1, **({"nextToken": token} if token else {}))
            self.assertLessEqual(len(page["invocationJobSummaries"]), 1)
            paged += [j["jobArn"] for j in page["invocationJobSummaries"]]
            token = page.get("nextToken")
            if token is None:
                break
        self.assertEqual(paged, arns[::-1])
        self.assertBedrockError(self.request("GET", "/model-invocation-jobs?statusEquals=Done"),
                                400, "ValidationException")
        self.assertBedrockError(self.request("GET", "/model-invocation-jobs?nextToken=bogus"),
                                400, "ValidationException")

    def test_create_is_validated_as_bedrock_validates_it(self):
        good = {"jobName": "ok-1", "roleArn": ROLE, "modelId": TITAN_V2,
                "inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://{self.bucket}/in/"}},
                "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{self.bucket}/o/"}}}
        cases = [
            ("no jobName", {"jobName": None}, "Value null at 'jobName' failed to satisfy "
                                              "constraint: Member must not be null"),
            ("bad jobName", {"jobName": "has space"}, "at 'jobName'"),
            ("bad roleArn", {"roleArn": "my-role"}, "at 'roleArn'"),
            ("bad s3Uri", {"inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://A_B/x"}}},
             "at 'inputDataConfig.s3InputDataConfig.s3Uri'"),
            ("empty union", {"inputDataConfig": {}}, "at 'inputDataConfig'"),
            ("bad format", {"inputDataConfig": {"s3InputDataConfig": {
                "s3Uri": "s3://abc/x", "s3InputFormat": "CSV"}}}, "[JSONL]"),
            ("short timeout", {"timeoutDurationInHours": 12}, "between 24 and 168"),
            ("two errors", {"jobName": "", "roleArn": None}, "2 validation errors detected"),
            ("not batch", {"modelId": COHERE_EN}, "does not support batch inference"),
            ("not batch v4", {"modelId": COHERE_V4}, "does not support batch inference"),
            ("not batch v1", {"modelId": TITAN_V1}, "does not support batch inference"),
            ("unknown model", {"modelId": "amazon.titan-embed-image-v1"},
             "The provided model identifier is invalid."),
            ("converse", {"modelInvocationType": "Converse"}, "Converse"),
        ]
        for name, change, fragment in cases:
            with self.subTest(name):
                body = {k: v for k, v in {**good, **change}.items() if v is not None}
                message = self.assertBedrockError(
                    self.request("POST", "/model-invocation-job", body), 400, "ValidationException")
                self.assertIn(fragment, message)
        self.assertBedrockError(self.request("POST", "/model-invocation-job", b"{nope"), 400,
                                "ValidationException")
        self.request("POST", "/_stub/config", {"deny_models": [TITAN_V2]})
        self.assertBedrockError(self.request("POST", "/model-invocation-job", good), 403,
                                "AccessDeniedException")
        self.request("POST", "/_stub/config", {"deny_models": []})
        self.assertEqual(self.batch_stats()["jobs_created"], 0)
        arn = "arn:aws:bedrock:us-east-1::foundation-model/" + TITAN_V2
        status, _, created = self.request("POST", "/model-invocation-job",
                                          {**good, "modelId": arn, "timeoutDurationInHours": 24})
        self.assertEqual(status, 200)
        job = self.bedrock.get_model_invocation_job(jobIdentifier=created["jobArn"])
        self.assertEqual((job["modelId"], job["timeoutDurationInHours"]), (arn, 24))

    def test_invoke_model_is_unaffected_by_a_running_job(self):
        self.upload("input/r.jsonl", self.titan_records(50))
        self.request("POST", "/_stub/config", {"batch_seconds": 1.0})
        arn = self.create("background")
        self.wait(arn, until=("InProgress",))
        started = time.monotonic()
        for _ in range(10):
            self.titan("served meanwhile")
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(self.wait(arn)[1]["status"], "Completed")
        self.assertEqual(self.stats()["ok"], 10)

    def test_without_an_s3_endpoint_jobs_fail_validation(self):
        self.start_stub("--workers", "0", "--batch-seconds", "0.1", env=batch_env())
        self.bedrock = boto3.client("bedrock", endpoint_url=f"http://127.0.0.1:{self.port}",
                                    config=Config(retries={"max_attempts": 1}), **TEST_KEYS)
        _, job = self.wait(self.create("nowhere"))
        self.assertEqual(job["status"], "Failed")
        self.assertIn("--s3-endpoint", job["message"])


class BatchQuotaTests(BatchTestCase):
    # Slow jobs, so they stay in flight.
    stub_args = ("--workers", "0", "--batch-seconds", "60", "--batch-max-jobs", "2")

    def test_jobs_in_flight_per_model_are_limited(self):
        self.upload("input/r.jsonl", self.titan_records(2))
        first = self.create("one")
        self.create("two")
        code, response = self.client_error(self.create, name="three")
        self.assertEqual(code, "ServiceQuotaExceededException")
        self.assertEqual(response["ResponseMetadata"]["HTTPStatusCode"], 400)
        self.assertEqual(self.batch_stats()["jobs_in_flight"], 2)
        self.bedrock.stop_model_invocation_job(jobIdentifier=first)
        self.wait(first, until=("Stopped",))
        self.create("three")
        self.assertEqual(self.batch_stats()["jobs_created"], 3)

    def test_stop(self):
        self.upload("input/r.jsonl", self.titan_records(2))
        arn = self.create("to-stop")
        status, _, answer = self.request(
            "POST", f"/model-invocation-job/{quote(arn, safe='')}/stop")
        self.assertEqual((status, answer), (200, {}))
        seen, job = self.wait(arn)
        self.assertIn(seen, (["Stopping", "Stopped"], ["Stopped"]))
        self.assertIn("endTime", job)
        self.assertEqual(self.outputs(arn), {})
        code, _ = self.client_error(self.bedrock.stop_model_invocation_job, jobIdentifier=arn)
        self.assertEqual(code, "ValidationException")
        code, _ = self.client_error(self.bedrock.stop_model_invocation_job,
                                    jobIdentifier="abcdefabcdef")
        self.assertEqual(code, "ResourceNotFoundException")
        self.assertEqual(self.batch_stats()["jobs_stopped"], 1)

    def test_a_job_stopped_in_progress_keeps_what_it_processed(self):
        self.upload("input/r.jsonl", self.titan_records(640))
        # InProgress takes 60% of 3 s: ten chunks of 64 records, 0.18 s apart.
        self.request("POST", "/_stub/config", {"batch_seconds": 3})
        arn = self.create("halfway")
        deadline = time.monotonic() + 10
        while self.bedrock.get_model_invocation_job(jobIdentifier=arn)[
                "processedRecordCount"] == 0:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.02)
        self.bedrock.stop_model_invocation_job(jobIdentifier=arn)
        seen, job = self.wait(arn)
        self.assertEqual(seen[-1], "Stopped")
        processed = job["processedRecordCount"]
        self.assertTrue(0 < processed < 640, processed)
        files = self.outputs(arn)
        self.assertEqual(len(files["r.jsonl.out"].splitlines()), processed)
        self.assertEqual(json.loads(files["manifest.json.out"])["processedRecordCount"], processed)


class BatchWorkerTests(BatchTestCase):
    """Records embedded in the worker processes, as the stand-in runs in the local stack."""

    stub_args = ("--workers", "2", "--batch-seconds", "0.2")

    def test_a_job_in_the_worker_processes(self):
        records = self.titan_records(300)
        self.upload("input/r.jsonl", records)
        _, job = self.wait(self.create("pooled"))
        self.assertEqual((job["status"], job["successRecordCount"]), ("Completed", 300))
        lines = [json.loads(line) for line in self.outputs(job["jobArn"])["r.jsonl.out"]
                 .splitlines()]
        self.assertEqual(len({line["recordId"] for line in lines}), 300)
        sample = next(line for line in lines if line["recordId"] == "doc007")
        self.assertEqual(sample["modelOutput"], self.embed_ok(TITAN_V2, sample["modelInput"]))


if __name__ == "__main__":
    unittest.main()
