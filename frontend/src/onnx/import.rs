//! ONNX graph → edgec IR.
//!
//! The import has two halves:
//!
//! - **Folding** ([`super::fold`]): every node whose inputs are known at compile time
//!   (initializers, `Constant`s, and the *shapes* of run-time values) is evaluated here, over
//!   small dense i64 / f32 / bool tensors. Exporters' shape arithmetic (`Shape`, `Gather` on a
//!   shape, `Concat`, `Range`, `Slice`, `Unsqueeze`, `Equal`, `Where`, `Cast`, `CumSum`,
//!   `IsNaN`, `ConstantOfShape`, `Expand`, ...) and everything computed from positions alone
//!   (causal masks, rotary tables) never become IR.
//! - **Lowering**: the remaining nodes, the real math on run-time data, become IR ops
//!   (`matmul`, `batch_matmul`, elementwise ops, `softmax`, reductions, `layer_norm`, and the
//!   layout ops `reshape`, `transpose`, `expand`, `concat`, `slice`, `select`).
//!
//! **Symbolic dims.** Each `dim_param` of a graph input becomes an IR symbol bounded by
//! [`ImportOptions`]. The folder runs once per *probe*: an assignment of values to the symbols
//! (first the maxima, then two smaller values). A folded value's dims, or the shape arguments of
//! a lowered op, are then read off the probes: a dim equal at every probe is a constant, a dim
//! equal to a symbol's value at every probe is that symbol, anything else (e.g. `seq + 1`) is an
//! error, since the IR cannot express it. A folded value whose shape depends on a symbol (the
//! causal mask `[1, 1, seq, seq]`, the rotary table `[1, seq, d]`) becomes a literal weight
//! computed at the maxima plus `slice` ops cutting it to the run-time size; the import checks
//! that the value at every smaller probe is exactly that prefix, and refuses the graph
//! otherwise.
//!
//! **Types at run time.** Float tensors are f32 (f16/bf16 initializers stay references in their
//! stored dtype; bf16 graph inputs are refused, since f32 math would not round like bf16);
//! integers are `i32` (ONNX's i64 narrowed at the graph boundary; an integer constant used at
//! run time is an f32 literal with a `cast` to i32, refused beyond 2^24); a run-time boolean
//! (a graph input, a comparison, `Not`/`And`/`Or`, `IsNaN`, a cast to bool, a folded mask used
//! as data) is an f32 0/1 mask, consumed by `select`. `Importer::bools` remembers which f32
//! values are booleans, for `Cast`/`CastLike`.
//!
//! Initializers used by lowered ops stay references into the file (`WeightSource::File`); the
//! folder reads only small ones (at most [`FOLD_LIMIT`] elements). Model-local functions are
//! inlined first. Before anything is built, the whole model is checked: every op the importer
//! does not know is listed at once with its node's name, and a cyclic graph names the nodes of
//! the cycle. Every error names the node, its op and the opset.

use super::fold::{self, Data, Dense, R, attr_f, attr_i, attr_ints, attr_s, norm_axis};
use super::proto::{
    AttributeProto, DataType, FunctionProto, NodeProto, TensorProto, tensor_shape_proto::dimension, type_proto,
};
use super::{OnnxModel, TensorBytes};
use crate::FrontendError;
use edgec_ir::{
    BinaryOp, DType, Dim, Graph, Op, ReduceOp, Shape, SymbolId, TensorType, UnaryOp, ValueRef, WeightSource,
};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

mod attention;
mod nn;
mod resize;
mod rotary;
mod vision;

/// Bounds for the symbolic dims.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The upper bound of every symbolic dim (`dim_param`) not named in `symbols`.
    pub max_seq: u64,
    /// Bounds of particular symbolic dims, by their ONNX name.
    pub symbols: Vec<(String, u64)>,
    /// Graph inputs fixed at compile time, by their ONNX name: the graph is specialized to these
    /// values (folded like initializers) and they are not inputs of the IR graph. Lets an
    /// input that an op needs at compile time (axes, a target shape, split sizes, pads) be given.
    pub constants: Vec<(String, Dense)>,
    /// Graph inputs fixed at compile time to a function of another input's shape, by their
    /// ONNX name (see [`Derived`]).
    pub derived: Vec<(String, Derived)>,
}

/// A graph input whose value follows from another graph input's shape, at every probe.
#[derive(Clone, Debug, PartialEq)]
pub enum Derived {
    /// Integer ones of the shape of the named input (an attention mask without padding).
    OnesLike(String),
    /// The positions `0..len` along the last axis of the named input, repeated over its
    /// leading axes (position ids counted from an empty cache).
    PositionsOf(String),
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { max_seq: 128, symbols: Vec::new(), constants: Vec::new(), derived: Vec::new() }
    }
}

/// The default-domain opsets whose semantics the importer follows. Opsets 22–25 changed the
/// ops the importer knows only in their type lists (bfloat16, float8, float4, 2-bit types,
/// which it refuses) and, for Cast, in rounding to float8e8m0 only: the schemas' docs,
/// attributes and inputs are otherwise unchanged (`tests/onnx_conformance/opset_changes.py`
/// prints the comparison from onnx's own schemas).
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=25;

/// The most elements of an initializer the folder reads into memory.
/// The default of [`crate::limits::Limit::OnnxFoldElements`] (`--limit onnx-fold-elements`).
pub const FOLD_LIMIT: u64 = crate::limits::Limit::OnnxFoldElements.default_value();

/// The most nodes a graph may have once model-local functions are inlined (every call visited
/// counts too, so nested calls cannot expand exponentially). Real exports have tens of
/// thousands.
/// The default of [`crate::limits::Limit::OnnxNodes`] (`--limit onnx-nodes`).
pub const MAX_NODES: usize = crate::limits::Limit::OnnxNodes.default_value() as usize;

/// Ops lowered to IR when an input is only known at run time (all of [`fold::FOLDABLE`] are
/// also accepted when their inputs are constant).
pub const LOWERED: &[&str] = &[
    "Identity",
    "Dropout",
    "Cast",
    "CastLike",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "Exp",
    "Log",
    "Tanh",
    "Sigmoid",
    "Erf",
    "Abs",
    "IsNaN",
    "Relu",
    "Not",
    "And",
    "Or",
    "Equal",
    "Less",
    "Greater",
    "Trilu",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "MatMul",
    "Gemm",
    "Gather",
    "Reshape",
    "Flatten",
    "Unsqueeze",
    "Squeeze",
    "Transpose",
    "Concat",
    "Slice",
    "Split",
    "Expand",
    "Where",
    "LayerNormalization",
    "RMSNormalization",
    "Attention",
    "RotaryEmbedding",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Conv",
    "BatchNormalization",
    "Pad",
    "Resize",
    "CumSum",
    "HardSigmoid",
    "HardSwish",
    "LeakyRelu",
    "Gelu",
    "Clip",
    "Shape",
    "Size",
];

/// Imports the model's main graph.
pub fn import(m: &OnnxModel, opts: &ImportOptions) -> Result<Graph, FrontendError> {
    let fail = |msg: String| FrontendError::Onnx { path: m.path.clone(), message: msg };
    let opset = m.opset("").ok_or_else(|| fail("the model imports no default-domain opset".into()))?;
    if !(1..=super::versions::NEWEST_OPSET).contains(&opset) {
        return Err(fail(format!(
            "opset {opset} is not supported (edgec follows opsets {}..={})",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let nodes = inline_functions(&m.graph().node, &m.model.functions).map_err(fail)?;
    check_ops(&nodes, opset).map_err(fail)?;
    let followed = followed_opset(&nodes, opset).map_err(fail)?;
    let order = schedule(m, &nodes, opset).map_err(fail)?;
    let mut im = Importer::new(m, followed, opts).map_err(fail)?;
    for i in order {
        let n = &nodes[i];
        im.node(n).map_err(|e| fail(format!("{}: {e}", describe(n, opset))))?;
    }
    for o in &m.graph().output {
        let v = im.operand(&o.name).map_err(|e| fail(format!("output '{}': {e}", o.name)))?;
        let v = im.output_copy(v).map_err(|e| fail(format!("output '{}': {e}", o.name)))?;
        let name = sanitize(&o.name);
        im.g.add_output(name, v);
    }
    edgec_ir::verify::verify(&im.g)?;
    Ok(im.g)
}

/// The version of `op` in force at `opset` (the newest at or below it), if the op exists then.
fn version_at(op: &str, opset: i64) -> Option<i64> {
    let (_, vs) = super::versions::VERSIONS.iter().find(|(o, _)| *o == op)?;
    vs.iter().copied().filter(|&v| v <= opset).max()
}

/// The opset in [`OPSETS`] whose semantics the import follows: the model's own, or for a model
/// outside that range the nearest one, provided every node's op has the same version (the same
/// definition) at both. Otherwise the first node whose op differs is named.
fn followed_opset(nodes: &[NodeProto], opset: i64) -> Result<i64, String> {
    let followed = opset.clamp(*OPSETS.start(), *OPSETS.end());
    for n in nodes.iter().filter(|n| is_default_domain(&n.domain)) {
        let (at, ours) = (version_at(&n.op_type, opset), version_at(&n.op_type, followed));
        if at != ours || at.is_none() {
            let v = |x: Option<i64>| x.map_or("no version".to_string(), |v| format!("version {v}"));
            return Err(format!(
                "{}: {} has {} at opset {opset} but {} at opset {followed}, and edgec follows opsets {}..={}",
                describe(n, opset),
                n.op_type,
                v(at),
                v(ours),
                OPSETS.start(),
                OPSETS.end()
            ));
        }
    }
    Ok(followed)
}

/// `node 'NAME' (OP, opset N)`.
pub fn describe(n: &NodeProto, opset: i64) -> String {
    let name = if n.name.is_empty() { n.output.first().map_or("?", |s| s.as_str()) } else { &n.name };
    format!("node '{name}' ({}, opset {opset})", n.op_type)
}

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

/// Replaces calls to model-local functions by their bodies (recursively), renaming the body's
/// values under the calling node's name and resolving attribute references.
fn inline_functions(nodes: &[NodeProto], functions: &[FunctionProto]) -> Result<Vec<NodeProto>, String> {
    fn go(
        nodes: &[NodeProto],
        fs: &[FunctionProto],
        depth: usize,
        out: &mut Vec<NodeProto>,
        visited: &mut usize,
    ) -> Result<(), String> {
        for n in nodes {
            *visited += 1;
            let max = crate::limits::get(crate::limits::Limit::OnnxNodes);
            if *visited as u64 > max {
                return Err(format!(
                    "the graph has more than {max} nodes once its functions are inlined (--limit onnx-nodes=N raises it)"
                ));
            }
            let Some(f) = fs.iter().find(|f| f.name == n.op_type && f.domain == n.domain) else {
                out.push(n.clone());
                continue;
            };
            if depth > 16 {
                return Err(format!("function '{}' calls itself too deeply", f.name));
            }
            let prefix = format!(
                "{}::",
                if n.name.is_empty() { n.output.first().cloned().unwrap_or_default() } else { n.name.clone() }
            );
            let mut map: HashMap<&str, String> = HashMap::new();
            for (i, formal) in f.input.iter().enumerate() {
                map.insert(formal, n.input.get(i).cloned().unwrap_or_default());
            }
            for (i, formal) in f.output.iter().enumerate() {
                map.insert(formal, n.output.get(i).cloned().unwrap_or_default());
            }
            let rename = |v: &String| {
                if v.is_empty() {
                    String::new()
                } else {
                    map.get(v.as_str()).cloned().unwrap_or_else(|| format!("{prefix}{v}"))
                }
            };
            let mut body = Vec::new();
            for b in &f.node {
                let mut c = b.clone();
                c.name = format!("{prefix}{}", b.name);
                c.input = b.input.iter().map(rename).collect();
                c.output = b.output.iter().map(rename).collect();
                c.attribute = b
                    .attribute
                    .iter()
                    .filter_map(|a| {
                        if a.ref_attr_name.is_empty() {
                            return Some(a.clone());
                        }
                        let found: Option<&AttributeProto> = n
                            .attribute
                            .iter()
                            .find(|x| x.name == a.ref_attr_name)
                            .or_else(|| f.attribute_proto.iter().find(|x| x.name == a.ref_attr_name));
                        found.map(|x| AttributeProto { name: a.name.clone(), ..x.clone() })
                    })
                    .collect();
                body.push(c);
            }
            go(&body, fs, depth + 1, out, visited)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(nodes, functions, 0, &mut out, &mut 0)?;
    Ok(out)
}

/// A reader error as a message for a node's error, which names the file already.
fn without_path(e: FrontendError) -> String {
    match e {
        FrontendError::Onnx { message, .. } => message,
        e => e.to_string(),
    }
}

/// An initializer's element count, saturating (negative dims count as 0; `tensor_bytes`
/// rejects them).
fn init_elements(t: &TensorProto) -> u64 {
    t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d.max(0) as u64)).unwrap_or(u64::MAX)
}

/// Every node's op must be one the importer knows; all offenders are listed at once.
fn check_ops(nodes: &[NodeProto], opset: i64) -> Result<(), String> {
    let bad: Vec<String> = nodes
        .iter()
        .filter(|n| {
            !is_default_domain(&n.domain)
                || !(LOWERED.contains(&n.op_type.as_str()) || fold::FOLDABLE.contains(&n.op_type.as_str()))
        })
        .map(|n| {
            let d = if is_default_domain(&n.domain) { String::new() } else { format!("{}.", n.domain) };
            let name = if n.name.is_empty() { n.output.first().map_or("?", |s| s.as_str()) } else { &n.name };
            format!("node '{name}' ({d}{})", n.op_type)
        })
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    // The op kinds, domain-qualified outside the default domain.
    let mut kinds: Vec<&str> =
        bad.iter().filter_map(|b| b.rsplit_once(" (").and_then(|(_, k)| k.strip_suffix(')'))).collect();
    kinds.sort_unstable();
    kinds.dedup();
    Err(format!(
        "{} node(s) use ops edgec does not support at opset {opset} ({}): {}",
        bad.len(),
        kinds.join(", "),
        bad.join(", ")
    ))
}

/// A schedule of the nodes (the file's order when it is valid); refuses undefined values and
/// cycles, naming the nodes involved.
fn schedule(m: &OnnxModel, nodes: &[NodeProto], opset: i64) -> Result<Vec<usize>, String> {
    let g = m.graph();
    let mut known: HashSet<&str> = g.input.iter().map(|i| i.name.as_str()).collect();
    known.extend(g.initializer.iter().map(|t| t.name.as_str()));
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o, i).is_some() || known.contains(o.as_str()) {
                return Err(format!("{}: output '{o}' is defined twice", describe(n, opset)));
            }
        }
    }
    let deps: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            n.input
                .iter()
                .filter(|v| !v.is_empty() && !known.contains(v.as_str()))
                .map(|v| {
                    producer.get(v.as_str()).copied().ok_or_else(|| {
                        format!(
                            "{}: input '{v}' is not defined by any node, graph input or initializer",
                            describe(n, opset)
                        )
                    })
                })
                .collect()
        })
        .collect::<Result<_, _>>()?;
    // Kahn's algorithm, taking nodes in file order when possible.
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, d) in deps.iter().enumerate() {
        for &p in d {
            users[p].push(i);
        }
    }
    let mut ready: std::collections::BTreeSet<usize> = (0..nodes.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() == nodes.len() {
        return Ok(order);
    }
    // Walk back through unscheduled producers until a node repeats: that is a cycle.
    let stuck = || "the graph cannot be scheduled".to_string();
    let mut at = (0..nodes.len()).find(|&i| indegree[i] > 0).ok_or_else(stuck)?;
    let mut path = vec![at];
    loop {
        at = *deps[at].iter().find(|&&p| indegree[p] > 0).ok_or_else(stuck)?;
        if let Some(pos) = path.iter().position(|&p| p == at) {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.reverse();
            let names: Vec<String> =
                cycle.iter().chain(std::iter::once(&cycle[0])).map(|&i| describe(&nodes[i], opset)).collect();
            return Err(format!("the graph is cyclic: {}", names.join(" -> ")));
        }
        path.push(at);
    }
}

/// An identifier for the IR: invalid characters become `_`.
fn sanitize(s: &str) -> String {
    let mut out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' { c } else { '_' }).collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// What an ONNX value is during the import.
#[derive(Clone)]
enum Val {
    /// An initializer, by index: read by the folder when small, else a weight reference.
    Init(usize),
    /// Known at compile time: one tensor per probe.
    Const(Rc<Vec<Dense>>),
    /// Computed at run time by this IR value.
    Dyn(ValueRef),
}

struct Importer<'m> {
    m: &'m OnnxModel,
    opset: i64,
    g: Graph,
    /// Symbol values per probe; probe 0 is the maxima.
    probes: Vec<Vec<u64>>,
    vals: HashMap<String, Val>,
    /// IR values of materialized constants and initializers, by ONNX name.
    ir_of: HashMap<String, ValueRef>,
    names: HashSet<String>,
    scalars: HashMap<u32, ValueRef>,
    /// Run-time values that are ONNX booleans (held as f32 0/1, see the module doc).
    bools: HashSet<ValueRef>,
}

impl<'m> Importer<'m> {
    fn new(m: &'m OnnxModel, opset: i64, opts: &ImportOptions) -> R<Importer<'m>> {
        let graph = m.graph();
        let mut im = Importer {
            m,
            opset,
            g: Graph::new(sanitize(if graph.name.is_empty() { "onnx" } else { &graph.name })),
            probes: Vec::new(),
            vals: HashMap::new(),
            ir_of: HashMap::new(),
            names: HashSet::new(),
            scalars: HashMap::new(),
            bools: HashSet::new(),
        };
        for (i, t) in graph.initializer.iter().enumerate() {
            im.vals.insert(t.name.clone(), Val::Init(i));
        }
        let mut symbols: HashMap<String, Dim> = HashMap::new();
        let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let mut fixed: Vec<(String, Dense)> = Vec::new();
        for input in graph.input.iter().filter(|i| !inits.contains(i.name.as_str())) {
            if let Some((_, d)) = opts.constants.iter().find(|(n, _)| *n == input.name) {
                fixed.push((input.name.clone(), d.clone()));
                continue;
            }
            if opts.derived.iter().any(|(n, _)| *n == input.name) {
                continue;
            }
            let what = format!("graph input '{}'", input.name);
            let Some(type_proto::Value::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
                return Err(format!("{what} is not a tensor"));
            };
            if t.elem_type == DataType::Bfloat16 as i32 {
                return Err(format!("{what} is bfloat16: run-time floats are f32, which does not round like bfloat16"));
            }
            let kind = fold::kind_of(i64::from(t.elem_type)).map_err(|e| format!("{what}: {e}"))?;
            let dtype = if kind == "int" { DType::I32 } else { DType::F32 };
            let mut dims = Vec::new();
            for (axis, d) in t.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or_default().iter().enumerate() {
                dims.push(match &d.value {
                    Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::Const(*v as u64),
                    Some(dimension::Value::DimParam(p)) if !p.is_empty() => match symbols.get(p) {
                        Some(&d) => d,
                        None => {
                            let max = opts.symbols.iter().find(|(n, _)| n == p).map_or(opts.max_seq, |(_, m)| *m);
                            if max < 3 {
                                return Err(format!("symbolic dim '{p}' needs a bound of at least 3, got {max}"));
                            }
                            let d = im.g.add_symbol(sanitize(p), max);
                            symbols.insert(p.clone(), d);
                            d
                        }
                    },
                    _ => return Err(format!("{what}: axis {axis} has no size; give it a name (dim_param) or a value")),
                });
            }
            let name = im.unique(&input.name);
            let v = im.g.add_input(name, TensorType::new(dtype, Shape(dims)));
            if kind == "bool" {
                im.bools.insert(v);
            }
            im.vals.insert(input.name.clone(), Val::Dyn(v));
        }
        // Probes: the maxima, then two smaller values per symbol (never 1, which would
        // broadcast), different for different symbols where the bounds allow.
        let maxes: Vec<u64> = im.g.symbols.iter().map(|s| s.max).collect();
        im.probes.push(maxes.clone());
        if !maxes.is_empty() {
            let p1 = maxes.iter().enumerate().map(|(j, &m)| m.saturating_sub(1 + j as u64).max(2)).collect();
            let p2 = maxes.iter().enumerate().map(|(j, &m)| (m / 2 + 1 + j as u64).clamp(2, m)).collect();
            im.probes.push(p1);
            im.probes.push(p2);
        }
        for (name, d) in fixed {
            im.vals.insert(name, Val::Const(Rc::new(vec![d; im.probes.len()])));
        }
        for (name, how) in &opts.derived {
            let values = im.derive(how).map_err(|e| format!("graph input '{name}': {e}"))?;
            im.vals.insert(name.clone(), Val::Const(Rc::new(values)));
        }
        Ok(im)
    }

    /// A [`Derived`] input's value at every probe.
    fn derive(&self, how: &Derived) -> R<Vec<Dense>> {
        let (Derived::OnesLike(like) | Derived::PositionsOf(like)) = how;
        let Some(Val::Dyn(v)) = self.vals.get(like) else {
            return Err(format!("it follows '{like}', which is not a run-time graph input"));
        };
        let ty = self.g.type_of(*v);
        (0..self.nprobes())
            .map(|k| {
                let shape = self.probe_shape(&ty.shape, k);
                let n = fold::sized(&shape)?;
                let len = shape.last().copied().unwrap_or(1).max(1);
                let values = match how {
                    Derived::OnesLike(_) => vec![1; n],
                    Derived::PositionsOf(_) => (0..n).map(|i| (i % len) as i64).collect(),
                };
                Ok(Dense::ints(shape, values))
            })
            .collect()
    }

    fn unique(&mut self, raw: &str) -> String {
        let base = sanitize(raw);
        let mut name = base.clone();
        let mut k = 1;
        while !self.names.insert(name.clone()) {
            name = format!("{base}.{k}");
            k += 1;
        }
        name
    }

    fn nprobes(&self) -> usize {
        self.probes.len()
    }

    /// The dim whose value at each probe is `v[probe]`.
    fn fit_dim(&self, v: &[usize]) -> R<Dim> {
        if v.iter().all(|&x| x == v[0]) {
            return Ok(Dim::Const(v[0] as u64));
        }
        let hits: Vec<usize> =
            (0..self.g.symbols.len()).filter(|&j| self.probes.iter().zip(v).all(|(p, &x)| p[j] == x as u64)).collect();
        match hits.as_slice() {
            [j] => Ok(Dim::Sym(SymbolId(*j as u32))),
            [] => Err(format!(
                "a dim takes the values {v:?} for symbol values {:?}: not a constant or a symbol, which the IR cannot express",
                self.probes
            )),
            _ => Err("a dim matches several symbols; give them different bounds".into()),
        }
    }

    fn fit_shape(&self, per_probe: &[Vec<usize>]) -> R<Shape> {
        let rank = per_probe[0].len();
        if per_probe.iter().any(|s| s.len() != rank) {
            return Err(format!("the rank depends on the symbols: {per_probe:?}"));
        }
        (0..rank)
            .map(|a| self.fit_dim(&per_probe.iter().map(|s| s[a]).collect::<Vec<_>>()))
            .collect::<R<_>>()
            .map(Shape)
    }

    fn probe_shape(&self, shape: &Shape, k: usize) -> Vec<usize> {
        shape
            .dims()
            .iter()
            .map(|&d| match d {
                Dim::Const(n) => n as usize,
                Dim::Sym(s) => self.probes[k][s.0 as usize] as usize,
            })
            .collect()
    }

    fn shapes_of(&self, v: ValueRef) -> Vec<Vec<usize>> {
        let ty = self.g.type_of(v).clone();
        (0..self.nprobes()).map(|k| self.probe_shape(&ty.shape, k)).collect()
    }

    fn add(&mut self, op: Op, args: Vec<ValueRef>) -> R<ValueRef> {
        self.g.add_node(op, args).map_err(|e| e.message)
    }

    // -- Initializers and constants ------------------------------------------------------------

    fn init(&self, i: usize) -> &'m TensorProto {
        &self.m.graph().initializer[i]
    }

    fn init_dense(&self, i: usize) -> R<Dense> {
        let t = self.init(i);
        let elements = init_elements(t);
        if elements > crate::limits::get(crate::limits::Limit::OnnxFoldElements) {
            return Err(format!("initializer '{}' ({elements} elements) is too large to fold", t.name));
        }
        let dtype =
            DataType::try_from(t.data_type).map_err(|_| format!("initializer '{}': unknown data type", t.name))?;
        let bytes = match self.m.tensor_bytes(t).map_err(without_path)? {
            TensorBytes::Inline(b) => b,
            TensorBytes::File { path, offset, len } if path == self.m.path => {
                self.m.map[offset as usize..(offset + len) as usize].to_vec()
            }
            TensorBytes::File { path, offset, len } => {
                use std::io::{Read, Seek, SeekFrom};
                let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
                let mut b = vec![0u8; len as usize];
                f.read_exact(&mut b).map_err(|e| format!("{}: {e}", path.display()))?;
                b
            }
        };
        fold::decode(dtype, &t.dims, &bytes).map_err(|e| format!("initializer '{}': {e}", t.name))
    }

    fn is_small_init(&self, i: usize) -> bool {
        init_elements(self.init(i)) <= crate::limits::get(crate::limits::Limit::OnnxFoldElements)
    }

    /// The value of `name` at every probe, if it is known at compile time.
    fn const_of(&mut self, name: &str) -> R<Option<Rc<Vec<Dense>>>> {
        match self.vals.get(name).cloned() {
            Some(Val::Const(c)) => Ok(Some(c)),
            Some(Val::Init(i)) => {
                let d = self.init_dense(i)?;
                let c = Rc::new(vec![d; self.nprobes()]);
                self.vals.insert(name.to_string(), Val::Const(c.clone()));
                self.ir_of.remove(name);
                Ok(Some(c))
            }
            Some(Val::Dyn(_)) => Ok(None),
            None => Err(format!("value '{name}' is not defined")),
        }
    }

    /// A constant that must be the same at every probe (axes, perms, exponents ...).
    fn fixed(&mut self, name: &str) -> R<Dense> {
        let c = self.const_of(name)?.ok_or_else(|| format!("'{name}' must be a constant"))?;
        if c.iter().any(|t| *t != c[0]) {
            return Err(format!("'{name}' depends on the symbolic dims, where a fixed value is needed"));
        }
        Ok(c[0].clone())
    }

    /// An f32 scalar weight.
    fn scalar(&mut self, v: f32) -> ValueRef {
        if let Some(&r) = self.scalars.get(&v.to_bits()) {
            return r;
        }
        let name = self.unique(&format!("const.{}", self.scalars.len()));
        let r = self.g.add_weight(name, TensorType::new(DType::F32, Shape(vec![])), WeightSource::Literal(vec![v]));
        self.scalars.insert(v.to_bits(), r);
        r
    }

    /// The IR value of an ONNX value: run-time values as they are, initializers as weight
    /// references, folded constants as literal weights cut to the symbols' run-time values.
    fn operand(&mut self, name: &str) -> R<ValueRef> {
        if let Some(&v) = self.ir_of.get(name) {
            return Ok(v);
        }
        let v = match self.vals.get(name).cloned() {
            Some(Val::Dyn(v)) => return Ok(v),
            Some(Val::Init(i)) => self.weight_ref(i)?,
            Some(Val::Const(c)) => self.materialize(name, &c)?,
            None => return Err(format!("value '{name}' is not defined")),
        };
        self.ir_of.insert(name.to_string(), v);
        Ok(v)
    }

    fn weight_ref(&mut self, i: usize) -> R<ValueRef> {
        let t = self.init(i);
        let dims: Vec<u64> = t.dims.iter().map(|&d| d as u64).collect();
        let ty = TensorType::new(DType::F32, Shape::of(&dims));
        let stored = match DataType::try_from(t.data_type) {
            Ok(DataType::Float) => Some(DType::F32),
            Ok(DataType::Float16) => Some(DType::F16),
            Ok(DataType::Bfloat16) => Some(DType::BF16),
            _ => None,
        };
        let source = match (self.m.tensor_bytes(t).map_err(without_path)?, stored) {
            (TensorBytes::File { path, offset, .. }, Some(dtype)) => WeightSource::File { path, offset, dtype },
            _ => WeightSource::Literal(self.init_dense(i)?.as_f32()),
        };
        let name = self.unique(&t.name);
        let v = self.g.add_weight(name, ty, source);
        match DataType::try_from(t.data_type) {
            Ok(DataType::Bool) => {
                self.bools.insert(v);
                Ok(v)
            }
            _ if stored.is_none() => {
                let d = self.init_dense(i)?;
                self.typed_literal(v, &d)
            }
            _ => Ok(v),
        }
    }

    /// A literal weight (always f32 values) given its ONNX kind: integers through a cast to
    /// i32 (exact: refused beyond f32's 2^24), booleans marked as such.
    fn typed_literal(&mut self, v: ValueRef, d: &Dense) -> R<ValueRef> {
        match &d.data {
            Data::I(vals) => {
                if vals.iter().any(|x| x.unsigned_abs() > 1 << 24) {
                    return Err("an integer constant beyond 2^24 used at run time is not supported".into());
                }
                self.add(Op::Cast { to: DType::I32 }, vec![v])
            }
            Data::B(_) => {
                self.bools.insert(v);
                Ok(v)
            }
            Data::F(_) => Ok(v),
        }
    }

    /// `float`, `int` or `bool`: what an IR value holds in ONNX terms.
    fn kind(&self, v: ValueRef) -> &'static str {
        if self.bools.contains(&v) {
            "bool"
        } else if self.g.type_of(v).dtype == DType::I32 {
            "int"
        } else {
            "float"
        }
    }

    /// An operand as f32 (integers cast), for float-only ops and mixed-type ONNX ops (Pow).
    fn float_operand(&mut self, name: &str) -> R<ValueRef> {
        let v = self.operand(name)?;
        if self.g.type_of(v).dtype == DType::I32 { self.add(Op::Cast { to: DType::F32 }, vec![v]) } else { Ok(v) }
    }

    /// ONNX Cast between the run-time kinds: float (f32), int (i32), bool (f32 0/1).
    fn cast(&mut self, x: ValueRef, to: &str) -> R<ValueRef> {
        let from = self.kind(x);
        let v = match (from, to) {
            _ if from == to => x,
            ("float", "int") | ("bool", "int") => self.add(Op::Cast { to: DType::I32 }, vec![x])?,
            ("int", "float") => self.add(Op::Cast { to: DType::F32 }, vec![x])?,
            ("bool", "float") => {
                // A copy, so the result is not marked boolean.
                let shape = self.g.type_of(x).shape.clone();
                self.add(Op::Reshape { shape }, vec![x])?
            }
            (_, "bool") => {
                let zero = self.zero_like(x)?;
                let eq = self.add(Op::Binary(BinaryOp::Eq), vec![x, zero])?;
                let one = self.scalar(1.0);
                let v = self.add(Op::Binary(BinaryOp::Sub), vec![one, eq])?;
                self.bools.insert(v);
                v
            }
            _ => return Err(format!("casting run-time {from} data to {to} is not supported")),
        };
        Ok(v)
    }

    /// A scalar 0 of `x`'s dtype.
    fn zero_like(&mut self, x: ValueRef) -> R<ValueRef> {
        let z = self.scalar(0.0);
        if self.g.type_of(x).dtype == DType::I32 { self.add(Op::Cast { to: DType::I32 }, vec![z]) } else { Ok(z) }
    }

    /// Trilu on run-time data: a select with a folded 0/1 mask of the (constant) last two dims.
    fn trilu(&mut self, n: &NodeProto) -> R<ValueRef> {
        let x = self.operand(input(n, 0).ok_or("missing input")?)?;
        let k = match input(n, 1) {
            Some(k) => self.fixed(k)?.scalar_i64()?,
            None => 0,
        };
        let upper = attr_i(n, "upper", 1)? != 0;
        let dims = self.g.type_of(x).shape.dims().to_vec();
        let r = dims.len();
        if r < 2 {
            return Err("Trilu needs at least two axes".into());
        }
        let (rows, cols) = match (dims[r - 2].as_const(), dims[r - 1].as_const()) {
            (Some(a), Some(b)) => (a as usize, b as usize),
            _ => return Err("Trilu over symbolic axes is not supported".into()),
        };
        let len =
            rows.checked_mul(cols).filter(|&l| l as u64 <= crate::limits::get(crate::limits::Limit::OnnxFoldElements));
        let len = len.ok_or("Trilu's mask is too large to fold")?;
        let mut mask = Vec::with_capacity(len);
        for i in 0..rows as i64 {
            for j in 0..cols as i64 {
                let keep = if upper { j - i >= k } else { j - i <= k };
                mask.push(f32::from(u8::from(keep)));
            }
        }
        let name = self.unique(&format!("{}.trilu_mask", n.output.first().map_or("", |s| s.as_str())));
        let m = self.g.add_weight(
            name,
            TensorType::new(DType::F32, Shape::of(&[rows as u64, cols as u64])),
            WeightSource::Literal(mask),
        );
        let zero = self.zero_like(x)?;
        self.add(Op::Select, vec![m, x, zero])
    }

    fn materialize(&mut self, name: &str, c: &[Dense]) -> R<ValueRef> {
        let shape = self.fit_shape(&c.iter().map(|t| t.shape.clone()).collect::<Vec<_>>())?;
        let full = &c[0];
        for (k, t) in c.iter().enumerate().skip(1) {
            let st = fold::strides(&full.shape);
            let prefix: Vec<usize> = prefix_offsets(&t.shape, &st);
            let same = match (&full.data, &t.data) {
                (Data::F(a), Data::F(b)) => prefix.iter().zip(b).all(|(&o, y)| a[o].to_bits() == y.to_bits()),
                (Data::I(a), Data::I(b)) => prefix.iter().zip(b).all(|(&o, y)| a[o] == *y),
                (Data::B(a), Data::B(b)) => prefix.iter().zip(b).all(|(&o, y)| a[o] == *y),
                _ => false,
            };
            if !same {
                return Err(format!(
                    "'{name}' is computed from the symbolic dims in a way the IR cannot express: its value for symbols {:?} is not the prefix of its value at the maxima",
                    self.probes[k]
                ));
            }
        }
        let wname = self.unique(name);
        let dims: Vec<u64> = full.shape.iter().map(|&d| d as u64).collect();
        let mut v = self.g.add_weight(
            wname,
            TensorType::new(DType::F32, Shape::of(&dims)),
            WeightSource::Literal(full.as_f32()),
        );
        v = self.typed_literal(v, full)?;
        for (axis, &d) in shape.dims().iter().enumerate() {
            if let Dim::Sym(_) = d {
                v = self.add(Op::Slice { axis: axis as u32, start: 0, len: d }, vec![v])?;
            }
        }
        Ok(v)
    }

    /// A graph output must be a node's result: a weight or an input gets a copy (a reshape to
    /// its own shape), as do values already output.
    fn output_copy(&mut self, v: ValueRef) -> R<ValueRef> {
        let is_result = matches!(v, ValueRef::Node(_)) && !self.g.outputs.iter().any(|o| o.value == v);
        if is_result {
            return Ok(v);
        }
        let shape = self.g.type_of(v).shape.clone();
        self.add(Op::Reshape { shape }, vec![v])
    }

    /// `v` reshaped to the dims read off `per_probe` (no node if they are `v`'s already).
    fn reshape(&mut self, v: ValueRef, per_probe: &[Vec<usize>]) -> R<ValueRef> {
        let shape = self.fit_shape(per_probe)?;
        if self.g.type_of(v).shape == shape { Ok(v) } else { self.add(Op::Reshape { shape }, vec![v]) }
    }

    fn set(&mut self, name: &str, v: Val) {
        if !name.is_empty() {
            self.vals.insert(name.to_string(), v);
            self.ir_of.remove(name);
        }
    }

    // -- Nodes --------------------------------------------------------------------------------

    fn node(&mut self, n: &NodeProto) -> R<()> {
        let op = n.op_type.as_str();
        let inputs: Vec<&str> = n.input.iter().map(String::as_str).collect();
        // Every ONNX op has at least one output; the code below reads the first.
        if n.output.is_empty() {
            return Err("the node has no output".into());
        }
        if op == "Shape" || op == "Size" {
            let per_probe = self.shapes_by_probe(inputs.first().copied().ok_or("missing input")?)?;
            let out: Vec<Dense> = per_probe
                .into_iter()
                .map(|s| -> R<Dense> {
                    if op == "Size" {
                        return Ok(Dense::ints(vec![], vec![fold::numel(&s) as i64]));
                    }
                    let r = s.len() as i64;
                    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                    let start = clampi(attr_i(n, "start", 0)?);
                    let end = clampi(attr_i(n, "end", r)?);
                    let dims: Vec<i64> = s[start..end.max(start)].iter().map(|&d| d as i64).collect();
                    Ok(Dense::ints(vec![dims.len()], dims))
                })
                .collect::<R<_>>()?;
            self.set(&n.output[0], Val::Const(Rc::new(out)));
            return Ok(());
        }
        let foldable = fold::FOLDABLE.contains(&op)
            && inputs.iter().filter(|i| !i.is_empty()).all(|i| match self.vals.get(*i) {
                Some(Val::Const(_)) => true,
                Some(Val::Init(k)) => self.is_small_init(*k),
                _ => false,
            });
        if foldable {
            let mut ins: Vec<Option<Rc<Vec<Dense>>>> = Vec::new();
            for i in &inputs {
                ins.push(if i.is_empty() { None } else { self.const_of(i)? });
            }
            let mut outs: Vec<Vec<Dense>> = vec![Vec::new(); n.output.len()];
            for k in 0..self.nprobes() {
                let at: Vec<Option<&Dense>> = ins.iter().map(|c| c.as_ref().map(|c| &c[k])).collect();
                let r = fold::eval(n, self.opset, &at, &|t| {
                    let dtype = DataType::try_from(t.data_type).map_err(|_| "unknown data type".to_string())?;
                    let bytes = match self.m.tensor_bytes(t).map_err(without_path)? {
                        TensorBytes::Inline(b) => b,
                        TensorBytes::File { offset, len, .. } => {
                            self.m.map[offset as usize..(offset + len) as usize].to_vec()
                        }
                    };
                    fold::decode(dtype, &t.dims, &bytes)
                })?;
                for (o, t) in outs.iter_mut().zip(r) {
                    o.push(t);
                }
            }
            for (name, o) in n.output.iter().zip(outs) {
                if o.len() == self.nprobes() {
                    self.set(name, Val::Const(Rc::new(o)));
                }
            }
            return Ok(());
        }
        self.lower(n)
    }

    /// The shape of an ONNX value at each probe.
    fn shapes_by_probe(&mut self, name: &str) -> R<Vec<Vec<usize>>> {
        match self.vals.get(name).cloned() {
            Some(Val::Dyn(v)) => Ok(self.shapes_of(v)),
            Some(Val::Const(c)) => Ok(c.iter().map(|t| t.shape.clone()).collect()),
            Some(Val::Init(i)) => Ok(vec![self.init(i).dims.iter().map(|&d| d as usize).collect(); self.nprobes()]),
            None => Err(format!("value '{name}' is not defined")),
        }
    }

    fn lower(&mut self, n: &NodeProto) -> R<()> {
        let op = n.op_type.as_str();
        let need = |i: usize| input(n, i).ok_or_else(|| format!("missing input {i}"));

        let x_name = need(0)?;
        let out = n.output.first().cloned().unwrap_or_default();
        let unary = |u: UnaryOp| Some(Op::Unary(u));
        let simple = match op {
            "Sqrt" => unary(UnaryOp::Sqrt),
            "Reciprocal" => unary(UnaryOp::Recip),
            "Neg" => unary(UnaryOp::Neg),
            "Exp" => unary(UnaryOp::Exp),
            "Log" => unary(UnaryOp::Log),
            "Tanh" => unary(UnaryOp::Tanh),
            "Sigmoid" => unary(UnaryOp::Sigmoid),
            "Erf" => unary(UnaryOp::Erf),
            "Abs" => unary(UnaryOp::Abs),
            "IsNaN" => unary(UnaryOp::IsNan),
            _ => None,
        };
        if let Some(o) = simple {
            let x = self.float_operand(x_name)?;
            let v = self.add(o, vec![x])?;
            if op == "IsNaN" {
                self.bools.insert(v);
            }
            self.set(&out, Val::Dyn(v));
            return Ok(());
        }
        let v = match op {
            "Identity" | "Dropout" => {
                if op == "Dropout" && !self.dropout_is_identity(n)? {
                    return Err("Dropout in training mode (or with its mask output) is not supported".into());
                }
                let v = self.vals.get(x_name).cloned().ok_or("undefined input")?;
                self.set(&out, v);
                return Ok(());
            }
            "Cast" | "CastLike" => {
                let x = self.operand(x_name)?;
                let to = if op == "Cast" {
                    fold::kind_of(attr_i(n, "to", 1)?)?
                } else {
                    match self.vals.get(need(1)?).cloned() {
                        Some(Val::Dyn(v)) => self.kind(v),
                        Some(Val::Const(c)) => c[0].kind_name(),
                        Some(Val::Init(i)) => fold::kind_of(i64::from(self.init(i).data_type))?,
                        None => return Err("undefined input".into()),
                    }
                };
                self.cast(x, to)?
            }
            "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "And" | "Or" => {
                let b = match op {
                    "Add" => BinaryOp::Add,
                    "Sub" => BinaryOp::Sub,
                    "Mul" | "And" => BinaryOp::Mul,
                    "Div" => BinaryOp::Div,
                    "Max" | "Or" => BinaryOp::Max,
                    _ => BinaryOp::Min,
                };
                let mut acc = self.operand(x_name)?;
                for i in 1..n.input.len() {
                    let y = self.operand(need(i)?)?;
                    acc = self.add(Op::Binary(b), vec![acc, y])?;
                }
                if op == "And" || op == "Or" {
                    self.bools.insert(acc);
                }
                acc
            }
            "Equal" | "Less" | "Greater" => {
                let (a, b) = (self.operand(x_name)?, self.operand(need(1)?)?);
                let c = match op {
                    "Equal" => BinaryOp::Eq,
                    "Less" => BinaryOp::Lt,
                    _ => BinaryOp::Gt,
                };
                let v = self.add(Op::Binary(c), vec![a, b])?;
                self.bools.insert(v);
                v
            }
            "Trilu" => self.trilu(n)?,
            "Not" => {
                let (one, x) = (self.scalar(1.0), self.operand(x_name)?);
                let v = self.add(Op::Binary(BinaryOp::Sub), vec![one, x])?;
                self.bools.insert(v);
                v
            }
            "Relu" => {
                let (x, zero) = (self.operand(x_name)?, self.scalar(0.0));
                self.add(Op::Binary(BinaryOp::Max), vec![x, zero])?
            }
            "Clip" => {
                let mut x = self.operand(x_name)?;
                if let Some(lo) = input(n, 1) {
                    let lo = self.operand(lo)?;
                    x = self.add(Op::Binary(BinaryOp::Max), vec![x, lo])?;
                }
                if let Some(hi) = input(n, 2) {
                    let hi = self.operand(hi)?;
                    x = self.add(Op::Binary(BinaryOp::Min), vec![x, hi])?;
                }
                x
            }
            "Pow" => {
                let x = self.operand(x_name)?;
                let e = match self.const_of(need(1)?)? {
                    Some(c) if c[0].len() == 1 && c.iter().all(|t| *t == c[0]) => Some(c[0].as_f32()[0]),
                    _ => None,
                };
                match e {
                    Some(1.0) => x,
                    Some(2.0) => self.add(Op::Binary(BinaryOp::Mul), vec![x, x])?,
                    Some(3.0) => {
                        let sq = self.add(Op::Binary(BinaryOp::Mul), vec![x, x])?;
                        self.add(Op::Binary(BinaryOp::Mul), vec![sq, x])?
                    }
                    Some(0.5) => self.add(Op::Unary(UnaryOp::Sqrt), vec![x])?,
                    Some(-1.0) => self.add(Op::Unary(UnaryOp::Recip), vec![x])?,
                    _ => {
                        if self.g.type_of(x).dtype == DType::I32 {
                            let e = self.operand(need(1)?)?;
                            let v = self.int_pow(x, e)?;
                            self.set(&out, Val::Dyn(v));
                            return Ok(());
                        }
                        let y = self.float_operand(need(1)?)?;
                        self.add(Op::Binary(BinaryOp::Pow), vec![x, y])?
                    }
                }
            }
            "Gelu" => {
                let x = self.operand(x_name)?;
                match attr_s(n, "approximate", "none")?.as_str() {
                    "tanh" => self.add(Op::Unary(UnaryOp::GeluTanh), vec![x])?,
                    "none" => {
                        let (c, half, one) =
                            (self.scalar(std::f32::consts::FRAC_1_SQRT_2), self.scalar(0.5), self.scalar(1.0));
                        let s = self.add(Op::Binary(BinaryOp::Mul), vec![x, c])?;
                        let e = self.add(Op::Unary(UnaryOp::Erf), vec![s])?;
                        let p = self.add(Op::Binary(BinaryOp::Add), vec![e, one])?;
                        let h = self.add(Op::Binary(BinaryOp::Mul), vec![x, half])?;
                        self.add(Op::Binary(BinaryOp::Mul), vec![h, p])?
                    }
                    a => return Err(format!("approximate='{a}' is not a Gelu mode")),
                }
            }
            "Softmax" | "LogSoftmax" => {
                let x = self.operand(x_name)?;
                let r = self.g.type_of(x).shape.rank();
                let axis = norm_axis(attr_i(n, "axis", -1)?, r)?;
                let (xt, perm) = self.move_axes_last(x, &[axis])?;
                let y = if op == "Softmax" {
                    self.add(Op::Softmax, vec![xt])?
                } else {
                    let m = self.add(Op::Reduce(ReduceOp::Max), vec![xt])?;
                    let s = self.add(Op::Binary(BinaryOp::Sub), vec![xt, m])?;
                    let e = self.add(Op::Unary(UnaryOp::Exp), vec![s])?;
                    let t = self.add(Op::Reduce(ReduceOp::Sum), vec![e])?;
                    let l = self.add(Op::Unary(UnaryOp::Log), vec![t])?;
                    self.add(Op::Binary(BinaryOp::Sub), vec![s, l])?
                };
                self.undo_perm(y, perm)?
            }
            "ReduceMean" | "ReduceSum" | "ReduceMax" => self.reduce(n)?,
            "MatMul" => {
                let (a, b) = (self.operand(x_name)?, self.operand(need(1)?)?);
                self.matmul(a, b)?
            }
            "Gemm" => {
                let (mut a, b) = (self.operand(x_name)?, self.operand(need(1)?)?);
                if attr_i(n, "transA", 0)? != 0 {
                    a = self.add(Op::Transpose { perm: vec![1, 0] }, vec![a])?;
                }
                let mut y = self.add(Op::MatMul { transpose_b: attr_i(n, "transB", 0)? != 0 }, vec![a, b])?;
                let alpha = attr_f(n, "alpha", 1.0)?;
                if alpha != 1.0 {
                    let s = self.scalar(alpha);
                    y = self.add(Op::Binary(BinaryOp::Mul), vec![y, s])?;
                }
                if let Some(c) = input(n, 2) {
                    let mut c = self.operand(c)?;
                    let beta = attr_f(n, "beta", 1.0)?;
                    if beta != 1.0 {
                        let s = self.scalar(beta);
                        c = self.add(Op::Binary(BinaryOp::Mul), vec![c, s])?;
                    }
                    y = self.add(Op::Binary(BinaryOp::Add), vec![y, c])?;
                }
                y
            }
            "Gather" => self.gather(n)?,
            "Reshape" | "Flatten" | "Unsqueeze" | "Squeeze" => {
                let x = self.operand(x_name)?;
                let shapes = self.shapes_of(x);
                let arg = match (op, input(n, 1)) {
                    ("Flatten", _) | ("Squeeze", None) => None,
                    (_, Some(a)) => Some(self.fixed_or_probed(a)?),
                    (_, None) => return Err(format!("{op} without its second input")),
                };
                let mut target = Vec::new();
                for (k, s) in shapes.iter().enumerate() {
                    let a = arg.as_ref().map(|a| a[k].clone());
                    target.push(match op {
                        "Reshape" => {
                            fold::reshape_dims(s, a.as_deref().unwrap_or_default(), attr_i(n, "allowzero", 0)? != 0)?
                        }
                        "Unsqueeze" => fold::unsqueeze_dims(s, a.as_deref().unwrap_or_default())?,
                        "Squeeze" => fold::squeeze_dims(s, a.as_deref())?,
                        _ => {
                            let ax = fold::flatten_axis(attr_i(n, "axis", 1)?, s.len())?;
                            vec![fold::numel(&s[..ax]), fold::numel(&s[ax..])]
                        }
                    });
                }
                self.reshape(x, &target)?
            }
            "Transpose" => {
                let x = self.operand(x_name)?;
                let r = self.g.type_of(x).shape.rank();
                let perm: Vec<u32> = match attr_ints(n, "perm")? {
                    Some(p) => p.iter().map(|&a| norm_axis(a, r).map(|a| a as u32)).collect::<R<_>>()?,
                    None => (0..r as u32).rev().collect(),
                };
                if perm.iter().enumerate().all(|(i, &p)| p as usize == i) {
                    x
                } else {
                    self.add(Op::Transpose { perm }, vec![x])?
                }
            }
            "Concat" => {
                let mut parts = Vec::new();
                for i in 0..n.input.len() {
                    let v = self.operand(need(i)?)?;
                    parts.push(v);
                }
                let r = self.g.type_of(parts[0]).shape.rank();
                let axis = norm_axis(attr_i(n, "axis", 0)?, r)?;
                parts.retain(|&p| self.g.type_of(p).shape.dims().get(axis) != Some(&Dim::Const(0)));
                let mut acc = *parts.first().ok_or("Concat of empty tensors only")?;
                for &p in &parts[1..] {
                    acc = self.add(Op::Concat { axis: axis as u32 }, vec![acc, p])?;
                }
                acc
            }
            "Slice" => self.slice(n)?,
            "Split" => {
                let x = self.operand(x_name)?;
                let shapes = self.shapes_of(x);
                let r = shapes[0].len();
                let axis = norm_axis(attr_i(n, "axis", 0)?, r)?;
                let split = match input(n, 1) {
                    Some(s) => Some(self.fixed(s)?.as_i64()?),
                    None => attr_ints(n, "split")?,
                };
                let num = attr(n, "num_outputs").map(|_| attr_i(n, "num_outputs", 0)).transpose()?;
                let dim = self.g.type_of(x).shape.dims()[axis].as_const().ok_or("Split along a symbolic axis")?;
                let sizes = fold::split_sizes(dim as usize, split, n.output.len(), num)?;
                let mut start = 0u64;
                for (o, s) in n.output.iter().zip(sizes) {
                    let v = self.add(Op::Slice { axis: axis as u32, start, len: Dim::Const(s as u64) }, vec![x])?;
                    self.set(o, Val::Dyn(v));
                    start += s as u64;
                }
                return Ok(());
            }
            "Expand" => {
                let x = self.operand(x_name)?;
                let shapes = self.shapes_of(x);
                let target = self.fixed_or_probed(need(1)?)?;
                let per_probe: Vec<Vec<usize>> = shapes
                    .iter()
                    .zip(&target)
                    .map(|(s, t)| fold::broadcast(s, &t.iter().map(|&d| d as usize).collect::<Vec<_>>()))
                    .collect::<R<_>>()?;
                let shape = self.fit_shape(&per_probe)?;
                if self.g.type_of(x).shape == shape { x } else { self.add(Op::Expand { shape }, vec![x])? }
            }
            "Where" => {
                let c = self.operand(x_name)?;
                let a = self.operand(need(1)?)?;
                let b = self.operand(need(2)?)?;
                self.add(Op::Select, vec![c, a, b])?
            }
            "LayerNormalization" => return self.layer_normalization(n),
            "RMSNormalization" => self.rms_normalization(n)?,
            "Attention" => return self.attention(n),
            "RotaryEmbedding" => self.rotary_embedding(n)?,
            "MaxPool" | "AveragePool" => self.pool(n)?,
            "GlobalAveragePool" => self.global_average_pool(n)?,
            "Conv" => self.conv(n)?,
            "BatchNormalization" => self.batch_norm(n)?,
            "Pad" => self.pad(n)?,
            "Resize" => self.resize(n)?,
            "CumSum" => self.cumsum(n)?,
            "HardSigmoid" | "HardSwish" | "LeakyRelu" => self.activation(n)?,
            // Its shape must be known at compile time (the folder then evaluates it).
            "ConstantOfShape" => return Err(format!("'{x_name}' must be a constant")),
            _ => return Err(format!("{op} is only supported when its inputs are constant (it is folded at import)")),
        };
        self.set(&out, Val::Dyn(v));
        Ok(())
    }

    /// Inference-mode Dropout: no training_mode input, or a constant false one, and no mask.
    fn dropout_is_identity(&mut self, n: &NodeProto) -> R<bool> {
        if n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Ok(false);
        }
        let Some(t) = input(n, 2) else { return Ok(true) };
        if self.fixed(t)?.as_i64()?.iter().all(|&b| b == 0) {
            return Ok(true);
        }
        // Training mode with ratio 0 drops nothing.
        let ratio = match input(n, 1) {
            Some(r) => self.fixed(r)?.as_f32(),
            None => vec![0.5],
        };
        Ok(ratio.iter().all(|&x| x == 0.0))
    }

    /// A constant's integer values at every probe (shapes may differ by probe).
    fn fixed_or_probed(&mut self, name: &str) -> R<Vec<Vec<i64>>> {
        let c = self.const_of(name)?.ok_or_else(|| format!("'{name}' must be known at compile time"))?;
        c.iter().map(Dense::as_i64).collect()
    }

    /// Transposes `axes` (in order) to the end; returns the value and the permutation used.
    fn move_axes_last(&mut self, x: ValueRef, axes: &[usize]) -> R<(ValueRef, Option<Vec<u32>>)> {
        let r = self.g.type_of(x).shape.rank();
        let mut perm: Vec<u32> = (0..r).filter(|a| !axes.contains(a)).map(|a| a as u32).collect();
        perm.extend(axes.iter().map(|&a| a as u32));
        if perm.iter().enumerate().all(|(i, &p)| p as usize == i) {
            return Ok((x, None));
        }
        Ok((self.add(Op::Transpose { perm: perm.clone() }, vec![x])?, Some(perm)))
    }

    fn undo_perm(&mut self, y: ValueRef, perm: Option<Vec<u32>>) -> R<ValueRef> {
        let Some(perm) = perm else { return Ok(y) };
        let mut inv = vec![0u32; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p as usize] = i as u32;
        }
        self.add(Op::Transpose { perm: inv }, vec![y])
    }

    fn reduce(&mut self, n: &NodeProto) -> R<ValueRef> {
        let op = n.op_type.as_str();
        let x = self.operand(input(n, 0).ok_or("missing input")?)?;
        let shapes = self.shapes_of(x);
        let r = shapes[0].len();
        let axes = if self.opset >= 18 || op == "ReduceSum" {
            match input(n, 1) {
                Some(a) => Some(self.fixed(a)?.as_i64()?),
                None => None,
            }
        } else {
            attr_ints(n, "axes")?
        };
        let mut axes: Vec<usize> = match axes {
            Some(a) if !a.is_empty() => a.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?,
            _ if attr_i(n, "noop_with_empty_axes", 0)? != 0 => return Ok(x),
            _ => (0..r).collect(),
        };
        axes.sort_unstable();
        axes.dedup();
        let keep = attr_i(n, "keepdims", 1)? != 0;
        if op == "ReduceMax" && self.bools.contains(&x) && shapes.iter().any(|s| axes.iter().any(|&a| s[a] == 0)) {
            return Err("ReduceMax of booleans over an empty set is not supported".into());
        }
        let (xt, _) = self.move_axes_last(x, &axes)?;
        // Merge the reduced axes into one, reduce it, then give the result its ONNX shape.
        let kept: Vec<usize> = (0..r).filter(|a| !axes.contains(a)).collect();
        let merged: Vec<Vec<usize>> = shapes
            .iter()
            .map(|s| {
                let mut m: Vec<usize> = kept.iter().map(|&a| s[a]).collect();
                m.push(axes.iter().map(|&a| s[a]).product());
                m
            })
            .collect();
        let xm = self.reshape(xt, &merged)?;
        let red = match op {
            "ReduceMean" => ReduceOp::Mean,
            "ReduceSum" => ReduceOp::Sum,
            _ => ReduceOp::Max,
        };
        let y = self.add(Op::Reduce(red), vec![xm])?;
        let final_shapes: Vec<Vec<usize>> = shapes
            .iter()
            .map(|s| {
                if keep {
                    (0..r).map(|a| if axes.contains(&a) { 1 } else { s[a] }).collect()
                } else {
                    kept.iter().map(|&a| s[a]).collect()
                }
            })
            .collect();
        self.reshape(y, &final_shapes)
    }

    fn matmul(&mut self, a: ValueRef, b: ValueRef) -> R<ValueRef> {
        let (sa, sb) = (self.shapes_of(a), self.shapes_of(b));
        let (ra, rb) = (sa[0].len(), sb[0].len());
        if ra == 0 || rb == 0 {
            return Err("MatMul of a scalar".into());
        }
        // Rank-1 operands get a unit axis, removed again from the result.
        let (a, sa) = if ra == 1 {
            let s: Vec<Vec<usize>> = sa.iter().map(|s| vec![1, s[0]]).collect();
            (self.reshape(a, &s)?, s)
        } else {
            (a, sa)
        };
        let (b, sb) = if rb == 1 {
            let s: Vec<Vec<usize>> = sb.iter().map(|s| vec![s[0], 1]).collect();
            (self.reshape(b, &s)?, s)
        } else {
            (b, sb)
        };
        let (ra2, rb2) = (sa[0].len(), sb[0].len());
        let (y, mut shapes) = if rb2 == 2 {
            // [..., M, K] x [K, N]: one matrix product over all rows.
            let rows: Vec<Vec<usize>> = sa.iter().map(|s| vec![fold::numel(&s[..ra2 - 1]), s[ra2 - 1]]).collect();
            let a2 = self.reshape(a, &rows)?;
            let y = self.add(Op::MatMul { transpose_b: false }, vec![a2, b])?;
            let shapes: Vec<Vec<usize>> = sa
                .iter()
                .zip(&sb)
                .map(|(s, t)| {
                    let mut o = s[..ra2 - 1].to_vec();
                    o.push(t[1]);
                    o
                })
                .collect();
            (y, shapes)
        } else {
            let y = self.add(Op::BatchMatMul, vec![a, b])?;
            let s = self.shapes_of(y);
            (y, s)
        };
        for s in &mut shapes {
            if rb == 1 {
                s.pop();
            }
            if ra == 1 {
                let l = s.len();
                s.remove(l - if rb == 1 { 1 } else { 2 });
            }
        }
        self.reshape(y, &shapes)
    }

    fn gather(&mut self, n: &NodeProto) -> R<ValueRef> {
        let (dname, iname) = (input(n, 0).ok_or("missing data")?, input(n, 1).ok_or("missing indices")?);
        let ids_const = self.const_of(iname)?;
        let data = self.operand(dname)?;
        let ds = self.shapes_of(data);
        let r = ds[0].len();
        let axis = norm_axis(attr_i(n, "axis", 0)?, r)?;
        match ids_const {
            None => {
                // Run-time ids into a table: the IR's row gather.
                let ids = self.operand(iname)?;
                let is = self.shapes_of(ids);
                if axis != 0 || r != 2 {
                    return Err("Gather with run-time indices needs a 2-d table and axis 0".into());
                }
                let flat: Vec<Vec<usize>> = is.iter().map(|s| vec![fold::numel(s)]).collect();
                let ids1 = self.reshape(ids, &flat)?;
                let rows = self.add(Op::Gather, vec![data, ids1])?;
                let out: Vec<Vec<usize>> = is
                    .iter()
                    .zip(&ds)
                    .map(|(s, d)| {
                        let mut o = s.clone();
                        o.push(d[1]);
                        o
                    })
                    .collect();
                self.reshape(rows, &out)
            }
            Some(c) => {
                // Constant indices into run-time data: one slice per index, concatenated.
                if c.iter().any(|t| *t != c[0]) {
                    return Err("Gather indices depend on the symbolic dims".into());
                }
                let dim = self.g.type_of(data).shape.dims()[axis].as_const().ok_or("Gather along a symbolic axis")?;
                let idx = c[0].as_i64()?;
                let mut acc: Option<ValueRef> = None;
                for &i in &idx {
                    let j = if i < 0 { i + dim as i64 } else { i };
                    if !(0..dim as i64).contains(&j) {
                        return Err(format!("index {i} is out of range for {dim}"));
                    }
                    let s =
                        self.add(Op::Slice { axis: axis as u32, start: j as u64, len: Dim::Const(1) }, vec![data])?;
                    acc = Some(match acc {
                        None => s,
                        Some(a) => self.add(Op::Concat { axis: axis as u32 }, vec![a, s])?,
                    });
                }
                let v = acc.ok_or("Gather with no indices")?;
                let out: Vec<Vec<usize>> = ds
                    .iter()
                    .map(|d| {
                        let mut o = d[..axis].to_vec();
                        o.extend(&c[0].shape);
                        o.extend(&d[axis + 1..]);
                        o
                    })
                    .collect();
                self.reshape(v, &out)
            }
        }
    }

    fn slice(&mut self, n: &NodeProto) -> R<ValueRef> {
        let mut x = self.operand(input(n, 0).ok_or("missing input")?)?;
        let starts = self.fixed_or_probed(input(n, 1).ok_or("missing starts")?)?;
        let ends = self.fixed_or_probed(input(n, 2).ok_or("missing ends")?)?;
        let axes = match input(n, 3) {
            Some(a) => Some(self.fixed(a)?.as_i64()?),
            None => None,
        };
        let steps = match input(n, 4) {
            Some(s) => Some(self.fixed(s)?.as_i64()?),
            None => None,
        };
        let count = starts[0].len();
        let axes = axes.unwrap_or_else(|| (0..count as i64).collect());
        let steps = steps.unwrap_or_else(|| vec![1; count]);
        for (i, &a) in axes.iter().enumerate() {
            let shapes = self.shapes_of(x);
            let axis = norm_axis(a, shapes[0].len())?;
            if steps[i] != 1 {
                let dim =
                    self.g.type_of(x).shape.dims()[axis].as_const().ok_or("a strided Slice of a symbolic axis")?;
                let ranges: Vec<(i64, usize)> = (0..self.nprobes())
                    .map(|k| fold::slice_range(dim as usize, starts[k][i], ends[k][i], steps[i]))
                    .collect::<R<_>>()?;
                if ranges.iter().any(|r| *r != ranges[0]) {
                    return Err("a strided Slice whose range depends on the symbolic dims is not supported".into());
                }
                x = self.strided_slice(x, axis, ranges[0].0, steps[i], ranges[0].1)?;
                continue;
            }
            let mut begin = Vec::new();
            let mut lens = Vec::new();
            for (k, s) in shapes.iter().enumerate() {
                let (b, c) = fold::slice_range(s[axis], starts[k][i], ends[k][i], 1)?;
                begin.push(b);
                lens.push(c);
            }
            if begin.iter().any(|&b| b != begin[0]) {
                return Err("a Slice start that depends on the symbolic dims is not supported".into());
            }
            let len = self.fit_dim(&lens)?;
            if begin[0] == 0 && self.g.type_of(x).shape.dims()[axis] == len {
                continue;
            }
            x = self.add(Op::Slice { axis: axis as u32, start: begin[0] as u64, len }, vec![x])?;
        }
        Ok(x)
    }
}

fn input(n: &NodeProto, i: usize) -> Option<&str> {
    n.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    fold::attr(n, name)
}

/// Offsets, in a tensor with `strides`, of the elements of its leading block of `shape`.
fn prefix_offsets(shape: &[usize], strides: &[usize]) -> Vec<usize> {
    let n = fold::numel(shape);
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        out.push(idx.iter().zip(strides).map(|(a, b)| a * b).sum());
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    out
}
