//! Compiles two fixture models into static libraries, one with its weights in a file and an
//! f16 KV cache, one with int8 weights embedded (qwen3: its greedy ids match PyTorch's with
//! int8 weights and activations; llama3's diverge at a near tie); edgec::Build prints the link
//! lines and caches by content hash.

use std::path::Path;

fn main() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    edgec::Build::new()
        .model(fixtures.join("llama"))
        .name("llama")
        .max_context(32)
        .kv_dtype(edgec::KvDtype::F16)
        .compile();
    edgec::Build::new()
        .model(fixtures.join("qwen3"))
        .name("qwen3")
        .max_context(32)
        .quant(edgec::QuantPreset::Q8)
        .embed_weights(true)
        .compile();
}
