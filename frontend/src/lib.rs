//! edgec's model readers. For now: HuggingFace safetensors checkpoints of decoder LLMs
//! (`config.json` + `model.safetensors` or a sharded `model.safetensors.index.json`).
//!
//! Weights are never read: each becomes a [`edgec_ir::WeightSource::File`] reference to its
//! byte range, in the stored dtype, while the graph sees it as f32.

// Data from a file or a caller never meets unwrap()/expect() (issue 9); `scripts/test` runs
// clippy, which enforces this. Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod checkpoint;
pub mod config;
mod decoder;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gguf;
pub mod limits;
pub mod onnx;

pub use checkpoint::{Checkpoint, TensorEntry};
pub use config::{Activation, Biases, DecoderConfig, FAMILIES, Family, MlpKind, NormKind, SlidingRule};
pub use error::FrontendError;
pub use gguf::{GgufFile, GgufTokenizer, load_gguf};

use std::path::Path;

/// Sizes the compiled graph is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// KV cache rows: the most positions a session can hold.
    pub max_context: u64,
    /// The most tokens one forward call takes (the `seq` symbol's bound); `<= max_context`.
    pub max_tokens: u64,
}

impl LoadOptions {
    pub fn validate(&self) -> Result<(), FrontendError> {
        if self.max_context == 0 || self.max_tokens == 0 {
            return Err(FrontendError::Options(format!(
                "max_context ({}) and max_tokens ({}) must be positive",
                self.max_context, self.max_tokens
            )));
        }
        if self.max_tokens > self.max_context {
            return Err(FrontendError::Options(format!(
                "max_tokens {} exceeds max_context {}",
                self.max_tokens, self.max_context
            )));
        }
        if self.max_context > i32::MAX as u64 {
            return Err(FrontendError::Options(format!(
                "max_context {} does not fit the i32 positions",
                self.max_context
            )));
        }
        Ok(())
    }
}

/// Whether `path` is to be read as a GGUF file: its magic, or its extension (a `.gguf` file
/// without the magic then gets the GGUF reader's error, naming the bytes found).
pub fn is_gguf(path: &Path) -> bool {
    path.is_file() && (gguf::is_gguf(path) || path.extension().is_some_and(|e| e == "gguf"))
}

/// Reads a model and builds its graph: a GGUF file (recognized by its magic) or a HuggingFace
/// checkpoint directory.
pub fn load_model(path: &Path, opts: &LoadOptions) -> Result<Graph, FrontendError> {
    if is_gguf(path) { load_gguf(path, opts) } else { load_checkpoint(path, opts) }
}

/// Reads a HuggingFace checkpoint directory and builds its graph: inputs `ids: i32[seq]`,
/// `pos: i32[]`; output `logits: f32[seq, vocab]`; one K and one V cache state per layer.
pub fn load_checkpoint(dir: &Path, opts: &LoadOptions) -> Result<Graph, FrontendError> {
    opts.validate()?;
    let cfg = DecoderConfig::load(&dir.join("config.json"))?;
    let ckpt = Checkpoint::open(dir)?;
    decoder::build(&cfg, decoder::Weights::Checkpoint(&ckpt), opts)
}

/// Builds the graph a checkpoint with this config would give, from the config alone: every
/// weight is a placeholder reference (an empty path), so the graph can be typed, counted and
/// memory-planned but not run or compiled. Used by `edgec inspect`.
pub fn build_from_config(cfg: &DecoderConfig, opts: &LoadOptions) -> Result<Graph, FrontendError> {
    opts.validate()?;
    decoder::build(cfg, decoder::Weights::Placeholder, opts)
}

/// The tensors a HuggingFace checkpoint with this config holds (name and shape, each once, in
/// the order the builder asks for them): what [`load_checkpoint`] will look up. Rope tables
/// are not included (the compiler computes them).
pub fn checkpoint_tensors(cfg: &DecoderConfig) -> Result<Vec<(String, Vec<u64>)>, FrontendError> {
    let seen = std::cell::RefCell::new(Vec::new());
    let opts = LoadOptions { max_context: 1, max_tokens: 1 };
    decoder::build(cfg, decoder::Weights::Record(&seen), &opts)?;
    Ok(seen.into_inner())
}

use edgec_ir::Graph;
