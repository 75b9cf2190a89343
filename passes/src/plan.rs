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
