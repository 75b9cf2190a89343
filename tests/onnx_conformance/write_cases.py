#!/usr/bin/env python3
"""Writes all of ONNX's backend node test cases into a cache directory, with an index.

Usage: write_cases.py OUT_DIR

Cases come from onnx.backend.test.loader.load_model_tests(kind="node"), onnx==1.23.2: 1884.
Each one whose inputs and outputs are all tensors becomes OUT_DIR/<case>/model.onnx and
OUT_DIR/<case>/test_data_set_0/{input,output}_N.pb (onnx's own layout). OUT_DIR/index.tsv
has one line per case (all 1884):

    name  op  in_list  opset  rtol  atol  written  note

`op` is the op the case tests (its node's, or for a several-node case the op its name starts
with); `in_list` is 1 when every node's op is in issue 3's lists and every graph input and
output has a dtype among f32/f16/i64/i32/bool (the acceptance set), with the lists' own
exclusions (Resize: nearest and linear only); `written` is 0 for cases with sequence or
optional values, which `note` explains. frontend/tests/onnx_conformance.rs reads them.
"""
import os
import re
import sys
import warnings

warnings.filterwarnings("ignore")
import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, defs, numpy_helper  # noqa: E402
from onnx.backend.test.loader import load_model_tests  # noqa: E402

# Issue 3's op lists.
TRANSFORMER = {
    "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Exp", "Log", "Erf", "Tanh",
    "Sigmoid", "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceMax", "LayerNormalization",
    "RMSNormalization", "Gelu", "Gather", "Reshape", "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze",
    "Expand", "Where", "Equal", "Less", "Greater", "Not", "And", "Or", "Cast", "CastLike", "Constant",
    "ConstantOfShape", "Identity", "Range", "Trilu", "CumSum", "Clip", "Max", "Min", "Attention", "RotaryEmbedding",
}
VISION = {
    "Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Relu", "LeakyRelu", "HardSigmoid",
    "HardSwish", "Flatten", "Pad", "Resize",
}
LISTED = TRANSFORMER | VISION
DTYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL}


def snake(op):
    """ONNX test names spell ops in snake case: LayerNormalization -> layer_normalization."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", op)
    return s.lower()


SNAKE = sorted(((snake(s.name), s.name) for s in defs.get_all_schemas_with_history()), key=lambda x: -len(x[0]))


def tested_op(case, model):
    ops = [n.op_type for n in model.graph.node]
    if len(ops) == 1:
        return ops[0]
    rest = case.name[len("test_"):]
    for s, name in SNAKE:
        if rest == s or rest.startswith(s + "_"):
            return name
    return "(several nodes)"


def dtypes_allowed(model):
    for v in list(model.graph.input) + list(model.graph.output):
        t = v.type
        if t.WhichOneof("value") != "tensor_type" or t.tensor_type.elem_type not in DTYPES:
            return False
    return True


def in_list(model):
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx") or n.op_type not in LISTED:
            return False
        if n.op_type == "Resize":
            mode = next((a.s.decode() for a in n.attribute if a.name == "mode"), "nearest")
            if mode not in ("nearest", "linear"):
                return False
    return dtypes_allowed(model)


def opset(model):
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def write_case(out, case):
    """Writes the case's files; returns why it cannot be written, or None."""
    inputs, outputs = case.data_sets[0]
    if not all(isinstance(v, (np.ndarray, np.generic)) for v in list(inputs) + list(outputs)):
        return "sequence or optional values"
    d = os.path.join(out, case.name)
    data = os.path.join(d, "test_data_set_0")
    os.makedirs(data, exist_ok=True)
    onnx.save(case.model, os.path.join(d, "model.onnx"))
    for kind, values in (("input", inputs), ("output", outputs)):
        for i, v in enumerate(values):
            with open(os.path.join(data, f"{kind}_{i}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(np.asarray(v)).SerializeToString())
    return None


def main(out):
    os.makedirs(out, exist_ok=True)
    rows = []
    for case in load_model_tests(kind="node"):
        model = case.model
        if model is None or not case.data_sets:
            rows.append((case.name, "(no model)", 0, 0, case.rtol, case.atol, 0, "no model or test data"))
            continue
        note = write_case(out, case)
        rows.append((
            case.name, tested_op(case, model), int(in_list(model)), opset(model), case.rtol, case.atol,
            int(note is None), note or "",
        ))
    with open(os.path.join(out, "index.tsv"), "w") as f:
        for r in sorted(rows):
            f.write("\t".join(str(x) for x in r) + "\n")
    print(f"wrote {sum(r[6] for r in rows)} of {len(rows)} node cases to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
