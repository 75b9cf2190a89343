//! A small rewrite engine for pattern rules.
//!
//! A [`Rule`] looks at one node of the *old* graph (the root of its pattern) and, when the
//! pattern matches, emits replacement nodes into the *new* graph and returns the value that
//! replaces the root. Nodes the pattern covered stay behind, unused; [`DeadCodeElimination`]
//! removes them. [`rewrite_to_fixpoint`] sweeps until no rule fires, so one rule's output can
//! root another's pattern (a recognised norm exposes a reshape pair, which collapses).
//!
//! Rules only read the old graph, whose nodes are all defined before the root, so every
//! operand a rule needs already has its new value ([`Rewrite::map`]).

use crate::DeadCodeElimination;
use crate::Pass;
use edgec_ir::weights::materialize_f32;
use edgec_ir::{Dim, Graph, IrError, Node, Op, Shape, TensorType, ValueRef, Weight};

/// One named pattern: `apply` returns the replacement of node `root`, or `None`.
pub trait Rule {
    fn name(&self) -> &'static str;
    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError>;
}

/// The old graph (for matching) and the new one being built.
pub struct Rewrite<'g> {
    pub old: &'g Graph,
    pub new: Graph,
    /// New value of each old node (`None` until the sweep reaches it).
    map: Vec<Option<ValueRef>>,
    /// Uses of each old node (operands and graph outputs).
    uses: Vec<u32>,
}

impl<'g> Rewrite<'g> {
    fn new(old: &'g Graph) -> Rewrite<'g> {
        let mut uses = vec![0u32; old.nodes.len()];
        let all_uses = old.nodes.iter().flat_map(|n| n.args.iter()).chain(old.outputs.iter().map(|o| &o.value));
        for &v in all_uses {
            if let ValueRef::Node(i) = v {
                uses[i as usize] += 1;
            }
        }
        let mut new = old.clone();
        new.nodes.clear();
        Rewrite { old, new, map: vec![None; old.nodes.len()], uses }
    }

    /// The new value of an old one. Inputs, weights and states keep their references.
    pub fn map(&self, v: ValueRef) -> Result<ValueRef, IrError> {
        match v {
            ValueRef::Node(i) => self
                .map
                .get(i as usize)
                .copied()
                .flatten()
                .ok_or_else(|| IrError::new(format!("rewrite: %{i} used before it is defined"))),
            other => Ok(other),
        }
    }

    /// The old node defining `v`, if `v` is a node.
    pub fn def(&self, v: ValueRef) -> Option<&'g Node> {
        match v {
            ValueRef::Node(i) => self.old.nodes.get(i as usize),
            _ => None,
        }
    }

    /// The old node defining `v` when its op satisfies `pred`.
    pub fn def_op(&self, v: ValueRef, pred: impl Fn(&Op) -> bool) -> Option<&'g Node> {
        self.def(v).filter(|n| pred(&n.op))
    }

    /// How many times an old value is used (operands and outputs); inputs and weights count 0.
    pub fn uses(&self, v: ValueRef) -> u32 {
        match v {
            ValueRef::Node(i) => self.uses.get(i as usize).copied().unwrap_or(0),
            _ => 0,
        }
    }

    pub fn ty(&self, v: ValueRef) -> &'g TensorType {
        self.old.type_of(v)
    }

    /// The values of a small weight (at most `max_elements`), or `None` for anything else.
    pub fn weight_values(&self, v: ValueRef, max_elements: u64) -> Option<Vec<f32>> {
        let ValueRef::Weight(i) = v else { return None };
        let w = self.old.weights.get(i as usize)?;
        if self.old.max_elements(&w.ty)? > max_elements {
            return None;
        }
        materialize_f32(w).ok()
    }

    /// The value of a one-element weight (a scalar constant such as an epsilon).
    pub fn scalar(&self, v: ValueRef) -> Option<f32> {
        match self.weight_values(v, 1)?.as_slice() {
            [x] => Some(*x),
            _ => None,
        }
    }

    /// Appends a node to the new graph, inferring its type.
    pub fn emit(&mut self, op: Op, args: Vec<ValueRef>) -> Result<ValueRef, IrError> {
        self.new.add_node(op, args)
    }

    /// `x` (a new value) reshaped to `dims`, or `x` itself when it already has that shape.
    pub fn reshape(&mut self, x: ValueRef, dims: Vec<Dim>) -> Result<ValueRef, IrError> {
        let shape = Shape(dims);
        if self.new.type_of(x).shape == shape {
            return Ok(x);
        }
        self.emit(Op::Reshape { shape }, vec![x])
    }

    /// The new graph's weight called `name`, added by `make` if there is none yet (so layers
    /// share what a rule derives, e.g. one rotary table).
    pub fn weight(&mut self, name: &str, make: impl FnOnce() -> Weight) -> ValueRef {
        if let Some(i) = self.new.weights.iter().position(|w| w.name == name) {
            return ValueRef::Weight(i as u32);
        }
        let mut w = make();
        w.name = name.to_string();
        self.new.weights.push(w);
        ValueRef::Weight(self.new.weights.len() as u32 - 1)
    }
}

/// How often each rule fired in one [`rewrite_to_fixpoint`].
pub type Fired = Vec<(&'static str, usize)>;

/// Sweeps `rules` over the graph until none fires (at most `max_sweeps` times), removing the
/// nodes the replaced patterns leave behind after each sweep.
pub fn rewrite_to_fixpoint(g: &mut Graph, rules: &[&dyn Rule], max_sweeps: usize) -> Result<Fired, IrError> {
    let mut fired: Fired = rules.iter().map(|r| (r.name(), 0)).collect();
    for _ in 0..max_sweeps {
        let (new, count) = sweep(g, rules, &mut fired)?;
        *g = new;
        DeadCodeElimination.run(g).map_err(|e| IrError::new(e.to_string()))?;
        if count == 0 {
            break;
        }
    }
    Ok(fired)
}

fn sweep(g: &Graph, rules: &[&dyn Rule], fired: &mut Fired) -> Result<(Graph, usize), IrError> {
    let mut cx = Rewrite::new(g);
    let mut count = 0;
    for i in 0..g.nodes.len() {
        let mut replaced = None;
        for (r, rule) in rules.iter().enumerate() {
            if let Some(v) = rule.apply(&mut cx, i as u32)? {
                if cx.new.type_of(v) != &g.nodes[i].ty {
                    return Err(IrError::new(format!(
                        "rule '{}' replaced %{i}: {:?} by a value of type {:?}",
                        rule.name(),
                        g.nodes[i].ty,
                        cx.new.type_of(v)
                    )));
                }
                fired[r].1 += 1;
                count += 1;
                replaced = Some(v);
                break;
            }
        }
        let v = match replaced {
            Some(v) => v,
            None => {
                let node = &g.nodes[i];
                let args = node.args.iter().map(|&a| cx.map(a)).collect::<Result<Vec<_>, _>>()?;
                cx.new.nodes.push(Node { op: node.op.clone(), args, ty: node.ty.clone() });
                ValueRef::Node(cx.new.nodes.len() as u32 - 1)
            }
        };
        cx.map[i] = Some(v);
    }
    let outputs = cx.new.outputs.iter().map(|o| cx.map(o.value)).collect::<Result<Vec<_>, _>>()?;
    for (out, v) in cx.new.outputs.iter_mut().zip(outputs) {
        out.value = v;
    }
    Ok((cx.new, count))
}
