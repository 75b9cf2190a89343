//! edgec's graph IR.
//!
//! A [`Graph`] holds typed values: run-time inputs, constant weights (held by reference, never
//! loaded whole), persistent state buffers (the KV cache) and nodes in schedule order. It has a
//! stable text form ([`text`]), a [`verify`]er and a slow, obviously correct [`interp`]reter that
//! is the oracle for every pass and kernel test. The IR knows no model file format.

#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod op;
pub mod quant;
pub mod text;
pub mod types;
pub mod verify;
pub mod weights;

pub use graph::{
    BlockFormat, Graph, Input, Node, Output, RopePart, RopeScaling, State, Transform, ValueRef, Weight, WeightSource,
};
pub use op::{BinaryOp, LinearOperands, Op, ReduceOp, UnaryOp};
pub use quant::Storage;
pub use types::{DType, Dim, Shape, Symbol, SymbolId, TensorType};

/// An error about a graph: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IrError {
    pub message: String,
}

impl IrError {
    pub fn new(message: impl Into<String>) -> IrError {
        IrError { message: message.into() }
    }
}
