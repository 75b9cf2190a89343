//! The runtime's one error type: a plain enum whose messages say what is wrong.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in the runtime. Each variant's `Display` names the offending
/// value and the limit it broke.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// The file could not be opened, measured, mapped or read.
    Io { path: PathBuf, message: String },
    /// The weights file is not the one this model was compiled with, or is damaged.
    Weights { path: PathBuf, problem: String },
    /// The model object was built against another ABI version.
    AbiVersion { found: u32, expected: u32 },
    /// The model's `ModelInfo` is unusable (e.g. a zero vocabulary).
    BadModelInfo(String),
    /// An input id is negative (C API) or not below the vocabulary size.
    TokenOutOfRange { id: i64, index: usize, vocab: u32 },
    /// Running the tokens would go past the KV cache.
    ContextOverflow { position: u32, tokens: usize, max_context: u32 },
    /// `generate` needs at least one prompt token to produce the first logits row.
    EmptyPrompt,
    /// The compiled object returned a nonzero status.
    ModelStatus { status: i32, position: u32, tokens: u32 },
    /// An allocation of the arena, the state or a weights buffer failed.
    OutOfMemory { what: &'static str, bytes: u64 },
    /// A caller-supplied argument is invalid (sampler settings, C API arguments, ...).
    InvalidArgument(String),
    /// A file written by the C driver (`edgec_driver.c`) is malformed.
    BadDriverOutput(String),
}

impl Error {
    /// The C API status code for this error (always negative; see `edgec_runtime.h`).
    pub fn code(&self) -> i32 {
        use crate::capi::*;
        match self {
            Error::Io { .. } => EDGEC_ERR_IO,
            Error::Weights { .. } => EDGEC_ERR_WEIGHTS,
            Error::AbiVersion { .. } | Error::BadModelInfo(_) => EDGEC_ERR_MODEL_INFO,
            Error::TokenOutOfRange { .. } => EDGEC_ERR_TOKEN_ID,
            Error::ContextOverflow { .. } => EDGEC_ERR_CONTEXT_OVERFLOW,
            Error::EmptyPrompt | Error::InvalidArgument(_) | Error::BadDriverOutput(_) => EDGEC_ERR_INVALID_ARGUMENT,
            Error::ModelStatus { .. } => EDGEC_ERR_MODEL_STATUS,
            Error::OutOfMemory { .. } => EDGEC_ERR_OUT_OF_MEMORY,
        }
    }
}

/// The name of a model status code (`abi::STATUS_*`).
pub fn status_name(status: i32) -> &'static str {
    use crate::abi::*;
    match status {
        STATUS_OK => "ok",
        STATUS_BAD_TOKEN_COUNT => "bad token count",
        STATUS_CONTEXT_OVERFLOW => "context overflow",
        STATUS_BAD_TOKEN_ID => "bad token id",
        STATUS_NULL_ARGUMENT => "null argument",
        _ => "unknown status",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Weights { path, problem } => {
                write!(f, "weights file {}: {problem}", path.display())
            }
            Error::AbiVersion { found, expected } => {
                write!(f, "model object has ABI version {found}, this runtime implements version {expected}")
            }
            Error::BadModelInfo(what) => write!(f, "invalid model info: {what}"),
            Error::TokenOutOfRange { id, index, vocab } => {
                write!(f, "token id {id} at index {index} is out of range (vocab {vocab})")
            }
            Error::ContextOverflow { position, tokens, max_context } => {
                write!(f, "context overflow: position {position} + {tokens} tokens > max context {max_context}")
            }
            Error::EmptyPrompt => write!(f, "generate needs a non-empty prompt"),
            Error::ModelStatus { status, position, tokens } => write!(
                f,
                "model forward returned status {status} ({}) for {tokens} tokens at position {position}",
                status_name(*status)
            ),
            Error::OutOfMemory { what, bytes } => {
                write!(f, "out of memory allocating {bytes} bytes for the {what}")
            }
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::BadDriverOutput(what) => write!(f, "bad driver output: {what}"),
        }
    }
}

impl std::error::Error for Error {}
