//! edgec, the driver: reads a model, runs the pass pipeline, plans memory, emits an object, a
//! weights file and a C header, and runs compiled models on the host or under an emulator.
//!
//! The CLI (`src/main.rs`) is a thin layer over this library.

pub mod atomic;
pub mod compile;
pub mod cross;
pub mod host;
pub mod manifest;
pub mod run;

pub use compile::{compile, CompileRequest, Compiled};
