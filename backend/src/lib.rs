//! edgec's code generator.
//!
//! Turns a planned decoder graph into a native object (one Cranelift function per distinct
//! kernel plus the `NAME_forward` entry point and the `NAME_info` data symbol), a packed weights
//! file and a C header. The object imports nothing: memory and threads arrive through the
//! runtime's [`edgec_runtime::abi::Context`].
//!
//! Argument-block convention (shared by the entry point and every kernel): a kernel receives
//! `args`, an array of little-endian `u64` slots:
//!
//! | slot | meaning |
//! |---|---|
//! | 0 | `n_tokens` of this call |
//! | 1 | `pos` of this call |
//! | 2 | `rows`: run-time row count of the node (its result flattened to `[rows, last]`; for `cache_write`, rows of the written operand) |
//! | 3.. | one pointer per operand, in operand order, then the result pointer |
//!
//! Static facts (feature counts, head layout, epsilon, ...) are baked into the kernel as
//! constants; everything that varies per call or per layer comes through the block.

pub mod archive;
mod entry;
mod error;
mod generic;
mod header;
mod kernels;
pub mod math;
mod norm_quant;
mod object;
mod pack;
mod signature;
pub mod target;
mod weights_file;

pub use edgec_runtime::abi::ModelInfo;
pub use error::BackendError;
pub use header::{c_header, c_header_with};
pub use norm_quant::quantized_norms;
pub use object::{CompileOptions, emit_object, emit_object_with};
pub use signature::model_info;
pub use target::{ObjectFormat, Platform, SUPPORTED_TRIPLES, Target};
pub use weights_file::{WeightStat, WeightsLayout, layout_weights, write_weights, write_weights_with_stats};
