//! Static memory planning: where every intermediate value lives in the one activation arena.

use edgec_ir::{Graph, Op, ValueRef};

/// Alignment of every buffer in the arena and the state block (cache line; also what SIMD wants).
pub const ALIGN: u64 = 64;

/// Where each value lives at run time. Sizes are taken at the symbols' upper bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Per node: byte offset of its result in the arena, or `None` when the result lives
    /// elsewhere (a `CacheWrite` result aliases its state; a graph output is written straight
    /// into the caller's buffer).
    pub offsets: Vec<Option<u64>>,
    /// Per node: size in bytes of its arena buffer (0 when not in the arena).
    pub sizes: Vec<u64>,
    /// Bytes of arena needed.
    pub arena_size: u64,
    /// Per state: byte offset in the state block.
    pub state_offsets: Vec<u64>,
    /// Bytes of state (KV cache) needed.
    pub state_size: u64,
    /// The largest sum of simultaneously live bytes: no plan can use less arena.
    pub lower_bound: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("memory plan: {0}")]
pub struct PlanError(pub String);

pub fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGN - 1).map(|v| v / ALIGN * ALIGN)
}

/// True when a node's result does not get an arena buffer.
pub fn lives_outside_arena(g: &Graph, node: usize) -> bool {
    matches!(g.nodes[node].op, Op::CacheWrite)
        || g.outputs.iter().any(|o| o.value == ValueRef::Node(node as u32))
}

/// The live range of one arena buffer, in schedule steps (node indices), both ends inclusive:
/// a kernel reads its operands while it writes its result, so those may not share memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub node: usize,
    pub first: usize,
    pub last: usize,
    pub size: u64,
}

impl Lifetime {
    fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Arena buffers and their live ranges, from the schedule (the node order).
pub fn lifetimes(g: &Graph) -> Result<Vec<Lifetime>, PlanError> {
    let mut last_use: Vec<usize> = (0..g.nodes.len()).collect();
    for (i, node) in g.nodes.iter().enumerate() {
        for &a in &node.args {
            if let ValueRef::Node(j) = a {
                let j = j as usize;
                last_use[j] = last_use[j].max(i);
            }
        }
    }
    let mut out = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        if lives_outside_arena(g, i) {
            continue;
        }
        let bytes = g
            .max_bytes(&node.ty)
            .and_then(align_up)
            .ok_or_else(|| PlanError(format!("%{i} ({}): buffer size overflows u64", node.op.name())))?;
        out.push(Lifetime { node: i, first: i, last: last_use[i], size: bytes });
    }
    Ok(out)
}

/// The largest sum of sizes of buffers live at one step: no placement can do better.
pub fn lower_bound(buffers: &[Lifetime]) -> u64 {
    let steps = buffers.iter().map(|b| b.last + 1).max().unwrap_or(0);
    // Size changes per step: a buffer is added where it starts and removed after its end.
    let mut delta = vec![0i128; steps + 1];
    for b in buffers {
        delta[b.first] += i128::from(b.size);
        delta[b.last + 1] -= i128::from(b.size);
    }
    let mut live = 0i128;
    let mut best = 0i128;
    for d in delta {
        live += d;
        best = best.max(live);
    }
    u64::try_from(best).unwrap_or(u64::MAX)
}

/// Places buffers largest first, each at the lowest offset where it overlaps no
/// already-placed buffer whose lifetime it shares ("greedy by size", first fit).
fn place_greedy_by_size(buffers: &[Lifetime]) -> Result<Vec<u64>, PlanError> {
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by(|&a, &b| buffers[b].size.cmp(&buffers[a].size).then(buffers[a].first.cmp(&buffers[b].first)));
    let mut offsets = vec![0u64; buffers.len()];
    let mut placed: Vec<usize> = Vec::new();
    for &b in &order {
        let mut clashes: Vec<(u64, u64)> = placed
            .iter()
            .filter(|&&p| buffers[p].overlaps(&buffers[b]))
            .map(|&p| (offsets[p], offsets[p] + buffers[p].size))
            .collect();
        clashes.sort_unstable();
        let mut offset = 0u64;
        for (start, end) in clashes {
            let fits_before = offset
                .checked_add(buffers[b].size)
                .ok_or_else(|| PlanError("arena size overflows u64".into()))?
                <= start;
            if fits_before {
                break;
            }
            offset = offset.max(end);
        }
        offset.checked_add(buffers[b].size).ok_or_else(|| PlanError("arena size overflows u64".into()))?;
        offsets[b] = offset;
        placed.push(b);
    }
    Ok(offsets)
}

/// Plans the arena and the state block of a graph.
pub fn plan_memory(g: &Graph) -> Result<MemoryPlan, PlanError> {
    let buffers = lifetimes(g)?;
    let placed = place_greedy_by_size(&buffers)?;
    let mut offsets = vec![None; g.nodes.len()];
    let mut sizes = vec![0u64; g.nodes.len()];
    let mut arena_size = 0u64;
    for (b, &off) in buffers.iter().zip(&placed) {
        offsets[b.node] = Some(off);
        sizes[b.node] = b.size;
        arena_size = arena_size.max(off + b.size);
    }
    let mut state_offsets = Vec::with_capacity(g.states.len());
    let mut state_size = 0u64;
    for s in &g.states {
        let bytes = g
            .max_bytes(&s.ty)
            .and_then(align_up)
            .ok_or_else(|| PlanError(format!("state '{}': size overflows u64", s.name)))?;
        state_offsets.push(state_size);
        state_size =
            state_size.checked_add(bytes).ok_or_else(|| PlanError("state size overflows u64".into()))?;
    }
    Ok(MemoryPlan { offsets, sizes, arena_size, state_offsets, state_size, lower_bound: lower_bound(&buffers) })
}

impl MemoryPlan {
    /// A readable table of the plan: one line per arena buffer, then the totals.
    pub fn to_text(&self, g: &Graph) -> String {
        use std::fmt::Write;
        let buffers = lifetimes(g).unwrap_or_default();
        let mut s = String::new();
        let ratio = if self.lower_bound == 0 { 1.0 } else { self.arena_size as f64 / self.lower_bound as f64 };
        let _ = writeln!(
            s,
            "arena {} bytes, lower bound {} bytes (ratio {ratio:.2}), state {} bytes",
            self.arena_size, self.lower_bound, self.state_size
        );
        for b in &buffers {
            let node = &g.nodes[b.node];
            let _ = writeln!(
                s,
                "%{:<4} {:<12} steps {:>3}..={:<3} offset {:>8} size {:>8}  {}",
                b.node,
                node.op.name(),
                b.first,
                b.last,
                self.offsets[b.node].unwrap_or(0),
                b.size,
                edgec_ir::text::type_to_string(g, &node.ty),
            );
        }
        for (st, off) in g.states.iter().zip(&self.state_offsets) {
            let _ = writeln!(s, "state {:<24} offset {:>8}  {}", st.name, off, edgec_ir::text::type_to_string(g, &st.ty));
        }
        s
    }
}
