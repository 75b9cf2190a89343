#!/usr/bin/env python3
"""Writes the tiny fixtures (tests/fixtures/{llama,qwen2,phi,phi3}) as GGUF files laid out the way
llama.cpp's convert_hf_to_gguf.py lays them out: its architecture names, metadata keys, tensor
names (from gguf-py's TensorNameMap), fused tensors, llama's Q/K rope row permutation (llama only),
F32 tensors. GGUF stores no tokenizer-free model, so each file gets a placeholder byte-level BPE
vocabulary of the model's size (`<tN>` tokens, no merges); tests pass token ids.

Also writes phi-fused.gguf: Phi-2 as converted from its original checkpoint (`mixer.Wqkv`), with
one `attn_qkv` per layer instead of attn_q/attn_k/attn_v.

usage: make_gguf.py FIXTURES_DIR OUT_DIR     (needs numpy and the `gguf` package)
"""
import json
import struct
import sys
from pathlib import Path

import gguf
import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
ARCH = {"llama": "llama", "qwen2": "qwen2", "phi": "phi2", "phi3": "phi3"}


def read_safetensors(path):
    """The tensors of a safetensors file, in file order (numpy only)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = data[8 + n + start : 8 + n + end]
        out[name] = np.frombuffer(buf, dtype=DTYPES[info["dtype"]]).reshape(info["shape"]).astype(np.float32)
    return out


def rope_permute(w, heads):
    """convert_hf_to_gguf.py LlamaModel.permute."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write(fixture_dir, out_path, fuse_qkv=False):
    cfg = json.loads((fixture_dir / "config.json").read_text())
    arch = ARCH[fixture_dir.name]
    tensors = read_safetensors(fixture_dir / "model.safetensors")
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    hidden = cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or hidden // heads
    rope = cfg.get("rope_parameters") or {}
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    partial = rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))

    w = gguf.GGUFWriter(str(out_path), arch)
    w.add_name(fixture_dir.name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(theta)
    if arch == "phi2":
        w.add_layer_norm_eps(cfg["layer_norm_eps"])
        w.add_rope_dimension_count(int(partial * head_dim))
    else:
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        if arch != "qwen2":
            w.add_rope_dimension_count(int(partial * head_dim))
    if arch == "phi3" and cfg.get("sliding_window") is not None:
        w.add_sliding_window(cfg["sliding_window"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = cfg["vocab_size"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list([f"<t{i}>" for i in range(vocab)])
    w.add_token_types([1] * vocab)

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg["num_hidden_layers"])
    pending = {}
    for name, t in tensors.items():
        if arch == "llama" and name.endswith("q_proj.weight"):
            t = rope_permute(t, heads)
        if arch == "llama" and name.endswith("k_proj.weight"):
            t = rope_permute(t, kv_heads)
        if fuse_qkv and ".self_attn." in name and name.rsplit(".", 2)[-2] in ("q_proj", "k_proj", "v_proj"):
            layer = name.split(".")[2]
            kind = name.rsplit(".", 1)[1]
            parts = pending.setdefault((layer, kind), {})
            parts[name.rsplit(".", 2)[-2]] = t
            if len(parts) == 3:
                fused = np.concatenate([parts["q_proj"], parts["k_proj"], parts["v_proj"]], axis=0)
                w.add_tensor(f"blk.{layer}.attn_qkv.{kind}", np.ascontiguousarray(fused))
            continue
        new = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise SystemExit(f"{fixture_dir}: no GGUF name for {name}")
        w.add_tensor(new, np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    fixtures, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(name, name, False) for name in ARCH] + [("phi", "phi-fused", True)]
    for src, dst, fuse in jobs:
        tmp = out / f"{dst}.gguf.tmp"
        write(fixtures / src, tmp, fuse)
        tmp.replace(out / f"{dst}.gguf")


if __name__ == "__main__":
    main()
