"""The all-MiniLM-L6-v2 BERT encoder written as an ONNX graph from its safetensors weights.

Built with ``onnx.helper`` (embeddings, 6 encoder layers, mean pooling, L2 normalisation) and
optionally quantised with onnxruntime's dynamic int8 quantisation; no PyTorch involved.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

_HEADS = 12
_LAYERS = 6
_LN_EPS = 1e-12


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
