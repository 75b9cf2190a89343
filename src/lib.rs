//! edgec, the driver: reads a model, runs the pass pipeline, plans memory, emits an object, a
//! weights file and a C header, and runs compiled models on the host or under an emulator.
//!
//! The CLI (`src/main.rs`) is a thin layer over this library.

// Data from a file or a caller never meets unwrap()/expect() (issue 9); `scripts/test` runs
// clippy, which enforces this. Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod atomic;
pub mod bench;
pub mod build;
pub mod calibrate;
pub mod chat;
pub mod compile;
pub mod cross;
pub mod graph_run;
pub mod host;
pub mod inspect;
pub mod manifest;
pub mod perplexity;
pub mod report;
pub mod run;
pub mod synth;
pub mod tokenizer;

pub use build::{Build, Built};
pub use compile::{CompileRequest, Compiled, Emit, Numerics, Packaging, compile, compile_with};
/// The choices a build script passes to [`Build::quant`], [`Build::kv_dtype`] and
/// [`Build::activations`].
pub use edgec_ir::quant::{Activations, KvDtype, Preset as QuantPreset};
