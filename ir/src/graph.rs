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
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_positions: u64,
    },
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
    /// Block-quantized elements at `offset` in `path` (ggml's layouts, see [`BlockFormat`]),
    /// row-major with the weight's shape: the innermost dim is a multiple of the block size and
    /// each row is its blocks in order. Dequantized to the weight's dtype when materialized.
    Blocks { path: PathBuf, offset: u64, format: BlockFormat },
}

/// A block-quantized storage format, as ggml defines it (`ggml-common.h`): blocks of
/// [`BlockFormat::BLOCK`] consecutive elements of a row, each with its own scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// `block_q8_0`: f16 `d`, 32 × i8 `q`; `x = q * d`. 34 bytes.
    Q8_0,
    /// `block_q4_0`: f16 `d`, 16 bytes of nibbles; element `j < 16` is the low nibble of byte
    /// `j`, element `j + 16` its high nibble; `x = (q - 8) * d`. 18 bytes.
    Q4_0,
    /// `block_q4_1`: f16 `d`, f16 `m`, 16 bytes of nibbles laid out as in Q4_0; `x = q * d + m`.
    /// 20 bytes.
    Q4_1,
    /// `block_q4_K`: 256 elements in 8 sub-blocks of 32, each with a 6-bit scale and min
    /// (12 packed bytes) under f16 `d` and `dmin`; 128 bytes of nibbles. 144 bytes.
    Q4K,
    /// `block_q5_K`: as Q4_K plus a fifth bit per element (32 bytes). 176 bytes.
    Q5K,
    /// `block_q6_K`: 256 elements, 6 bits each (128 low-nibble + 64 high-bit bytes), 16
    /// sub-blocks of 16 with an i8 scale, under f16 `d`. 210 bytes.
    Q6K,
}

impl BlockFormat {
    pub const ALL: [BlockFormat; 6] =
        [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q4K, BlockFormat::Q5K, BlockFormat::Q6K];

    /// Elements per block (a row is whole blocks).
    pub fn block(self) -> u64 {
        match self {
            BlockFormat::Q8_0 | BlockFormat::Q4_0 | BlockFormat::Q4_1 => 32,
            BlockFormat::Q4K | BlockFormat::Q5K | BlockFormat::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        match self {
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q4K => 144,
            BlockFormat::Q5K => 176,
            BlockFormat::Q6K => 210,
        }
    }

    /// The name used by the text form (`q8_0`, `q4_0`, `q4_1`, `q4_k`, `q5_k`, `q6_k`).
    pub fn name(self) -> &'static str {
        match self {
            BlockFormat::Q8_0 => "q8_0",
            BlockFormat::Q4_0 => "q4_0",
            BlockFormat::Q4_1 => "q4_1",
            BlockFormat::Q4K => "q4_k",
            BlockFormat::Q5K => "q5_k",
            BlockFormat::Q6K => "q6_k",
        }
    }

    pub fn from_name(s: &str) -> Option<BlockFormat> {
        BlockFormat::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Bytes of `elements` elements (a multiple of [`BlockFormat::block`]), overflow checked.
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        if !elements.is_multiple_of(self.block()) {
            return None;
        }
        (elements / self.block()).checked_mul(self.block_bytes())
    }
}

/// A step applied to a weight's values after its source is read, in order. Recorded in the
/// graph (and its text form) rather than done by a frontend, so weights stay references until
/// they are materialized, tensor by tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Views the values as a row-major tensor of `dims` (whose product is the element count)
    /// and permutes its axes: axis `i` of the result is axis `perm[i]` of the view. The result
    /// is flattened row-major back into the weight's shape. A matrix transpose is
    /// `dims=[R, C] perm=[1, 0]`; undoing GGUF's Q/K rope row order is
    /// `dims=[heads, head_dim / 2, 2, cols] perm=[0, 2, 1, 3]`.
    Permute { dims: Vec<u64>, perm: Vec<u32> },
    /// Views the values as `rows` equal rows and keeps rows `start..start + len`: one part of
    /// a fused projection (Phi-3's `qkv_proj` read through a transpose, split into q, k and
    /// v). The only transform that changes the element count. Printed `rows 64..128 of 192`.
    Rows { rows: u64, start: u64, len: u64 },
    /// Stores the values in the weights file as `Storage` (e.g. int4 groups), while the graph
    /// still sees f32 values: those the stored bytes dequantize to
    /// ([`crate::quant::decode`]). Only as the last transform. Printed `quantize q4_g32`.
    Quantize(crate::quant::Storage),
}

/// A constant tensor: its source, then `transforms` applied in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    pub name: String,
    pub ty: TensorType,
    pub source: WeightSource,
    pub transforms: Vec<Transform>,
    /// Per-column importance for the quantizer (`cols` values ≥ 0, e.g. the mean square of
    /// each input feature of the matmul this weight multiplies): a trailing `quantize` to a
    /// searched format (`q4s_gG`) minimises the squared error weighted by it instead of the
    /// plain squared error. It changes which codes are stored, never the layout; set by
    /// [`crate::quant::apply_preset_with`], not printed in the text form.
    pub importance: Option<std::sync::Arc<[f32]>>,
}

impl Weight {
    /// A weight read straight from its source.
    pub fn new(name: impl Into<String>, ty: TensorType, source: WeightSource) -> Weight {
        Weight { name: name.into(), ty, source, transforms: Vec::new(), importance: None }
    }

    /// How the weights file stores this weight: its trailing `quantize`, or f32.
    pub fn storage(&self) -> crate::quant::Storage {
        match self.transforms.last() {
            Some(Transform::Quantize(s)) => *s,
            _ => crate::quant::Storage::F32,
        }
    }

    /// The transforms that change values (all but a trailing `quantize`).
    pub fn value_transforms(&self) -> &[Transform] {
        match self.transforms.last() {
            Some(Transform::Quantize(_)) => &self.transforms[..self.transforms.len() - 1],
            _ => &self.transforms,
        }
    }
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
        self.weights.push(Weight::new(name, ty, source));
        ValueRef::Weight(self.weights.len() as u32 - 1)
    }

    /// Adds a weight whose values are its source's after `transforms`.
    pub fn add_weight_transformed(
        &mut self,
        name: impl Into<String>,
        ty: TensorType,
        source: WeightSource,
        transforms: Vec<Transform>,
    ) -> ValueRef {
        self.weights.push(Weight { name: name.into(), ty, source, transforms, importance: None });
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

    /// Bytes of a type at the symbols' upper bounds, with overflow checked ([`DType::bytes`];
    /// `None` also for a q8 type whose rows are not whole blocks).
    pub fn max_bytes(&self, ty: &TensorType) -> Option<u64> {
        let row = ty.shape.last().map_or(1, |d| self.dim_max(d));
        ty.dtype.bytes(self.max_elements(ty)?, row)
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
