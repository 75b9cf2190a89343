//! Dispatch groups: runs of consecutive nodes the backend launches with one `parallel_for`,
//! so a decode step waits on fewer barriers (a Llama layer's q, k and v projections are one
//! launch; its two ropes and two cache writes another).
//!
//! Two kinds, both decided from the graph alone so the memory planner and the backend agree:
//! - [`GroupKind::Tasks`]: members that do not depend on each other; their task ranges are
//!   concatenated, so threads split the union.
//! - [`GroupKind::Rows`]: row-local members over the same rows (each task of each member
//!   computes one row of its result from row `t` of what the group produced); task `t` runs
//!   every member's row `t` in order, so a member may read an earlier member's result.
//!
//! Members of a group run interleaved, so the planner treats the group as one step: every
//! operand read in a group stays live to its end, and every result is live from its start.

use edgec_ir::{Dim, Graph, Op, ValueRef};
use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// One node.
    Single,
    /// Independent members, task ranges concatenated.
    Tasks,
    /// Row-local members over the same rows, interleaved row by row.
    Rows,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub nodes: Range<usize>,
    pub kind: GroupKind,
}

/// The graph's nodes, in schedule order, cut into dispatch groups (greedily, each group as long
/// as its kind allows).
pub fn dispatch_groups(g: &Graph) -> Vec<Group> {
    let mut groups = Vec::new();
    let mut i = 0;
    while i < g.nodes.len() {
        let mut group = Group { nodes: i..i + 1, kind: GroupKind::Single };
        while group.nodes.end < g.nodes.len() {
            let next = group.nodes.end;
            let Some(kind) = joins(g, &group, next) else { break };
            group.kind = kind;
            group.nodes.end += 1;
        }
        i = group.nodes.end;
        groups.push(group);
    }
    groups
}

/// Every node in a group of its own: the launches without any fusion.
pub fn singles(g: &Graph) -> Vec<Group> {
    (0..g.nodes.len()).map(|i| Group { nodes: i..i + 1, kind: GroupKind::Single }).collect()
}

/// Per node, the range of its dispatch group (a one-node range when it runs alone).
pub fn group_of_node(g: &Graph, groups: &[Group]) -> Vec<Range<usize>> {
    let mut of = vec![0..0; g.nodes.len()];
    for grp in groups {
        for i in grp.nodes.clone() {
            of[i] = grp.nodes.clone();
        }
    }
    of
}

/// The kind `group` has once node `next` joins it, if it can.
fn joins(g: &Graph, group: &Group, next: usize) -> Option<GroupKind> {
    let members = group.nodes.clone();
    let rows = |i: usize| row_dims(g, i);
    let row_group = |kind: GroupKind| {
        kind != GroupKind::Tasks
            && rows(next).is_some()
            && members.clone().all(|m| rows(m) == rows(next))
            && reads_members_row_locally(g, members.clone(), next)
    };
    match group.kind {
        GroupKind::Rows => row_group(GroupKind::Rows).then_some(GroupKind::Rows),
        GroupKind::Tasks => independent(g, members, next).then_some(GroupKind::Tasks),
        GroupKind::Single if row_group(GroupKind::Single) => Some(GroupKind::Rows),
        GroupKind::Single => independent(g, members, next).then_some(GroupKind::Tasks),
    }
}

/// For a row-local op, the leading dims of the rows its tasks run over (all dims of the value
/// its rows come from but the last); `None` for any other op.
fn row_dims(g: &Graph, i: usize) -> Option<Vec<Dim>> {
    let n = &g.nodes[i];
    let rows_of = match n.op {
        Op::RmsNorm { .. }
        | Op::LayerNorm { .. }
        | Op::Rope { .. }
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Softmax
        | Op::Reduce(_)
        | Op::Gather => &n.ty,
        Op::CacheWrite => g.type_of(n.args[1]),
        _ => return None,
    };
    let d = rows_of.shape.dims();
    (!d.is_empty()).then(|| d[..d.len() - 1].to_vec())
}

/// Whether `next` reads every result of `members` only at its own row: through an operand of
/// its result's exact row layout that the op reads row by row.
fn reads_members_row_locally(g: &Graph, members: Range<usize>, next: usize) -> bool {
    let n = &g.nodes[next];
    n.args.iter().enumerate().all(|(k, &a)| {
        let ValueRef::Node(j) = a else { return true };
        if !members.contains(&(j as usize)) {
            return true;
        }
        let row_wise_operand = match n.op {
            Op::CacheWrite => k == 1,
            Op::Binary(_) => g.type_of(a) == &n.ty,
            Op::Rope { .. } | Op::RmsNorm { .. } | Op::LayerNorm { .. } => k == 0,
            Op::Unary(_) | Op::Softmax | Op::Reduce(_) => true,
            _ => false,
        };
        row_wise_operand && row_dims(g, j as usize) == row_dims(g, next)
    })
}

/// Whether `next` neither reads a result of `members` nor touches a state one of them writes
/// (or writes a state one of them reads).
fn independent(g: &Graph, members: Range<usize>, next: usize) -> bool {
    let written = |i: usize| match (&g.nodes[i].op, g.nodes[i].args.first()) {
        (Op::CacheWrite, Some(&ValueRef::State(s))) => Some(s),
        _ => None,
    };
    let reads_state = |i: usize, s: u32| g.nodes[i].args.contains(&ValueRef::State(s));
    let n = &g.nodes[next];
    let reads_member = n.args.iter().any(|&a| matches!(a, ValueRef::Node(j) if members.contains(&(j as usize))));
    let state_clash = members
        .clone()
        .any(|m| written(m).is_some_and(|s| reads_state(next, s)) || written(next).is_some_and(|s| reads_state(m, s)));
    !reads_member && !state_clash
}

/// The graph's kernel launches, one line per kernel (`ir::text::kernel_to_string`), fused
/// groups in braces named by their kind:
/// ```text
/// rms_norm(eps=1e-5) f32[seq, 64], f32[64] -> f32[seq, 64]
/// tasks {
///   matmul(transpose_b) f32[seq, 64], f32[64, 64] -> f32[seq, 64]
///   matmul(transpose_b) f32[seq, 64], f32[32, 64] -> f32[seq, 32]
/// }
/// ```
pub fn listing(g: &Graph) -> String {
    let mut s = String::new();
    for grp in dispatch_groups(g) {
        let line = |i: usize| edgec_ir::text::kernel_to_string(g, &g.nodes[i]);
        match grp.kind {
            GroupKind::Single => s += &format!("{}\n", line(grp.nodes.start)),
            GroupKind::Tasks | GroupKind::Rows => {
                s += if grp.kind == GroupKind::Tasks { "tasks {\n" } else { "rows {\n" };
                for i in grp.nodes {
                    s += &format!("  {}\n", line(i));
                }
                s += "}\n";
            }
        }
    }
    s
}
