"""Prints K-quant blocks and their values as the `gguf` Python package dequantizes them
(`gguf.quants.dequantize`), as JSON: {TYPE: {"bytes": hex, "values": [...]}} for Q4_K, Q5_K and
Q6_K, four random 256-element blocks each (random bytes, with the f16 scales set to finite
values of a model's magnitude).

    python3 tests/gguf_fixtures/kquant_reference.py
"""
import json
import sys

import gguf
import numpy as np

# Byte offsets of each type's f16 fields within its block.
F16_FIELDS = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def main():
    rng = np.random.default_rng(5)
    out = {}
    for name, fields in F16_FIELDS.items():
        qtype = gguf.GGMLQuantizationType[name]
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        data = rng.integers(0, 256, size=(4, type_size), dtype=np.uint8)
        for at in fields:
            scale = (rng.uniform(1e-4, 1e-2, size=4)).astype(np.float16)
            data[:, at:at + 2] = scale.view(np.uint8).reshape(4, 2)
        values = gguf.quants.dequantize(data.reshape(-1), qtype).astype(np.float32).reshape(-1)
        assert values.size == 4 * block_size
        out[name] = {"bytes": data.tobytes().hex(), "values": [float(v) for v in values]}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
