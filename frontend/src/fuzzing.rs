//! Entry points of the fuzz targets (`fuzz/fuzz_targets/`), here so that `cargo test` can
//! replay the committed corpus through exactly the same code (`tests/fuzz_corpus.rs`). Each
//! takes arbitrary bytes and must return, never panic, hang or allocate without bound; errors
//! are the expected outcome.

// The fuzz oracle: a failed expectation here is a finding, so it panics on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::checkpoint::{Checkpoint, parse_header};
use crate::config::DecoderConfig;
use crate::gguf::{GgufFile, GgufWeights};
use crate::onnx::{ImportOptions, OnnxModel, import};
use crate::{LoadOptions, decoder};
use std::path::Path;

/// The config paired with fuzzed safetensors bytes: a Llama small enough that a complete
/// checkpoint for it is a few kilobytes of seed (`fuzz/seeds.py` writes one).
pub const LLAMA_CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
 "hidden_size": 8, "intermediate_size": 12, "num_attention_heads": 2, "num_key_value_heads": 1,
 "head_dim": 4, "num_hidden_layers": 1, "vocab_size": 16, "max_position_embeddings": 32,
 "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": false}"#;

fn opts() -> LoadOptions {
    LoadOptions { max_context: 16, max_tokens: 4 }
}

/// ONNX: decode, then import into IR (verified). External data resolves under a directory
/// that does not exist, so the fuzzer never reads real files.
/// Returns whether a graph came out (the seeds' test checks they reach that far).
pub fn onnx(data: &[u8]) -> bool {
    let path = Path::new("/nonexistent-edgec-fuzz/model.onnx");
    let Ok(m) = OnnxModel::from_bytes(path, bytes::Bytes::copy_from_slice(data)) else { return false };
    import(&m, &ImportOptions { max_seq: 8, ..Default::default() }).is_ok()
}

/// A safetensors file's header and offsets, then the decoder graph with [`LLAMA_CONFIG`].
pub fn safetensors(data: &[u8]) -> bool {
    let path = Path::new("model.safetensors");
    let Ok(tensors) = parse_header(data, path, "model.safetensors") else { return false };
    let json: serde_json::Value = serde_json::from_str(LLAMA_CONFIG).expect("fixture config");
    let cfg = DecoderConfig::from_json(Path::new("config.json"), &json).expect("fixture config");
    let ckpt = Checkpoint { tensors: tensors.into_iter().collect(), label: "model.safetensors".into() };
    decoder::build(&cfg, decoder::Weights::Checkpoint(&ckpt), &opts()).is_ok()
}

/// GGUF: the header, the `llama` mapping onto a decoder graph, and the tokenizer metadata.
pub fn gguf(data: &[u8]) -> bool {
    let Ok(file) = GgufFile::parse(Path::new("model.gguf"), data) else { return false };
    let _ = file.tokenizer();
    let Ok(cfg) = file.decoder_config() else { return false };
    decoder::build(&cfg, decoder::Weights::Lookup(&GgufWeights { file: &file, cfg: &cfg }), &opts()).is_ok()
}
