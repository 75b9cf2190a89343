#!/usr/bin/env python3
"""Prints how the ops edgec's ONNX importer knows changed in opsets 22..25, from onnx's schemas.

Usage: opset_changes.py [OP ...]   (default: every op the importer lowers or folds)

For each new version of an op: whether its doc, attributes and inputs are those of the version
before, and which types it added. `frontend/src/onnx/import.rs` (`OPSETS`) relies on this.
"""
import sys
import warnings

warnings.filterwarnings("ignore")
from onnx import defs  # noqa: E402

KNOWN = """Constant ConstantOfShape Identity Cast CastLike Gather GatherND Unsqueeze Squeeze Reshape Flatten Concat
Slice Range Expand Where CumSum Transpose Split Trilu Add Sub Mul Div Pow Max Min Mod Equal Less LessOrEqual Greater
GreaterOrEqual And Or Xor Not Neg Abs Sqrt Reciprocal Exp Log Cos Sin Tanh Sigmoid Erf Floor Ceil Relu IsNaN IsInf
ReduceSum ReduceMax ReduceMin ReduceProd ReduceMean Dropout Softmax LogSoftmax MatMul Gemm LayerNormalization Gelu
Clip Shape Size LeakyRelu HardSigmoid HardSwish""".split()


def main(ops):
    by = {}
    for s in defs.get_all_schemas_with_history():
        if s.domain == "" and s.name in ops:
            by.setdefault(s.name, []).append(s)
    for op in sorted(by):
        ss = sorted(by[op], key=lambda s: s.since_version)
        for a, b in zip(ss, ss[1:]):
            if not 22 <= b.since_version <= 25:
                continue
            ta = {t.type_param_str: set(t.allowed_type_strs) for t in a.type_constraints}
            added = sorted({x for t in b.type_constraints for x in set(t.allowed_type_strs) - ta.get(t.type_param_str, set())})
            same = (a.doc == b.doc and set(a.attributes) == set(b.attributes)
                    and [i.name for i in a.inputs] == [i.name for i in b.inputs])
            print(f"{op:<16} {b.since_version}  {'types only' if same else 'CHANGED'}  added {', '.join(added)}")


if __name__ == "__main__":
    main(sys.argv[1:] or KNOWN)
