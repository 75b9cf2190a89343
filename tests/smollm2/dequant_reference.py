"""Prints reference values of a few SmolLM2 GGUF tensors, dequantized by the `gguf` Python
package (`gguf.quants.dequantize`), as JSON: {name: {"type": T, "shape": [...], "rows": R,
"values": [first R rows, row-major, in the stored (GGUF) row order]}}.

    python3 tests/smollm2/dequant_reference.py MODEL.gguf
"""
import json
import sys

import gguf
import numpy as np

TENSORS = {"token_embd.weight": 3, "blk.0.attn_q.weight": 2, "blk.7.ffn_down.weight": 2, "output_norm.weight": 1}


def main(path):
    r = gguf.GGUFReader(path)
    out = {}
    for t in r.tensors:
        if t.name not in TENSORS:
            continue
        full = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        full = full.reshape(-1, int(t.shape[0]))  # rows of the innermost dim
        rows = TENSORS[t.name]
        out[t.name] = {
            "type": t.tensor_type.name,
            "shape": [int(d) for d in reversed(t.shape)],
            "rows": rows,
            "values": [float(v) for v in full[:rows].reshape(-1)],
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
