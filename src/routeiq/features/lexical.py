r"""Fast lexical featurizer: hashed word 1-2-gram TF-IDF projected to a dense LSA space.

Fitting uses scikit-learn (TruncatedSVD); transforming uses plain numpy, because single-row
scikit-learn calls cost milliseconds. Per prompt, over the UTF-8 bytes of the last ``max_chars``
characters, all vectorised (no Python loop per token): split into tokens, hash each token with
a 64-bit polynomial hash plus a murmur finaliser, hash adjacent pairs into bigrams, gather and
sum rows of the projection. The hash is fixed arithmetic (not Python's per-process salted
``hash``), so features are identical across processes and machines.

Tokens are the runs of ``\w+|[^\w\s]+`` (word characters, or punctuation: operators and
brackets carry signal in code and maths), decided per byte after ``str.lower()``: ASCII letters,
digits, ``_`` and every non-ASCII byte are word bytes; ASCII whitespace separates; any other
ASCII byte is punctuation. On ASCII text this equals the regex; non-ASCII punctuation
(e.g. curly quotes) joins the adjacent word.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from routeiq.features._text import check_texts
from routeiq.features.base import Featurizer


def _byte_classes() -> np.ndarray:
    cls = np.full(256, 2, dtype=np.int8)  # punctuation
    cls[0x80:] = 1  # UTF-8 lead/continuation bytes: part of a word
    for c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
        cls[c] = 1
    for c in b" \t\n\r\x0b\x0c":
        cls[c] = 0  # whitespace
    cls.flags.writeable = False
    return cls


# Read-only constants.
_CLASS = _byte_classes()
_P = np.uint64(0x100000001B3)  # FNV-64 prime: odd, so powers never collapse to 0 mod 2^64
_POW = np.ones(1 << 16, dtype=np.uint64)  # P^0, P^1, ... (mod 2^64)
np.cumprod(np.full((1 << 16) - 1, _P, dtype=np.uint64), out=_POW[1:])
_POW.flags.writeable = False
_MIX = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (in place): spreads every input bit over the low bits."""
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    return h


def _token_spans(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start and end (exclusive) byte offsets of the tokens in ``data``, and the byte classes."""
    cls = _CLASS[np.frombuffer(data, dtype=np.uint8)]
    n = cls.size
    if n == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp), cls
    boundary = np.empty(n + 1, dtype=bool)  # boundary[i]: a token may start at i / end before i
    boundary[0] = boundary[n] = True
    np.not_equal(cls[1:], cls[:-1], out=boundary[1:n])
    solid = cls != 0
    starts = np.flatnonzero(boundary[:n] & solid)
    ends = np.flatnonzero(boundary[1:] & solid) + 1
    return starts, ends, cls


def _buckets(text: str, max_chars: int, n_features: int) -> np.ndarray:
    """Hash buckets (int64, with repeats) of the word 1- and 2-grams in the tail of ``text``."""
    data = text[-max_chars:].lower().encode("utf-8", "surrogatepass")
    starts, _, cls = _token_spans(data)
    if starts.size == 0:
        return np.empty(0, dtype=np.int64)
    x = np.frombuffer(data, dtype=np.uint8).astype(np.uint64) + np.uint64(1)
    # hash(token) = sum_k x[start + k] * P^k: each byte weighted by its offset in its token.
    mark = np.zeros(x.size, dtype=np.intp)
    mark[starts] = starts
    offset = np.arange(x.size) - np.maximum.accumulate(mark)
    np.minimum(offset, _POW.size - 1, out=offset)
    terms = x * _POW[offset]
    terms[cls == 0] = 0  # whitespace adds nothing
    uni = _fmix(np.add.reduceat(terms, starts))
    if uni.size > 1:
        uni = np.concatenate([uni, _fmix(uni[:-1] * _MIX + uni[1:])])
    return (uni % np.uint64(n_features)).astype(np.int64)


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
    inline_safe = True  # hashed n-grams + one matmul on a bounded tail: ~0.1 ms

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
        self.buckets_ = candidates.astype(np.int64)
        n_docs = len(texts)
        df = df_all[self.buckets_].astype(np.float64)
        self.idf_ = (np.log((1.0 + n_docs) / (1.0 + df)) + 1.0).astype(np.float32)
        self._after_load()

        col = self._col_of_bucket[cols]
        keep = col >= 0
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
        self.components_ = comp
        return self

    def _after_load(self) -> None:
        # Dense bucket -> column table (4 bytes per bucket): one fancy-index per prompt.
        table = np.full(self.n_features, -1, dtype=np.int32)
        table[np.asarray(self.buckets_, dtype=np.int64)] = np.arange(
            len(self.buckets_), dtype=np.int32
        )
        self._col_of_bucket = table

    # -- transforming ------------------------------------------------------------------------

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted("components_")
        texts = check_texts(texts)
        out = np.zeros((len(texts), self.n_components), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self._row(text)
        return out

    def _row(self, text: str) -> np.ndarray:
        col = self._col_of_bucket[_buckets(text, self.max_chars, self.n_features)]
        col = col[col >= 0]
        if col.size == 0:
            return np.zeros(self.n_components, dtype=np.float32)
        col, tf = np.unique(col, return_counts=True)
        # The TF-IDF row's own L2 norm is skipped: the output is re-normalised anyway.
        weights = (1.0 + np.log(tf.astype(np.float32))) * self.idf_[col]
        row = weights @ self.components_[col]
        norm = float(np.sqrt(row @ row))
        return row / norm if norm > 0 else row
