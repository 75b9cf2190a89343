//! Turns a recognised causal LM graph (an ONNX export: token ids `[1, seq]` in, logits out,
//! attention over the whole sequence from position 0) into the decoder contract the backend
//! compiles to `NAME_forward`: `ids: i32[seq]`, `pos: i32[]`, `logits: f32[seq, vocab]`, and
//! a KV cache state per attention, written by `cache_write` at `pos`.
//!
//! That is only sound when every position is computed from its own row except inside
//! `attention` (which then reads the cache), so the pass checks the graph is row-wise in the
//! sequence and refuses, naming the node, anything that mixes positions some other way.

use crate::recognize::START_POS;
use crate::rewrite::{Rewrite, Rule, rewrite_to_fixpoint};
use crate::{Changed, DeadCodeElimination, Pass, PassError, SimplifyLayout};
use edgec_ir::{DType, Dim, Graph, IrError, Op, Shape, SymbolId, TensorType, ValueRef};

pub struct DecoderSignature {
    /// Positions each KV cache holds.
    pub max_context: u64,
    /// Most tokens per call: the bound of `seq`.
    pub max_tokens: u64,
}

impl Pass for DecoderSignature {
    fn name(&self) -> &'static str {
        "decoder-signature"
    }

    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        let fail = |error: String| PassError::Failed { pass: "decoder-signature", error: IrError::new(error) };
        self.convert(g).map_err(fail)?;
        SimplifyLayout.run(g)?;
        DeadCodeElimination.run(g)?;
        check_row_wise(g).map_err(fail)?;
        Ok(Changed::Yes)
    }
}

const NOT_A_DECODER: &str = "not a causal LM the decoder signature fits";

impl DecoderSignature {
    fn convert(&self, g: &mut Graph) -> Result<(), String> {
        let seq = match g.symbols.as_slice() {
            [_] => Dim::Sym(SymbolId(0)),
            s => return Err(format!("{NOT_A_DECODER}: it has {} symbolic dims, not one (the sequence)", s.len())),
        };
        let [input] = g.inputs.as_slice() else {
            return Err(format!("{NOT_A_DECODER}: it has {} inputs, not one (the token ids)", g.inputs.len()));
        };
        let ids_dims = input.ty.shape.dims();
        if input.ty.dtype != DType::I32 || !(ids_dims == [seq] || ids_dims == [Dim::Const(1), seq]) {
            return Err(format!(
                "{NOT_A_DECODER}: input '{}' is {:?}, not token ids [1, seq] or [seq]",
                input.name, input.ty
            ));
        }
        let [output] = g.outputs.as_slice() else {
            return Err(format!("{NOT_A_DECODER}: it has {} outputs, not one (the logits)", g.outputs.len()));
        };
        let out_ty = g.type_of(output.value);
        let vocab = match out_ty.shape.dims() {
            [Dim::Const(1), s, v] | [s, v] if *s == seq => v.as_const(),
            _ => None,
        }
        .filter(|_| out_ty.dtype == DType::F32)
        .ok_or_else(|| {
            format!("{NOT_A_DECODER}: output '{}' is {out_ty:?}, not logits [1, seq, vocab]", output.name)
        })?;
        if !g.nodes.iter().any(|n| matches!(n.op, Op::Attention { .. })) {
            return Err(format!("{NOT_A_DECODER}: no attention was recognised"));
        }
        for n in &g.nodes {
            if let (Op::Rope { .. }, [_, cos, ..]) = (&n.op, n.args.as_slice()) {
                let rows = g.type_of(*cos).shape.dims()[0].as_const().unwrap_or(0);
                if rows < self.max_context {
                    return Err(format!(
                        "the rotary tables cover {rows} positions, fewer than max_context {}: import with a \
                         sequence bound of at least max_context",
                        self.max_context
                    ));
                }
            }
        }

        // ids: [1, seq] → [seq]; the reshape that flattened it becomes a no-op.
        g.symbols[0].name = "seq".into();
        g.symbols[0].max = self.max_tokens;
        g.inputs[0].name = "ids".into();
        g.inputs[0].ty = TensorType::new(DType::I32, Shape(vec![seq]));
        for n in &mut g.nodes {
            if n.args.contains(&ValueRef::Input(0))
                && !(matches!(n.op, Op::Reshape { .. }) && n.ty.shape.dims() == [seq])
            {
                return Err(format!("{NOT_A_DECODER}: the token ids are used other than as a list of ids"));
            }
        }
        let pos = g.add_input("pos", TensorType::new(DType::I32, Shape(vec![])));
        if let Some(start) = g.weights.iter().position(|w| w.name == START_POS) {
            let start = ValueRef::Weight(start as u32);
            for a in g.nodes.iter_mut().flat_map(|n| n.args.iter_mut()) {
                if *a == start {
                    *a = pos;
                }
            }
        }

        // Every attention reads a cache its keys and values are first written into.
        let rule = CacheAttention { max_context: self.max_context, pos };
        rewrite_to_fixpoint(g, &[&rule], 2).map_err(|e| e.to_string())?;

        // logits: [1, seq, vocab] → [seq, vocab].
        let out = g.outputs[0].value;
        if g.type_of(out).shape.rank() == 3 {
            let flat = Shape(vec![seq, Dim::Const(vocab)]);
            let v = g.add_node(Op::Reshape { shape: flat }, vec![out]).map_err(|e| e.to_string())?;
            g.outputs[0].value = v;
        }
        g.outputs[0].name = "logits".into();
        Ok(())
    }
}

/// `attention(q, k, v, pos)` over the sequence's own keys → `cache_write`s into a new state
/// per layer and attention over the states.
struct CacheAttention {
    max_context: u64,
    pos: ValueRef,
}

impl Rule for CacheAttention {
    fn name(&self) -> &'static str {
        "cache-attention"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let (Op::Attention { .. }, &[q, k, v, _]) = (&n.op, n.args.as_slice()) else { return Ok(None) };
        if matches!(k, ValueRef::State(_)) || cx.def_op(k, |op| *op == Op::CacheWrite).is_some() {
            return Ok(None);
        }
        let layer = cx.new.states.len() / 2;
        let mut cached = Vec::new();
        for (x, what) in [(k, "k"), (v, "v")] {
            let width = cx.ty(x).shape.dims()[1];
            let ty = TensorType::new(DType::F32, Shape(vec![Dim::Const(self.max_context), width]));
            let state = cx.new.add_state(format!("layers.{layer}.{what}_cache"), ty);
            let x = cx.map(x)?;
            cached.push(cx.emit(Op::CacheWrite, vec![state, x, self.pos])?);
        }
        let q = cx.map(q)?;
        cx.emit(n.op.clone(), vec![q, cached[0], cached[1], self.pos]).map(Some)
    }
}

/// Checks that sequence positions only meet inside `attention`: the sequence is the leading
/// axis of every value that has it, and every op maps row `s` of its operands to row `s` of its
/// result.
fn check_row_wise(g: &Graph) -> Result<(), String> {
    let seq = Dim::Sym(SymbolId(0));
    let has = |v: ValueRef| g.type_of(v).shape.dims().contains(&seq);
    let leads = |v: ValueRef| g.type_of(v).shape.dims().first() == Some(&seq);
    for (i, n) in g.nodes.iter().enumerate() {
        let seq_args: Vec<ValueRef> = n.args.iter().copied().filter(|&a| has(a)).collect();
        let rank = n.ty.shape.rank();
        let ok = seq_args.iter().all(|&a| leads(a) && g.type_of(a).shape.dims()[1..].iter().all(|d| *d != seq))
            && (!n.ty.shape.dims().contains(&seq) || n.ty.shape.dims()[0] == seq)
            && match &n.op {
                _ if seq_args.is_empty() => true,
                Op::Gather
                | Op::Rope { .. }
                | Op::Attention { .. }
                | Op::CacheWrite
                | Op::Unary(_)
                | Op::Cast { .. } => true,
                Op::MatMul { .. } | Op::RmsNorm { .. } | Op::LayerNorm { .. } => seq_args == [n.args[0]],
                // Row `s` of the result reads row `s` of `x` and of the residual.
                Op::Linear { .. } => {
                    let residual = n.op.linear_operands().residual.map(|r| n.args[r]);
                    seq_args.iter().all(|&a| a == n.args[0] || Some(a) == residual)
                }
                // Operands with the sequence have the result's rank, so it aligns with theirs.
                Op::Binary(_) | Op::Select => seq_args.iter().all(|&a| g.type_of(a).shape.rank() == rank),
                Op::Softmax | Op::Reduce(_) => rank >= 2,
                Op::Reshape { .. } | Op::Expand { .. } => leads(ValueRef::Node(i as u32)),
                Op::Transpose { perm } => perm.first() == Some(&0),
                Op::Concat { axis } | Op::Slice { axis, .. } => *axis != 0,
                Op::BatchMatMul => false,
            };
        if !ok {
            return Err(format!(
                "{NOT_A_DECODER}: node %{i} ({}) mixes sequence positions outside attention \
                 (an unrecognised attention or position-dependent pattern)",
                n.op.name()
            ));
        }
    }
    Ok(())
}
