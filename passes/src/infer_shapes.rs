use crate::{Changed, Pass, PassError};
use edgec_ir::{Graph, infer::infer_type};

/// Recomputes every node's result type from its operands with the op's type rule, so a rewrite
/// that changed an operand's shape propagates to its users.
pub struct InferShapes;

impl Pass for InferShapes {
    fn name(&self) -> &'static str {
        "infer-shapes"
    }

    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        let mut changed = Changed::No;
        for i in 0..g.nodes.len() {
            let node = &g.nodes[i];
            let arg_types = node
                .args
                .iter()
                .map(|&a| g.try_type_of(a))
                .collect::<Result<Vec<_>, _>>()
                .and_then(|types| infer_type(g, &node.op, &types))
                .map_err(|e| PassError::Failed {
                    pass: self.name(),
                    error: edgec_ir::IrError::new(format!("%{i} ({}): {}", node.op.name(), e.message)),
                })?;
            if g.nodes[i].ty != arg_types {
                g.nodes[i].ty = arg_types;
                changed = Changed::Yes;
            }
        }
        Ok(changed)
    }
}
