//! The decoder signature every compiled graph must have, and the facts derived from it.

use crate::error::BackendError;
use crate::weights_file::WeightsLayout;
use edgec_ir::{DType, Dim, Graph, Op, TensorType, ValueRef};
use edgec_passes::plan::MemoryPlan;
use edgec_runtime::abi::{ABI_VERSION, ModelInfo};

/// What the entry point needs to know about the graph as a whole.
#[derive(Clone, Debug)]
pub(crate) struct Signature {
    pub max_tokens: u32,
    pub vocab: u32,
    pub max_context: u32,
    /// The node written straight into the caller's `logits`.
    pub output_node: usize,
}

fn sig_err(msg: impl Into<String>) -> BackendError {
    BackendError::Signature(msg.into())
}

fn to_u32(v: u64, what: &str) -> Result<u32, BackendError> {
    u32::try_from(v).map_err(|_| sig_err(format!("{what} {v} does not fit in 32 bits")))
}

/// Checks inputs `ids: i32[seq]`, `pos: i32[]`, one output `logits: f32[seq, vocab]` produced by
/// a node, f32, f16 or q8 states `[max_context, W]` sharing one row count, f32 weights, and that every
/// symbolic dim is `seq`.
pub(crate) fn check(g: &Graph) -> Result<Signature, BackendError> {
    if g.inputs.len() != 2 {
        return Err(sig_err(format!("expected inputs `ids: i32[seq]`, `pos: i32[]`; got {} inputs", g.inputs.len())));
    }
    let ids = &g.inputs[0];
    let seq = match (ids.ty.dtype, ids.ty.shape.dims()) {
        (DType::I32, [Dim::Sym(s)]) => *s,
        _ => return Err(sig_err(format!("input 0 `{}` must be i32[seq] with a symbolic seq", ids.name))),
    };
    let pos = &g.inputs[1];
    if pos.ty.dtype != DType::I32 || pos.ty.shape.rank() != 0 {
        return Err(sig_err(format!("input 1 `{}` must be a scalar i32 position", pos.name)));
    }
    let max_tokens = to_u32(g.symbols[seq.0 as usize].max, "max_tokens")?;
    if max_tokens == 0 {
        return Err(sig_err("the seq symbol's max is 0"));
    }
    if g.outputs.len() != 1 {
        return Err(sig_err(format!("expected one output `logits`, got {}", g.outputs.len())));
    }
    let out = &g.outputs[0];
    let output_node = match out.value {
        ValueRef::Node(i) if (i as usize) < g.nodes.len() => i as usize,
        v => return Err(sig_err(format!("output `{}` must be a node result, got {}", out.name, g.value_name(v)))),
    };
    let oty = &g.nodes[output_node].ty;
    let vocab = match (oty.dtype, oty.shape.dims()) {
        (DType::F32, [Dim::Sym(s), Dim::Const(v)]) if *s == seq => to_u32(*v, "vocab")?,
        _ => return Err(sig_err(format!("output `{}` must be f32[seq, vocab]", out.name))),
    };
    if matches!(g.nodes[output_node].op, Op::CacheWrite) {
        return Err(sig_err("the output cannot be a cache_write result"));
    }
    let mut context: Option<u64> = None;
    for st in &g.states {
        match (st.ty.dtype, st.ty.shape.dims()) {
            (DType::F32 | DType::F16 | DType::Q8, [Dim::Const(c), Dim::Const(_)]) => {
                if context.is_some_and(|x| x != *c) {
                    return Err(sig_err(format!(
                        "state `{}` has {c} rows; all states must share max_context",
                        st.name
                    )));
                }
                context = Some(*c);
            }
            _ => {
                return Err(sig_err(format!(
                    "state `{}` must be f32, f16 or q8 [max_context, W] with constant dims",
                    st.name
                )));
            }
        }
    }
    for w in &g.weights {
        if w.ty.dtype != DType::F32 {
            return Err(BackendError::Weight {
                name: w.name.clone(),
                message: format!("dtype {} unsupported; weights must be f32", w.ty.dtype),
            });
        }
        if w.ty.shape.dims().iter().any(|d| d.as_const().is_none()) {
            return Err(BackendError::Weight { name: w.name.clone(), message: "shape must be constant".into() });
        }
    }
    for (i, n) in g.nodes.iter().enumerate() {
        for d in n.ty.shape.dims() {
            if let Dim::Sym(s) = d
                && *s != seq
            {
                return Err(BackendError::node(g, i, "every symbolic dim must be the ids length `seq`"));
            }
        }
    }
    // Without a KV cache, the context bound comes from the rotary tables (if any).
    let mut max_context = context.unwrap_or(u64::from(u32::MAX));
    if context.is_none() {
        for n in &g.nodes {
            if let Op::Rope { .. } = n.op {
                let p = g.dim_max(g.type_of(n.args[1]).shape.dims()[0]);
                max_context = max_context.min(p);
            }
        }
    }
    let max_context = to_u32(max_context, "max_context")?;
    Ok(Signature { max_tokens, vocab, max_context, output_node })
}

/// Checks the plan against the graph: every arena node has a slot inside the arena, every
/// state one inside the state block.
pub(crate) fn check_plan(g: &Graph, plan: &MemoryPlan, sig: &Signature) -> Result<(), BackendError> {
    check_plan_outputs(g, plan, &[sig.output_node])
}

/// [`check_plan`] with the nodes written straight into caller buffers given explicitly.
pub(crate) fn check_plan_outputs(g: &Graph, plan: &MemoryPlan, outputs: &[usize]) -> Result<(), BackendError> {
    let perr = |m: String| BackendError::Plan(m);
    if plan.offsets.len() != g.nodes.len() || plan.sizes.len() != g.nodes.len() {
        return Err(perr(format!("plan covers {} nodes, graph has {}", plan.offsets.len(), g.nodes.len())));
    }
    if plan.state_offsets.len() != g.states.len() {
        return Err(perr(format!("plan covers {} states, graph has {}", plan.state_offsets.len(), g.states.len())));
    }
    for (i, n) in g.nodes.iter().enumerate() {
        let outside = outputs.contains(&i) || matches!(n.op, Op::CacheWrite);
        let bytes = g.max_bytes(&n.ty).ok_or_else(|| BackendError::node(g, i, "size overflows"))?;
        match (outside, plan.offsets[i]) {
            (true, _) => {}
            (false, None) => return Err(BackendError::node(g, i, "memory plan gives no arena offset")),
            (false, Some(o)) => {
                if !o.is_multiple_of(4) || o.checked_add(bytes).is_none_or(|e| e > plan.arena_size) {
                    return Err(BackendError::node(
                        g,
                        i,
                        format!("arena slot {o}+{bytes} outside the {}-byte arena", plan.arena_size),
                    ));
                }
            }
        }
    }
    for (s, st) in g.states.iter().enumerate() {
        let bytes = g.max_bytes(&st.ty).unwrap_or(u64::MAX);
        let o = plan.state_offsets[s];
        if !o.is_multiple_of(4) || o.checked_add(bytes).is_none_or(|e| e > plan.state_size) {
            return Err(perr(format!(
                "state `{}` slot {o}+{bytes} outside the {}-byte state block",
                st.name, plan.state_size
            )));
        }
    }
    Ok(())
}

/// Which entry point a graph gets: the decoder's `NAME_forward`, or `NAME_run` for a general
/// graph (see `generic.rs`).
pub(crate) enum Kind {
    Decoder(Signature),
    General(crate::generic::GenericSig),
}

/// The decoder signature if the graph has it, else the general-graph checks; when both fail,
/// both reasons.
pub(crate) fn kind(g: &Graph) -> Result<Kind, BackendError> {
    match check(g) {
        Ok(s) => Ok(Kind::Decoder(s)),
        Err(de) => match crate::generic::check(g) {
            Ok(gs) => Ok(Kind::General(gs)),
            Err(ge) => {
                let inner = |e: BackendError| match e {
                    BackendError::Signature(s) => s,
                    e => e.to_string(),
                };
                Err(sig_err(format!("{}; nor is it a general graph: {}", inner(de), inner(ge))))
            }
        },
    }
}

/// The `ModelInfo` the object exports as `NAME_info` (for a general graph: `vocab` and
/// `max_context` 0, `max_tokens` the bound of its symbol).
pub fn model_info(
    g: &Graph,
    plan: &MemoryPlan,
    layout: &WeightsLayout,
    hash: [u8; 32],
) -> Result<ModelInfo, BackendError> {
    let sig = match kind(g)? {
        Kind::Decoder(s) => s,
        Kind::General(gs) => {
            check_plan_outputs(g, plan, &gs.outputs)?;
            if layout.offsets.len() != g.weights.len() {
                return Err(BackendError::Plan("weights layout does not match the graph".into()));
            }
            return Ok(crate::generic::info(&gs, plan, layout, hash));
        }
    };
    check_plan(g, plan, &sig)?;
    if layout.offsets.len() != g.weights.len() {
        return Err(BackendError::Plan(format!(
            "weights layout has {} entries, graph has {} weights",
            layout.offsets.len(),
            g.weights.len()
        )));
    }
    Ok(ModelInfo {
        abi_version: ABI_VERSION,
        vocab: sig.vocab,
        max_tokens: sig.max_tokens,
        max_context: sig.max_context,
        arena_size: plan.arena_size,
        state_size: plan.state_size,
        weights_size: layout.file_size,
        content_hash: hash,
    })
}

/// A shape's dims split into the run-time row count (`const_factor * n_tokens^seq_powers`) and
/// a constant last dim (`1` for a scalar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RowsCols {
    pub const_factor: u64,
    pub seq_powers: u32,
    pub cols: u64,
}

impl RowsCols {
    /// What the run-time row count depends on: two values with equal keys have equal rows.
    pub fn rows_key(&self) -> (u64, u32) {
        (self.const_factor, self.seq_powers)
    }
}

pub(crate) fn rows_cols(ty: &TensorType) -> Option<RowsCols> {
    let dims = ty.shape.dims();
    let (lead, cols) = match dims.split_last() {
        None => (&[][..], 1),
        Some((last, lead)) => (lead, last.as_const()?),
    };
    let mut rc = RowsCols { const_factor: 1, seq_powers: 0, cols };
    for d in lead {
        match d {
            Dim::Const(n) => rc.const_factor = rc.const_factor.checked_mul(*n)?,
            Dim::Sym(_) => rc.seq_powers += 1,
        }
    }
    Some(rc)
}
