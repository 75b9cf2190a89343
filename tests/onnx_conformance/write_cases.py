#!/usr/bin/env python3
"""Writes ONNX's backend node test cases for the ops edgec imports into a cache directory.

Usage: write_cases.py OUT_DIR

Each case becomes OUT_DIR/<case>/model.onnx and OUT_DIR/<case>/test_data_set_0/{input,output}_N.pb,
the layout of onnx's own test data. Cases come from onnx.backend.test.loader.load_model_tests
(kind="node"), onnx==1.23.2: 1884 cases, of which those whose nodes all use an op in OPS are
written. frontend/tests/onnx_conformance.rs reads them.
"""
import os
import sys
import warnings

warnings.filterwarnings("ignore")
import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from onnx.backend.test.loader import load_model_tests  # noqa: E402

# The ops of the first import layer (issue 3's list).
OPS = {
    "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Exp", "Log", "Erf", "Tanh",
    "Sigmoid", "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceMax", "LayerNormalization", "Gelu",
    "Gather", "Reshape", "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Expand", "Where",
    "Equal", "Less", "Greater", "Not", "And", "Or", "Cast", "CastLike", "Constant", "ConstantOfShape", "Identity",
    "Range", "Trilu", "CumSum", "Clip", "Max", "Min", "Abs", "Relu", "Flatten", "Shape", "Size",
}


def main(out):
    written = 0
    for case in load_model_tests(kind="node"):
        model = case.model
        if model is None or not case.data_sets:
            continue
        ops = {n.op_type for n in model.graph.node}
        if not ops or not ops <= OPS or any(n.domain not in ("", "ai.onnx") for n in model.graph.node):
            continue
        inputs, outputs = case.data_sets[0]
        if not all(isinstance(v, np.ndarray) for v in list(inputs) + list(outputs)):
            continue  # sequences and optionals
        d = os.path.join(out, case.name)
        data = os.path.join(d, "test_data_set_0")
        os.makedirs(data, exist_ok=True)
        onnx.save(model, os.path.join(d, "model.onnx"))
        for kind, values in (("input", inputs), ("output", outputs)):
            for i, v in enumerate(values):
                t = numpy_helper.from_array(v)
                with open(os.path.join(data, f"{kind}_{i}.pb"), "wb") as f:
                    f.write(t.SerializeToString())
        written += 1
    print(f"wrote {written} node cases to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
