//! Pattern recognition: rewrite primitive subgraphs (as ONNX exports spell them) into the
//! high-level ops the backend has kernels for, so an imported model compiles to the same lean
//! kernel graph as one built from a checkpoint.
//!
//! Each rule is a small named [`Rule`]; the `recognize` pass runs them all to a fixpoint, then
//! `simplify-layout` removes the reshapes and transposes the rules leave around their results.
//! Rules only fire on patterns they can prove equal (constants are read and checked, e.g. a
//! causal mask or a rotary table), so a graph they don't understand is left as it was.

mod activation;
mod attention;
mod layout;
mod matmul;
mod norm;
mod rope;

use crate::rewrite::{Fired, Rule, rewrite_to_fixpoint};
use crate::{Changed, Pass, PassError};
use edgec_ir::{BinaryOp, Dim, Graph, Node, Op, UnaryOp, ValueRef};

pub use rope::START_POS;

/// Every recognition rule, in the order they are tried at a node. They match the layout
/// spelled by the exporter (and by each other's output); layout clean-up comes after.
const RULES: &[&dyn Rule] = &[
    &norm::RmsNormRule,
    &norm::LayerNormRule,
    &activation::SiluRule,
    &activation::GeluTanhRule,
    &activation::GeluErfRule,
    &rope::RopeRule,
    &attention::AttentionRule,
    &matmul::WeightLayoutRule,
];

/// Layout clean-up: collapse and sink reshapes and transposes.
const LAYOUT_RULES: &[&dyn Rule] = &[
    &layout::ReshapeOfReshape,
    &layout::TransposeOfTranspose,
    &layout::NoopLayout,
    &layout::SinkReshape,
    &matmul::SplitFusedProjectionRule,
];

/// Sweeps before giving up on a fixpoint (each sweep is linear in the graph).
const MAX_SWEEPS: usize = 32;

/// Rewrites primitive subgraphs into `rms_norm`, `layer_norm`, `silu`, `gelu_tanh`, `gelu`, `rope`,
/// `attention` and `transpose_b` matmuls.
pub struct Recognize;

impl Pass for Recognize {
    fn name(&self) -> &'static str {
        "recognize"
    }

    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        run_rules(self.name(), g, RULES)
    }
}

/// Removes reshapes and transposes that cancel, moves reshapes that only add or drop unit
/// dims below elementwise ops so they meet and cancel, and turns column slices of a matmul
/// into matmuls by weight rows.
pub struct SimplifyLayout;

impl Pass for SimplifyLayout {
    fn name(&self) -> &'static str {
        "simplify-layout"
    }

    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        run_rules(self.name(), g, LAYOUT_RULES)
    }
}

fn run_rules(pass: &'static str, g: &mut Graph, rules: &[&dyn Rule]) -> Result<Changed, PassError> {
    let fired: Fired = rewrite_to_fixpoint(g, rules, MAX_SWEEPS).map_err(|error| PassError::Failed { pass, error })?;
    Ok(if fired.iter().any(|&(_, n)| n > 0) { Changed::Yes } else { Changed::No })
}

/// The operands of `n` if it is the binary op `op`.
pub(crate) fn binary(n: &Node, op: BinaryOp) -> Option<(ValueRef, ValueRef)> {
    match (&n.op, n.args.as_slice()) {
        (Op::Binary(o), &[a, b]) if *o == op => Some((a, b)),
        _ => None,
    }
}

/// The operand of `n` if it is the unary op `op`.
fn unary(n: &Node, op: UnaryOp) -> Option<ValueRef> {
    match (&n.op, n.args.as_slice()) {
        (Op::Unary(o), &[a]) if *o == op => Some(a),
        _ => None,
    }
}

/// Tries `f(a, b)` then `f(b, a)`: matching a commutative op's operands in either order.
pub(crate) fn commuted<T>(
    (a, b): (ValueRef, ValueRef),
    mut f: impl FnMut(ValueRef, ValueRef) -> Option<T>,
) -> Option<T> {
    f(a, b).or_else(|| f(b, a))
}

/// A shape as `[rows, features]` for the row-wise ops: `rows` is the product of the dims up to
/// and including the last symbolic one (or all but the last when none is symbolic), and
/// `features` the product of the rest. `None` when the rows are not one IR dim (e.g. `2 * seq`).
fn rows_features(dims: &[Dim]) -> Option<(Dim, u64)> {
    let split = match dims.iter().rposition(|d| d.as_const().is_none()) {
        Some(i) => i + 1,
        None => dims.len().checked_sub(1)?,
    };
    let features = dims[split..].iter().try_fold(1u64, |acc, d| acc.checked_mul(d.as_const()?))?;
    let mut rows = Dim::Const(1);
    for &d in &dims[..split] {
        rows = match (rows, d) {
            (Dim::Const(1), d) | (d, Dim::Const(1)) => d,
            (Dim::Const(a), Dim::Const(b)) => Dim::Const(a.checked_mul(b)?),
            _ => return None,
        };
    }
    Some((rows, features))
}
