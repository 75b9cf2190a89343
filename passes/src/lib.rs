//! Graph transforms, the pass manager that runs them, and the memory planner.
//!
//! A pass is a small named struct implementing [`Pass`]. The [`PassManager`] runs a pipeline of
//! them (a preset per `-O` level, or a list given by name), verifies the graph after each one
//! when asked, hands the graph to an observer after each pass (`--print-after`), and times them.

mod dce;
mod decoder_signature;
pub mod dispatch;
mod fuse;
mod infer_shapes;
mod manager;
pub mod plan;
mod recognize;
mod reorder;
pub mod rewrite;

pub use dce::DeadCodeElimination;
pub use decoder_signature::DecoderSignature;
pub use fuse::FuseEpilogues;
pub use infer_shapes::InferShapes;
pub use manager::{OptLevel, PASSES, PassManager, PassTiming};
pub use recognize::{Recognize, START_POS, SimplifyLayout};
pub use reorder::{ReorderForMemory, memory_order, peak};

use edgec_ir::{Graph, IrError};

/// Whether a pass changed the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

/// A graph transform. It must leave the graph valid (the verifier passes) and keep its meaning
/// (the interpreter gives the same outputs, within the pass's stated tolerance).
pub trait Pass {
    /// The name used by `--passes` and `--print-after`.
    fn name(&self) -> &'static str;
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    #[error("pass '{pass}': {error}")]
    Failed { pass: &'static str, error: IrError },
    #[error("the graph is invalid after pass '{pass}': {error}")]
    Invalid { pass: &'static str, error: IrError },
    #[error("the input graph is invalid: {0}")]
    InvalidInput(IrError),
    #[error("unknown pass '{name}'; the passes are: {known}")]
    UnknownPass { name: String, known: String },
}
