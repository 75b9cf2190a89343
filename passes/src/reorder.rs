use crate::plan::{buffers, in_place_choices, lives_outside_arena, lower_bound};
use crate::{Changed, Pass, PassError};
use edgec_ir::{Graph, ValueRef};

/// Reorders independent nodes to lower the arena's peak: a list schedule that, among the
/// nodes whose operands are computed, runs the one that adds the fewest live bytes (its result
/// minus the operands it is the last reader of), ties in the original order. Only data
/// dependencies constrain the order (the verifier guarantees a written state is read only
/// through its `cache_write` result), so the meaning is unchanged. The new order is kept only
/// when the planner's lower bound (with in-place reuse) goes down; otherwise nothing changes.
pub struct ReorderForMemory;

impl Pass for ReorderForMemory {
    fn name(&self) -> &'static str {
        "reorder-for-memory"
    }

    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        let Some(before) = peak(g) else { return Ok(Changed::No) };
        let order = memory_order(g);
        if order.iter().enumerate().all(|(i, &n)| i == n) {
            return Ok(Changed::No);
        }
        let candidate = reordered(g, &order);
        match peak(&candidate) {
            Some(after) if after < before => {
                *g = candidate;
                Ok(Changed::Yes)
            }
            _ => Ok(Changed::No),
        }
    }
}

/// The lower bound the planner would report (in-place chains merged), or `None` on overflow.
pub fn peak(g: &Graph) -> Option<u64> {
    let groups = crate::dispatch::dispatch_groups(g);
    buffers(g, &in_place_choices(g, &groups), &groups).ok().map(|(b, _)| lower_bound(&b))
}

fn arena_bytes(g: &Graph, i: usize) -> i128 {
    if lives_outside_arena(g, i) { 0 } else { g.max_bytes(&g.nodes[i].ty).map_or(0, i128::from) }
}

fn node_operands(g: &Graph, i: usize) -> Vec<usize> {
    let mut ops: Vec<usize> = g.nodes[i]
        .args
        .iter()
        .filter_map(|a| if let ValueRef::Node(j) = a { Some(*j as usize) } else { None })
        .collect();
    ops.sort_unstable();
    ops.dedup();
    ops
}

/// The greedy schedule: `order[k]` is the original index of the node to run `k`th.
pub fn memory_order(g: &Graph) -> Vec<usize> {
    let n = g.nodes.len();
    let operands: Vec<Vec<usize>> = (0..n).map(|i| node_operands(g, i)).collect();
    let mut users = vec![0usize; n];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ops) in operands.iter().enumerate() {
        for &j in ops {
            users[j] += 1;
            consumers[j].push(i);
        }
    }
    let size: Vec<i128> = (0..n).map(|i| arena_bytes(g, i)).collect();
    let mut waiting: Vec<usize> = operands.iter().map(Vec::len).collect();
    let mut ready: std::collections::BTreeSet<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while !ready.is_empty() {
        let delta = |i: usize| -> i128 {
            size[i] - operands[i].iter().filter(|&&j| users[j] == 1).map(|&j| size[j]).sum::<i128>()
        };
        let next = *ready.iter().min_by_key(|&&i| (delta(i), i)).expect("ready is not empty");
        ready.remove(&next);
        order.push(next);
        for &j in &operands[next] {
            users[j] -= 1;
        }
        for &c in &consumers[next] {
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.insert(c);
            }
        }
    }
    order
}

/// The graph with its nodes in `order` (original indices) and every reference renumbered.
fn reordered(g: &Graph, order: &[usize]) -> Graph {
    let mut new_index = vec![0u32; order.len()];
    for (k, &old) in order.iter().enumerate() {
        new_index[old] = k as u32;
    }
    let remap = |v: ValueRef| match v {
        ValueRef::Node(j) => ValueRef::Node(new_index[j as usize]),
        other => other,
    };
    let mut out = g.clone();
    out.nodes = order
        .iter()
        .map(|&old| {
            let mut node = g.nodes[old].clone();
            node.args = node.args.iter().map(|&a| remap(a)).collect();
            node
        })
        .collect();
    for o in &mut out.outputs {
        o.value = remap(o.value);
    }
    out
}
