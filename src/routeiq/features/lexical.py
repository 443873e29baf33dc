r"""Fast lexical featurizer: hashed word 1-2-gram TF-IDF projected to a dense LSA space.

Fitting uses scikit-learn (TruncatedSVD); transforming uses plain numpy, because single-row
scikit-learn calls cost milliseconds. Per prompt, over the UTF-8 bytes of the last ``max_chars``
characters, vectorised over pieces of at most 500 bytes: split into tokens, hash each token
with a 64-bit polynomial hash plus a murmur finaliser, hash adjacent pairs into bigrams, count
the buckets and sum the weighted rows of the projection. The hash is fixed arithmetic (not
Python's per-process salted ``hash``), so features are identical across processes and machines.

Tokens are the runs of ``\w+|[^\w\s]+`` (word characters, or punctuation: operators and
brackets carry signal in code and maths), decided per byte after ``str.lower()``: ASCII letters,
digits, ``_`` and every non-ASCII byte are word bytes; ASCII whitespace separates; any other
ASCII byte is punctuation. On ASCII text this equals the regex; non-ASCII punctuation
(e.g. curly quotes) joins the adjacent word.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Self

import numpy as np

from routeiq.features._text import check_texts
from routeiq.features.base import Featurizer

# Every numpy call on the serving path stays within what numpy runs without releasing the GIL:
# ufuncs on at most 500 elements, 1-D integer indexing of at most 500 elements, boolean masks;
# no sort, ``take``, ``reduceat``, ``bincount`` or row gather (numpy releases the GIL for
# those at any size). In a LiteLLM process every release hands the GIL to a busy worker
# thread for up to the 5 ms switch interval, stalling the event loop: measured in
# ``bench/gil_contention.py``.
_CHUNK = 500
_MAX_BYTES = 1 << 16  # powers table size: the longest tail, in UTF-8 bytes


def _class_table() -> bytes:
    """Byte -> class for ``bytes.translate``: 0 whitespace, 1 word, 2 punctuation."""
    table = bytearray([2]) * 256
    table[0x80:] = b"\x01" * 128  # UTF-8 lead/continuation bytes: part of a word
    for c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
        table[c] = 1
    for c in b" \t\n\r\x0b\x0c":
        table[c] = 0
    return bytes(table)


# Read-only constants.
_CLASSES = _class_table()
_P = np.uint64(0x100000001B3)  # FNV-64 prime: odd, so invertible mod 2^64
_POW = np.ones(_MAX_BYTES, dtype=np.uint64)  # P^0, P^1, ... (mod 2^64)
np.cumprod(np.full(_MAX_BYTES - 1, _P, dtype=np.uint64), out=_POW[1:])
_INV_POW = np.ones(_MAX_BYTES, dtype=np.uint64)  # P^-0, P^-1, ... (mod 2^64)
np.cumprod(np.full(_MAX_BYTES - 1, pow(int(_P), -1, 1 << 64), dtype=np.uint64), out=_INV_POW[1:])
for _table in (_POW, _INV_POW):
    _table.flags.writeable = False
_MIX = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_ZERO = np.zeros(1, dtype=np.uint64)


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (in place): spreads every input bit over the low bits."""
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    return h


def _segments(classes: bytes) -> list[tuple[int, int]]:
    """Spans of at most ``_CHUNK`` bytes cut at whitespace (a token longer than that is kept
    whole in one longer span)."""
    n, out, start = len(classes), [], 0
    while start < n:
        end = n if n - start <= _CHUNK else classes.rfind(b"\x00", start + 1, start + _CHUNK)
        if end < 0:  # no whitespace within the chunk: cut at the next one
            end = classes.find(b"\x00", start + _CHUNK)
            end = n if end < 0 else end
        out.append((start, end))
        start = end
    return out


def _token_hashes(data: bytes, classes: bytes) -> np.ndarray:
    """Polynomial hash of each token of one span: sum_k (byte[start + k] + 1) * P^k.

    Tokens are runs of one non-whitespace class. With prefix sums of ``x_i * P^i`` over the
    span, a token's sum is the difference of the prefix at its end and at the previous
    token's end (whitespace adds 0), shifted to offset 0 by ``P^-start``.
    """
    n = len(data)
    cls = np.frombuffer(classes, dtype=np.int8)
    solid = cls != 0
    boundary = np.empty(n + 1, dtype=bool)  # boundary[i]: a token may start at i / end before i
    boundary[0] = boundary[n] = True
    np.not_equal(cls[1:], cls[:-1], out=boundary[1:n])
    first = boundary[:n] & solid
    last = boundary[1:] & solid
    x = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
    x += np.uint64(1)
    x *= _POW[:n]
    x *= solid
    ends = np.cumsum(x)[last]
    return np.diff(ends, prepend=_ZERO) * _INV_POW[:n][first]


def _buckets(text: str, max_chars: int, n_features: int) -> np.ndarray:
    """Hash buckets (int64, with repeats) of the word 1- and 2-grams in the tail of ``text``."""
    data = text[-max_chars:].lower().encode("utf-8", "surrogatepass")
    if len(data) > _MAX_BYTES:
        raise ValueError(f"the text tail has {len(data):,} UTF-8 bytes, over {_MAX_BYTES:,}")
    classes = data.translate(_CLASSES)
    parts = [_token_hashes(data[a:b], classes[a:b]) for a, b in _segments(classes)]
    uni = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
    n = uni.size
    grams = np.empty(max(2 * n - 1, 0), dtype=np.uint64)
    for a in range(0, n, _CHUNK):
        grams[a : min(a + _CHUNK, n)] = _fmix(uni[a : a + _CHUNK])
    for a in range(0, n - 1, _CHUNK):
        b = min(a + _CHUNK, n - 1)
        pair = grams[a:b] * _MIX
        pair += grams[a + 1 : b + 1]
        grams[n + a : n + b] = _fmix(pair)
    out = np.empty(grams.size, dtype=np.int64)
    for a in range(0, grams.size, _CHUNK):
        out[a : a + _CHUNK] = grams[a : a + _CHUNK] % np.uint64(n_features)
    return out


def _known_columns(table: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    """Projection columns of the buckets the vocabulary keeps (``table`` maps others to -1)."""
    parts = []
    for a in range(0, buckets.size, _CHUNK):
        col = table[buckets[a : a + _CHUNK]]
        parts.append(col[col >= 0])
    return np.concatenate(parts) if parts else np.empty(0, dtype=table.dtype)


def _lookup(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` for a 1-D ``index``, in pieces numpy indexes without dropping the GIL."""
    if index.size <= _CHUNK:
        return table[index]
    return np.concatenate([table[index[a : a + _CHUNK]] for a in range(0, index.size, _CHUNK)])


class LexicalFeaturizer(Featurizer):
    """Hashed word 1-2-gram TF-IDF (sublinear tf, learned IDF) followed by a learned projection.

    Parameters
    ----------
    n_components: output dimension (rows are L2-normalised float32).
    n_features: hash space size for 1- and 2-grams.
    max_vocab: keep at most this many hash buckets (highest document frequency) at fit time,
        which bounds the projection matrix at ``max_vocab x n_components`` floats.
    min_df: drop buckets seen in fewer training texts (mostly typos and one-off bigrams).
    max_chars: only the last ``max_chars`` characters are used: shared few-shot blocks and
        system prompts sit at the head, the question that distinguishes prompts at the tail.
    random_state: seed of the randomized SVD.

    Learned: ``buckets_`` (sorted hash buckets kept), ``idf_`` (their IDF) and
    ``components_`` (``len(buckets_) x n_components`` projection; zero-padded columns if the
    training corpus has fewer usable dimensions).
    """

    name = "lexical"
    inline_safe = True  # bounded tail, keeps the GIL: 0.04-0.42 ms (bench/gil_contention.py)

    def __init__(
        self,
        n_components: int = 192,
        n_features: int = 1 << 20,
        max_vocab: int = 30000,
        min_df: int = 2,
        max_chars: int = 2000,
        random_state: int = 0,
    ) -> None:
        self.n_components = n_components
        self.n_features = n_features
        self.max_vocab = max_vocab
        self.min_df = min_df
        self.max_chars = max_chars
        self.random_state = random_state

    @property
    def n_features_out(self) -> int:
        return self.n_components

    # -- fitting -----------------------------------------------------------------------------

    def fit(self, texts: Sequence[str]) -> Self:
        from scipy import sparse
        from sklearn.decomposition import TruncatedSVD

        texts = check_texts(texts)
        if not texts:
            raise ValueError("LexicalFeaturizer.fit needs at least one text")
        if self.n_components < 1 or self.max_chars < 1 or self.n_features < 2:
            raise ValueError("n_components, max_chars must be >= 1 and n_features >= 2")
        if self.max_chars > _MAX_BYTES // 4:  # 4 UTF-8 bytes per character at most
            raise ValueError(f"max_chars must be <= {_MAX_BYTES // 4:,}, got {self.max_chars:,}")
        per_text = [
            np.unique(_buckets(t, self.max_chars, self.n_features), return_counts=True)
            for t in texts
        ]
        rows = np.repeat(np.arange(len(texts)), [len(b) for b, _ in per_text])
        cols = np.concatenate([b for b, _ in per_text]) if rows.size else np.empty(0, np.int64)
        tf = np.concatenate([c for _, c in per_text]) if rows.size else np.empty(0, np.int64)

        # Vocabulary: buckets by document frequency, ties broken by bucket id (deterministic).
        df_all = np.bincount(cols, minlength=self.n_features)
        candidates = np.flatnonzero(df_all >= max(self.min_df, 1))
        if candidates.size > self.max_vocab:
            order = np.lexsort((candidates, -df_all[candidates]))
            candidates = np.sort(candidates[order[: self.max_vocab]])
        self.buckets_ = candidates.astype(np.int32 if self.n_features < 2**31 else np.int64)
        n_docs = len(texts)
        df = df_all[self.buckets_].astype(np.float64)
        self.idf_ = (np.log((1.0 + n_docs) / (1.0 + df)) + 1.0).astype(np.float32)

        col = np.searchsorted(self.buckets_, cols)  # buckets_ is sorted
        keep = col < self.buckets_.size
        keep[keep] = self.buckets_[col[keep]] == cols[keep]
        weights = (1.0 + np.log(tf[keep])) * self.idf_[col[keep]]
        x = sparse.csr_matrix(
            (weights, (rows[keep], col[keep])),
            shape=(n_docs, self.buckets_.size),
            dtype=np.float32,
        )
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        x = sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ x

        # TruncatedSVD needs k < n_features; tiny corpora get zero-padded columns instead.
        k = min(self.n_components, self.buckets_.size - 1, n_docs)
        comp = np.zeros((self.buckets_.size, self.n_components), dtype=np.float32)
        if k >= 1:
            svd = TruncatedSVD(
                n_components=k, algorithm="randomized", n_iter=5, random_state=self.random_state
            )
            svd.fit(x)
            comp[:, :k] = svd.components_.T
        # Stored in half precision (half the artifact; LSA directions need no more), and served
        # from the same rounded values, so what is evaluated is what is served.
        self.components_ = comp.astype(np.float16)
        self._after_load()
        return self

    def _after_load(self) -> None:
        # Serving state. Dense bucket -> column table (4 bytes per bucket), and the projection
        # as row views, which _row stacks instead of gathering (see the note at the top).
        table = np.full(self.n_features, -1, dtype=np.int32)
        table[np.asarray(self.buckets_, dtype=np.int64)] = np.arange(
            len(self.buckets_), dtype=np.int32
        )
        self._col_of_bucket = table
        self._rows = list(np.asarray(self.components_, dtype=np.float32))

    # -- transforming ------------------------------------------------------------------------

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted("components_")
        texts = check_texts(texts)
        out = np.zeros((len(texts), self.n_components), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self._row(text)
        return out

    def _row(self, text: str) -> np.ndarray:
        col = _known_columns(self._col_of_bucket, _buckets(text, self.max_chars, self.n_features))
        tf = Counter(col.tolist())  # counted in Python: np.unique sorts off the GIL
        if not tf:
            return np.zeros(self.n_components, dtype=np.float32)
        k = len(tf)
        counts = np.fromiter(tf.values(), dtype=np.float32, count=k)
        idf = _lookup(self.idf_, np.fromiter(tf.keys(), dtype=np.intp, count=k))
        # The TF-IDF row's own L2 norm is skipped: the output is re-normalised anyway.
        weights = np.empty(k, dtype=np.float32)
        for a in range(0, k, _CHUNK):
            weights[a : a + _CHUNK] = (1.0 + np.log(counts[a : a + _CHUNK])) * idf[a : a + _CHUNK]
        # Rows stacked from views, not gathered by fancy indexing (see the note at the top).
        rows = self._rows
        row = (weights[None, :] @ np.array([rows[c] for c in tf]))[0]
        norm = float(np.sqrt(np.square(row).sum()))
        return row / norm if norm > 0 else row
