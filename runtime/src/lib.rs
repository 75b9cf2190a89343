//! edgec's on-device runtime: maps a compiled model's weights, owns its arena and KV state,
//! runs its parallel regions on a thread pool, samples tokens, and exposes all of it to Rust
//! ([`Session`]) and C (`include/edgec_runtime.h`). Standard library only.

// Data from a file or a caller never meets unwrap()/expect() (issue 9); `scripts/test` runs
// clippy, which enforces this. Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod abi;
pub mod capi;
pub mod cpu;
pub mod driver_output;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod mem;
pub mod pool;
pub mod sample;
pub mod session;
pub mod tokenizer;
pub mod weights;

pub use error::Error;
pub use sample::{Sampler, SamplerConfig};
pub use session::{Generation, Model, Session, SessionOptions, StopReason};
pub use tokenizer::Tokenizer;
pub use weights::{LoadMode, Weights};
