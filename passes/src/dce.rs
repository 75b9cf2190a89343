use crate::{Changed, Pass, PassError};
use edgec_ir::{Graph, ValueRef};

/// Removes nodes that no output needs, and weights that no node uses. Nodes that write state
/// (`cache_write`) are roots: their effect outlives the call.
pub struct DeadCodeElimination;

impl Pass for DeadCodeElimination {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        let mut live = vec![false; g.nodes.len()];
        for out in &g.outputs {
            if let ValueRef::Node(i) = out.value {
                live[i as usize] = true;
            }
        }
        for (i, node) in g.nodes.iter().enumerate() {
            if node.op.has_side_effect() {
                live[i] = true;
            }
        }
        // Operands come before their users, so one backward sweep finds every live node.
        for i in (0..g.nodes.len()).rev() {
            if live[i] {
                for &a in &g.nodes[i].args {
                    if let ValueRef::Node(j) = a {
                        live[j as usize] = true;
                    }
                }
            }
        }
        let mut changed = Changed::No;
        if live.iter().any(|&l| !l) {
            g.retain_nodes(&live);
            changed = Changed::Yes;
        }

        let mut used = vec![false; g.weights.len()];
        let uses = g.nodes.iter().flat_map(|n| n.args.iter()).chain(g.outputs.iter().map(|o| &o.value));
        for &v in uses {
            if let ValueRef::Weight(w) = v {
                used[w as usize] = true;
            }
        }
        if used.iter().any(|&u| !u) {
            g.retain_weights(&used);
            changed = Changed::Yes;
        }
        Ok(changed)
    }
}
