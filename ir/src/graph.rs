//! The graph: inputs, weights, state buffers and nodes in schedule order.

use crate::op::Op;
use crate::types::{DType, Dim, Symbol, SymbolId, TensorType};
use std::path::PathBuf;

/// A reference to a value. Every node produces exactly one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueRef {
    Input(u32),
    Weight(u32),
    State(u32),
    Node(u32),
}

/// A run-time input of the graph, supplied by the caller on every call.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub name: String,
    pub ty: TensorType,
}

/// Persistent state (a KV cache): lives across calls, zeroed when a session starts, written only
/// through [`Op::CacheWrite`].
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub name: String,
    pub ty: TensorType,
}

/// Which half of a rotary table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopePart {
    Cos,
    Sin,
}

/// How rope frequencies are rescaled for long contexts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama 3.1's scheme: low frequencies divided by `factor`, high ones kept, a smooth ramp
    /// between.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_positions: u64 },
}

/// Where a weight's bytes come from. Weights are never read whole at compile time: they are
/// materialized tensor by tensor when the weights file is written or the interpreter needs one.
#[derive(Clone, Debug, PartialEq)]
pub enum WeightSource {
    /// Little-endian elements of `dtype` at `offset` in `path`, row-major, with the weight's shape.
    File { path: PathBuf, offset: u64, dtype: DType },
    /// A rotary table `[positions, rotary_dim / 2]` computed at compile time:
    /// `inv_freq[i] = theta^(-2i / rotary_dim)`, rescaled by `scaling`, then
    /// `cos|sin(position * inv_freq[i])`.
    Rope { part: RopePart, theta: f64, rotary_dim: u32, scaling: RopeScaling },
    /// Small literal values, stored as f32 and converted to the weight's dtype.
    Literal(Vec<f32>),
}

/// A constant tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    pub name: String,
    pub ty: TensorType,
    pub source: WeightSource,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub args: Vec<ValueRef>,
    pub ty: TensorType,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub name: String,
    pub value: ValueRef,
}

/// A whole model. `nodes` is in schedule order: every node's operands are defined before it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    pub symbols: Vec<Symbol>,
    pub inputs: Vec<Input>,
    pub weights: Vec<Weight>,
    pub states: Vec<State>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<Output>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Graph::default() }
    }

    pub fn add_symbol(&mut self, name: impl Into<String>, max: u64) -> Dim {
        self.symbols.push(Symbol { name: name.into(), max });
        Dim::Sym(SymbolId(self.symbols.len() as u32 - 1))
    }

    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueRef {
        self.inputs.push(Input { name: name.into(), ty });
        ValueRef::Input(self.inputs.len() as u32 - 1)
    }

    pub fn add_weight(&mut self, name: impl Into<String>, ty: TensorType, source: WeightSource) -> ValueRef {
        self.weights.push(Weight { name: name.into(), ty, source });
        ValueRef::Weight(self.weights.len() as u32 - 1)
    }

    pub fn add_state(&mut self, name: impl Into<String>, ty: TensorType) -> ValueRef {
        self.states.push(State { name: name.into(), ty });
        ValueRef::State(self.states.len() as u32 - 1)
    }

    /// Appends a node, inferring its type from the op and operands.
    pub fn add_node(&mut self, op: Op, args: Vec<ValueRef>) -> Result<ValueRef, crate::IrError> {
        let arg_types: Vec<&TensorType> = args.iter().map(|&a| self.try_type_of(a)).collect::<Result<_, _>>()?;
        let ty = crate::infer::infer_type(self, &op, &arg_types)?;
        self.nodes.push(Node { op, args, ty });
        Ok(ValueRef::Node(self.nodes.len() as u32 - 1))
    }

    pub fn add_output(&mut self, name: impl Into<String>, value: ValueRef) {
        self.outputs.push(Output { name: name.into(), value });
    }

    /// The type of a value. Panics on a dangling reference: use on verified graphs.
    pub fn type_of(&self, v: ValueRef) -> &TensorType {
        self.try_type_of(v).expect("dangling value reference")
    }

    pub fn try_type_of(&self, v: ValueRef) -> Result<&TensorType, crate::IrError> {
        let ty = match v {
            ValueRef::Input(i) => self.inputs.get(i as usize).map(|x| &x.ty),
            ValueRef::Weight(i) => self.weights.get(i as usize).map(|x| &x.ty),
            ValueRef::State(i) => self.states.get(i as usize).map(|x| &x.ty),
            ValueRef::Node(i) => self.nodes.get(i as usize).map(|x| &x.ty),
        };
        ty.ok_or_else(|| crate::IrError::new(format!("reference to undefined value {v:?}")))
    }

    /// A human-readable name for diagnostics: `%3`, or the input/weight/state name.
    pub fn value_name(&self, v: ValueRef) -> String {
        match v {
            ValueRef::Input(i) => self.inputs.get(i as usize).map_or(format!("input#{i}"), |x| x.name.clone()),
            ValueRef::Weight(i) => self.weights.get(i as usize).map_or(format!("weight#{i}"), |x| x.name.clone()),
            ValueRef::State(i) => self.states.get(i as usize).map_or(format!("state#{i}"), |x| x.name.clone()),
            ValueRef::Node(i) => format!("%{i}"),
        }
    }

    /// The upper bound of a dim: its value, or its symbol's `max`.
    pub fn dim_max(&self, d: Dim) -> u64 {
        match d {
            Dim::Const(n) => n,
            Dim::Sym(s) => self.symbols[s.0 as usize].max,
        }
    }

    /// Elements of a type at the symbols' upper bounds, with overflow checked.
    pub fn max_elements(&self, ty: &TensorType) -> Option<u64> {
        ty.shape.0.iter().try_fold(1u64, |acc, &d| acc.checked_mul(self.dim_max(d)))
    }

    /// Bytes of a type at the symbols' upper bounds, with overflow checked.
    pub fn max_bytes(&self, ty: &TensorType) -> Option<u64> {
        self.max_elements(ty)?.checked_mul(ty.dtype.size())
    }

    /// Keeps the nodes for which `keep[i]` is true and renumbers references to them.
    /// A kept node must not use a removed one.
    pub fn retain_nodes(&mut self, keep: &[bool]) {
        assert_eq!(keep.len(), self.nodes.len());
        let new_index = renumbering(keep);
        let remap = |v: &mut ValueRef| {
            if let ValueRef::Node(i) = v {
                let n = new_index[*i as usize];
                assert!(n != u32::MAX, "retain_nodes: a kept value uses removed node %{i}");
                *i = n;
            }
        };
        let mut i = 0;
        self.nodes.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        self.nodes.iter_mut().flat_map(|n| n.args.iter_mut()).for_each(remap);
        self.outputs.iter_mut().map(|o| &mut o.value).for_each(remap);
    }

    /// Keeps the weights for which `keep[i]` is true and renumbers references to them.
    /// A kept node must not use a removed weight.
    pub fn retain_weights(&mut self, keep: &[bool]) {
        assert_eq!(keep.len(), self.weights.len());
        let new_index = renumbering(keep);
        let remap = |v: &mut ValueRef| {
            if let ValueRef::Weight(i) = v {
                let n = new_index[*i as usize];
                assert!(n != u32::MAX, "retain_weights: a kept value uses removed weight #{i}");
                *i = n;
            }
        };
        let mut i = 0;
        self.weights.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        self.nodes.iter_mut().flat_map(|n| n.args.iter_mut()).for_each(remap);
        self.outputs.iter_mut().map(|o| &mut o.value).for_each(remap);
    }
}

/// New indices for the kept items (`u32::MAX` for removed ones).
fn renumbering(keep: &[bool]) -> Vec<u32> {
    let mut next = 0u32;
    keep.iter()
        .map(|&k| {
            if k {
                next += 1;
                next - 1
            } else {
                u32::MAX
            }
        })
        .collect()
}
