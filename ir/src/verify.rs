//! The verifier: everything a pass could break. Run after every pass in debug builds and tests.
//!
//! Checks, in this order (the first violation is reported, naming the node, weight, input,
//! state, symbol or output at fault):
//! 1. names: the graph's, symbols', inputs', weights', states' and outputs' names are valid
//!    identifiers; symbols are unique; inputs, weights and states share one namespace; outputs
//!    are unique;
//! 2. symbols have `max >= 1`; every type refers only to existing symbols and its size at the
//!    symbols' maxima fits in 64 bits;
//! 3. weights have constant dims; a `Literal` has one value per element; a `Rope` table is
//!    `f32[P, rotary_dim / 2]` with an even, nonzero `rotary_dim` and a finite positive theta;
//!    a `File` range does not overflow;
//! 4. every operand refers to an existing value; the use-def graph of nodes is acyclic; every
//!    node only uses nodes scheduled before it;
//! 5. each node's stored type equals the type inferred from its operands;
//! 6. `CacheWrite` writes a state given directly as operand 0; each state is written at most
//!    once; a written state is read only through that write's result;
//! 7. outputs refer to existing values.

use crate::IrError;
use crate::graph::{Graph, ValueRef, WeightSource};
use crate::op::Op;
use crate::text::{is_identifier, strip_op_prefix, type_to_string};
use crate::types::{DType, Dim, TensorType};
use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{HashMap, HashSet};

/// Checks every structural rule of the IR; `Ok` means passes, the interpreter and the backend
/// may rely on the graph.
pub fn verify(g: &Graph) -> Result<(), IrError> {
    check_names(g)?;
    check_symbols_and_types(g)?;
    check_weights(g)?;
    check_references(g)?;
    check_acyclic(g)?;
    check_schedule_order(g)?;
    check_node_types(g)?;
    check_state_writes(g)?;
    Ok(())
}

fn fail<T>(message: String) -> Result<T, IrError> {
    Err(IrError::new(message))
}

/// `%5 (attention)`.
fn node_label(g: &Graph, i: usize) -> String {
    match g.nodes.get(i) {
        Some(n) => format!("%{i} ({})", n.op.name()),
        None => format!("%{i}"),
    }
}

fn check_names(g: &Graph) -> Result<(), IrError> {
    if !is_identifier(&g.name) {
        return fail(format!("graph name '{}' is not a valid identifier", g.name));
    }
    let mut symbols = HashSet::new();
    for s in &g.symbols {
        if !is_identifier(&s.name) {
            return fail(format!("symbol '{}': not a valid identifier", s.name));
        }
        if !symbols.insert(s.name.as_str()) {
            return fail(format!("symbol '{}': duplicate symbol name", s.name));
        }
    }
    let mut values: HashMap<&str, &str> = HashMap::new();
    let decls = g
        .inputs
        .iter()
        .map(|x| ("input", &x.name))
        .chain(g.weights.iter().map(|x| ("weight", &x.name)))
        .chain(g.states.iter().map(|x| ("state", &x.name)));
    for (kind, name) in decls {
        if !is_identifier(name) {
            return fail(format!("{kind} '{name}': not a valid identifier"));
        }
        if let Some(prev) = values.insert(name, kind) {
            return fail(format!("{kind} '{name}': duplicate name (also used by a {prev})"));
        }
    }
    let mut outputs = HashSet::new();
    for o in &g.outputs {
        if !is_identifier(&o.name) {
            return fail(format!("output '{}': not a valid identifier", o.name));
        }
        if !outputs.insert(o.name.as_str()) {
            return fail(format!("output '{}': duplicate output name", o.name));
        }
    }
    Ok(())
}

fn check_type(g: &Graph, what: &str, ty: &TensorType) -> Result<(), IrError> {
    for d in ty.shape.dims() {
        if let Dim::Sym(s) = d
            && g.symbols.get(s.0 as usize).is_none()
        {
            return fail(format!("{what}: type refers to undefined symbol #{}", s.0));
        }
    }
    if ty.dtype == DType::Q8 {
        let row = ty.shape.last().map_or(1, |d| g.dim_max(d));
        if let Err(m) = ty.dtype.check_row(row) {
            return fail(format!("{what}: {m} ({})", type_to_string(g, ty)));
        }
    }
    if g.max_bytes(ty).is_none() {
        return fail(format!("{what}: type {} is too large: its size overflows 64 bits", type_to_string(g, ty)));
    }
    Ok(())
}

fn check_symbols_and_types(g: &Graph) -> Result<(), IrError> {
    for s in &g.symbols {
        if s.max == 0 {
            return fail(format!("symbol '{}': max must be at least 1", s.name));
        }
    }
    for x in &g.inputs {
        check_type(g, &format!("input '{}'", x.name), &x.ty)?;
        if x.ty.dtype == DType::Q8 {
            return fail(format!("input '{}': q8 is a KV state dtype", x.name));
        }
    }
    for x in &g.weights {
        check_type(g, &format!("weight '{}'", x.name), &x.ty)?;
        if x.ty.dtype == DType::Q8 {
            return fail(format!("weight '{}': q8 is a KV state dtype (weights are stored with `quantize`)", x.name));
        }
    }
    for x in &g.states {
        check_type(g, &format!("state '{}'", x.name), &x.ty)?;
    }
    for (i, n) in g.nodes.iter().enumerate() {
        check_type(g, &node_label(g, i), &n.ty)?;
    }
    Ok(())
}

fn check_weights(g: &Graph) -> Result<(), IrError> {
    for w in &g.weights {
        let what = format!("weight '{}'", w.name);
        let show = type_to_string(g, &w.ty);
        let Some(dims) = w.ty.shape.dims().iter().map(|d| d.as_const()).collect::<Option<Vec<u64>>>() else {
            return fail(format!("{what}: dims must be constant, got {show}"));
        };
        // Constant dims whose byte size fits (checked above), so the element count fits too.
        let kept = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).unwrap_or(u64::MAX);
        // What the source holds: more than the weight when a rows transform keeps a part.
        let elements = match crate::weights::source_elements(w) {
            Ok(n) => n,
            Err(e) => return fail(format!("{what}: {}", e.message)),
        };
        match &w.source {
            WeightSource::Literal(values) => {
                if values.len() as u64 != elements {
                    return fail(format!(
                        "{what}: literal has {} values, but {show} has {elements} elements",
                        values.len()
                    ));
                }
            }
            WeightSource::Rope { theta, rotary_dim, .. } => {
                if *rotary_dim == 0 || rotary_dim % 2 != 0 {
                    return fail(format!("{what}: rope rotary_dim {rotary_dim} must be even and nonzero"));
                }
                if w.ty.dtype != DType::F32 || dims.len() != 2 || dims.get(1) != Some(&u64::from(rotary_dim / 2)) {
                    return fail(format!(
                        "{what}: a rope table with rotary_dim {rotary_dim} must be f32[P, {}], got {show}",
                        rotary_dim / 2
                    ));
                }
                if !(theta.is_finite() && *theta > 0.0) {
                    return fail(format!("{what}: rope theta {theta:?} must be finite and positive"));
                }
            }
            WeightSource::File { offset, dtype, .. } => {
                if dtype.size().is_none() {
                    return fail(format!("{what}: a file tensor cannot be {dtype} (a KV state dtype)"));
                }
                if dtype.bytes(elements, 1).and_then(|b| b.checked_add(*offset)).is_none() {
                    return fail(format!("{what}: file range at offset {offset} overflows 64 bits"));
                }
            }
            WeightSource::Blocks { offset, format, .. } => {
                let row = dims.last().copied().unwrap_or(1);
                if !row.is_multiple_of(format.block()) {
                    return fail(format!(
                        "{what}: {} rows must be whole blocks of {} elements, got {show}",
                        format.name(),
                        format.block()
                    ));
                }
                if !w.ty.dtype.is_float() {
                    return fail(format!("{what}: {} dequantizes to a float dtype, got {show}", format.name()));
                }
                if format.bytes_for(elements).and_then(|b| b.checked_add(*offset)).is_none() {
                    return fail(format!("{what}: file range at offset {offset} overflows 64 bits"));
                }
            }
        }
        match crate::weights::check_transforms(elements, &w.transforms) {
            Err(m) => return fail(format!("{what}: {m}")),
            Ok(n) if n != kept => {
                return fail(format!("{what}: its transforms leave {n} values for {show}"));
            }
            Ok(_) => {}
        }
        let storage = w.storage();
        if matches!(w.transforms.last(), Some(crate::Transform::Quantize(_))) {
            if w.ty.dtype != DType::F32 {
                return fail(format!("{what}: quantize {} needs an f32 weight, got {show}", storage.name()));
            }
            if let Err(m) = crate::quant::check_storage(storage, w.ty.shape.dims()) {
                return fail(format!("{what}: quantize {m}"));
            }
        }
        if let Some(imp) = &w.importance {
            let cols = crate::quant::rows_cols(w.ty.shape.dims()).map_or(0, |rc| rc.1);
            if let Err(m) = crate::quant::check_importance(imp, cols) {
                return fail(format!("{what}: {m}"));
            }
        }
    }
    Ok(())
}

fn exists(g: &Graph, v: ValueRef) -> bool {
    g.try_type_of(v).is_ok()
}

fn check_references(g: &Graph) -> Result<(), IrError> {
    for (i, n) in g.nodes.iter().enumerate() {
        for (k, &a) in n.args.iter().enumerate() {
            if !exists(g, a) {
                return fail(format!(
                    "{}: operand {k} refers to undefined value {}",
                    node_label(g, i),
                    g.value_name(a)
                ));
            }
        }
    }
    for o in &g.outputs {
        if !exists(g, o.value) {
            return fail(format!("output '{}': refers to undefined value {}", o.name, g.value_name(o.value)));
        }
    }
    Ok(())
}

/// The use-def graph of nodes (an edge from each operand node to its user) has no cycle.
fn check_acyclic(g: &Graph) -> Result<(), IrError> {
    let mut dg: DiGraph<(), ()> = DiGraph::with_capacity(g.nodes.len(), 0);
    let ids: Vec<NodeIndex> = g.nodes.iter().map(|_| dg.add_node(())).collect();
    for (i, n) in g.nodes.iter().enumerate() {
        for a in &n.args {
            if let ValueRef::Node(j) = *a
                && let (Some(&from), Some(&to)) = (ids.get(j as usize), ids.get(i))
            {
                dg.add_edge(from, to, ());
            }
        }
    }
    match toposort(&dg, None) {
        Ok(_) => Ok(()),
        Err(cycle) => {
            let i = cycle.node_id().index();
            fail(format!("{}: is part of a cycle of node references", node_label(g, i)))
        }
    }
}

fn check_schedule_order(g: &Graph) -> Result<(), IrError> {
    for (i, n) in g.nodes.iter().enumerate() {
        for a in &n.args {
            if let ValueRef::Node(j) = *a
                && j as usize >= i
            {
                return fail(format!("{}: uses %{j}, which is not scheduled before it", node_label(g, i)));
            }
        }
    }
    Ok(())
}

fn check_node_types(g: &Graph) -> Result<(), IrError> {
    for (i, n) in g.nodes.iter().enumerate() {
        let label = node_label(g, i);
        let args: Vec<&TensorType> = n
            .args
            .iter()
            .map(|&a| g.try_type_of(a))
            .collect::<Result<_, _>>()
            .map_err(|e| IrError::new(format!("{label}: {}", e.message)))?;
        let inferred = crate::infer::infer_type(g, &n.op, &args)
            .map_err(|e| IrError::new(format!("{label}: {}", strip_op_prefix(&e.message, &n.op))))?;
        if inferred != n.ty {
            return fail(format!(
                "{label}: stored type {} differs from the inferred type {}",
                type_to_string(g, &n.ty),
                type_to_string(g, &inferred)
            ));
        }
    }
    Ok(())
}

fn check_state_writes(g: &Graph) -> Result<(), IrError> {
    let state_name = |s: u32| g.value_name(ValueRef::State(s));
    // state index -> the node writing it
    let mut writer: HashMap<u32, usize> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if n.op != Op::CacheWrite {
            continue;
        }
        match n.args.first() {
            Some(&ValueRef::State(s)) => {
                if let Some(prev) = writer.insert(s, i) {
                    return fail(format!(
                        "{}: state '{}' is already written by %{prev}; a state is written at most once",
                        node_label(g, i),
                        state_name(s)
                    ));
                }
            }
            Some(&other) => {
                return fail(format!(
                    "{}: operand 0 must be a state itself, got {}",
                    node_label(g, i),
                    g.value_name(other)
                ));
            }
            None => return fail(format!("{}: has no operands", node_label(g, i))),
        }
    }
    for (i, n) in g.nodes.iter().enumerate() {
        for (k, a) in n.args.iter().enumerate() {
            if let ValueRef::State(s) = *a
                && let Some(&w) = writer.get(&s)
                && !(w == i && k == 0)
            {
                return fail(format!(
                    "{}: reads state '{}' directly, but %{w} writes it: use %{w} instead",
                    node_label(g, i),
                    state_name(s)
                ));
            }
        }
    }
    for o in &g.outputs {
        if let ValueRef::State(s) = o.value
            && let Some(&w) = writer.get(&s)
        {
            return fail(format!(
                "output '{}': reads state '{}' directly, but %{w} writes it: use %{w} instead",
                o.name,
                state_name(s)
            ));
        }
    }
    Ok(())
}
