//! Static memory planning: where every intermediate value lives in the one activation arena.
//!
//! 1. Lifetimes come from the schedule (the node order), both ends inclusive, widened to whole
//!    dispatch groups (`dispatch.rs`): a group's members run interleaved.
//! 2. In-place reuse: an elementwise node whose same-typed operand dies at that node writes over
//!    the operand's buffer ([`in_place_operand`]); such chains become one buffer.
//! 3. Offsets by several strategies ([`Strategy`]): greedy by size with best fit, greedy by
//!    breadth, greedy by size with first fit, and for small graphs an exact branch-and-bound
//!    search. The smallest arena wins; every candidate is recorded in the plan.
//! 4. The lower bound (the largest sum of simultaneously live bytes) is reported with it.

use crate::dispatch::{Group, dispatch_groups, group_of_node, singles};
use edgec_ir::{Graph, Op, ValueRef};
use std::ops::Range;

/// Alignment of every buffer in the arena and the state block (cache line; also what SIMD wants).
pub const ALIGN: u64 = 64;

/// How buffer offsets are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Largest buffer first, each into the smallest gap it fits among the buffers it shares
    /// time with ("greedy by size", Pisarchyk & Lee 2020; TFLite's offset planner).
    GreedyBySize,
    /// Steps in order of decreasing breadth (bytes live at that step); at each step its
    /// buffers largest first, each into the smallest gap it fits ("greedy by breadth").
    GreedyByBreadth,
    /// Largest buffer first, each at the lowest offset it fits (the first planner here).
    FirstFitBySize,
    /// Branch and bound over placement orders (each buffer at the lowest offset it fits, which
    /// reaches an optimum for some order), pruned by the best arena so far and stopped at the
    /// lower bound. Only for graphs of at most [`PlanOptions::exact_max_buffers`] buffers, and
    /// capped at [`PlanOptions::exact_max_steps`] placements, so it is deterministic.
    Exact,
}

impl Strategy {
    pub const ALL: [Strategy; 4] =
        [Strategy::GreedyBySize, Strategy::GreedyByBreadth, Strategy::FirstFitBySize, Strategy::Exact];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::GreedyBySize => "greedy-by-size",
            Strategy::GreedyByBreadth => "greedy-by-breadth",
            Strategy::FirstFitBySize => "first-fit-by-size",
            Strategy::Exact => "exact",
        }
    }

    pub fn from_name(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// What the planner tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanOptions {
    /// Strategies to try; the smallest arena wins (the first listed on a tie).
    pub strategies: Vec<Strategy>,
    /// Let elementwise nodes write over a dying operand ([`in_place_operand`]).
    pub in_place: bool,
    /// The exact search runs only on graphs with at most this many arena buffers.
    pub exact_max_buffers: usize,
    /// The exact search stops after this many placements (keeping its best so far).
    pub exact_max_steps: u64,
    /// Plan for the dispatch groups (`dispatch.rs`) the backend launches as one; off, every
    /// node is launched alone and lifetimes are per node.
    pub dispatch_groups: bool,
}

impl Default for PlanOptions {
    fn default() -> PlanOptions {
        PlanOptions {
            strategies: Strategy::ALL.to_vec(),
            in_place: true,
            exact_max_buffers: 12,
            exact_max_steps: 200_000,
            dispatch_groups: true,
        }
    }
}

/// One strategy's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub strategy: Strategy,
    /// Bytes of arena its placement needs.
    pub arena_size: u64,
    /// The placement is proved optimal: it meets the lower bound, or the exact search
    /// explored every order.
    pub optimal: bool,
}

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
    /// The largest sum of simultaneously live bytes (in-place chains counted once): no
    /// placement can use less arena.
    pub lower_bound: u64,
    /// Per node: the operand node whose arena buffer this node's result overwrites (same
    /// offset, same size; the operand dies at this node). The only sanctioned overlap of
    /// simultaneously live buffers.
    pub in_place: Vec<Option<usize>>,
    /// The strategy whose placement this is.
    pub strategy: Strategy,
    /// Every strategy tried, in order, with its arena.
    pub candidates: Vec<Candidate>,
    /// The dispatch groups the lifetimes assume (every node alone when
    /// [`PlanOptions::dispatch_groups`] is off). The backend may launch a group's members one
    /// by one (always safe), never merge nodes across groups.
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("memory plan: {0}")]
pub struct PlanError(pub String);

pub fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGN - 1).map(|v| v / ALIGN * ALIGN)
}

/// True when a node's result does not get an arena buffer.
pub fn lives_outside_arena(g: &Graph, node: usize) -> bool {
    matches!(g.nodes[node].op, Op::CacheWrite) || g.outputs.iter().any(|o| o.value == ValueRef::Node(node as u32))
}

/// The live range of one arena buffer, in schedule steps (node indices), both ends inclusive:
/// a kernel reads its operands while it writes its result, so those may not share memory
/// (except in place, see [`in_place_operand`]). For an in-place chain, `node` is its first node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub node: usize,
    pub first: usize,
    pub last: usize,
    pub size: u64,
}

impl Lifetime {
    pub fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Per node: the last node that reads its result (itself when none does).
pub fn last_uses(g: &Graph) -> Vec<usize> {
    let mut last_use: Vec<usize> = (0..g.nodes.len()).collect();
    for (i, node) in g.nodes.iter().enumerate() {
        for &a in &node.args {
            if let ValueRef::Node(j) = a {
                let j = j as usize;
                last_use[j] = last_use[j].max(i);
            }
        }
    }
    last_use
}

/// Arena buffers and their live ranges, one per node, from the schedule (the node order): from
/// the start of the node's dispatch group to the end of its last reader's.
pub fn lifetimes(g: &Graph, groups: &[Group]) -> Result<Vec<Lifetime>, PlanError> {
    let last_use = last_uses(g);
    let group = group_of_node(g, groups);
    let mut out = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        if lives_outside_arena(g, i) {
            continue;
        }
        let bytes = g
            .max_bytes(&node.ty)
            .and_then(align_up)
            .ok_or_else(|| PlanError(format!("%{i} ({}): buffer size overflows u64", node.op.name())))?;
        out.push(Lifetime { node: i, first: group[i].start, last: group[last_use[i]].end - 1, size: bytes });
    }
    Ok(out)
}

/// The operand node whose buffer node `i` may overwrite, if any.
///
/// Rules: node `i` is a `Unary` or `Binary` op in the arena; the operand is a node in the
/// arena whose last reader is `i`, with exactly `i`'s type (so same size, and a binary operand
/// is not broadcast), and no other member of `i`'s dispatch group `group` reads it (members
/// run interleaved). The first such operand is chosen.
///
/// Why only these ops: the backend loads operands with `readonly`+`can_move` flags, which
/// promise no aliasing store. For the unary and binary kernels (`backend/src/kernels/
/// elementwise.rs`) aliasing is still sound: task `t` touches only row `t` of the operand and
/// of the result, every chunk loads element `k` of each operand and then stores element `k` of
/// the result computed from those loads (a data dependence no optimization can reorder), and no
/// element is loaded after it is stored, so a moved or merged load still sees the old value.
/// Norms, softmax, rope and attention read a row (or pairs within it) several times around
/// their stores, so they never run in place.
pub fn in_place_operand(g: &Graph, i: usize, last_use: &[usize], group: Range<usize>) -> Option<usize> {
    let node = &g.nodes[i];
    if !matches!(node.op, Op::Unary(_) | Op::Binary(_)) || lives_outside_arena(g, i) {
        return None;
    }
    node.args.iter().find_map(|&a| match a {
        ValueRef::Node(j) => {
            let j = j as usize;
            let shared = group.clone().any(|m| m != i && g.nodes[m].args.contains(&a));
            let ok = last_use[j] == i && !shared && !lives_outside_arena(g, j) && g.nodes[j].ty == node.ty;
            ok.then_some(j)
        }
        _ => None,
    })
}

/// Per node, the operand it overwrites in place (see [`in_place_operand`]).
pub fn in_place_choices(g: &Graph, groups: &[Group]) -> Vec<Option<usize>> {
    let last_use = last_uses(g);
    let group = group_of_node(g, groups);
    (0..g.nodes.len()).map(|i| in_place_operand(g, i, &last_use, group[i].clone())).collect()
}

/// The buffers to place: every in-place chain merged into one (from its first node's start to
/// its last node's end). Also returns, per node, the index of its buffer.
pub fn buffers(
    g: &Graph,
    in_place: &[Option<usize>],
    groups: &[Group],
) -> Result<(Vec<Lifetime>, Vec<Option<usize>>), PlanError> {
    let mut of_node: Vec<Option<usize>> = vec![None; g.nodes.len()];
    let mut out: Vec<Lifetime> = Vec::new();
    for lt in lifetimes(g, groups)? {
        match in_place[lt.node].and_then(|j| of_node[j]) {
            Some(b) => {
                out[b].last = out[b].last.max(lt.last);
                out[b].size = out[b].size.max(lt.size);
                of_node[lt.node] = Some(b);
            }
            None => {
                of_node[lt.node] = Some(out.len());
                out.push(lt);
            }
        }
    }
    Ok((out, of_node))
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

fn overflow() -> PlanError {
    PlanError("arena size overflows u64".into())
}

/// The offset for buffer `b` among the placed buffers it shares time with: the lowest gap it
/// fits (`best_fit == false`) or the smallest such gap, else above them all.
fn fit(buffers: &[Lifetime], offsets: &[Option<u64>], b: usize, best_fit: bool) -> Result<u64, PlanError> {
    let mut clashes: Vec<(u64, u64)> = buffers
        .iter()
        .zip(offsets)
        .filter_map(|(p, o)| o.filter(|_| p.overlaps(&buffers[b])).map(|o| (o, o + p.size)))
        .collect();
    clashes.sort_unstable();
    let size = buffers[b].size;
    let mut top = 0u64;
    let mut best: Option<(u64, u64)> = None; // (gap, offset)
    for (start, end) in clashes {
        if start > top {
            let gap = start - top;
            if gap >= size {
                if !best_fit {
                    return Ok(top);
                }
                if best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, top));
                }
            }
        }
        top = top.max(end);
    }
    let offset = best.map_or(top, |(_, o)| o);
    offset.checked_add(size).ok_or_else(overflow)?;
    Ok(offset)
}

/// Places buffers in `order`, each by [`fit`]. Returns the offsets and the arena size.
fn place_in_order(buffers: &[Lifetime], order: &[usize], best_fit: bool) -> Result<(Vec<u64>, u64), PlanError> {
    let mut offsets = vec![None; buffers.len()];
    let mut arena = 0u64;
    for &b in order {
        let o = fit(buffers, &offsets, b, best_fit)?;
        offsets[b] = Some(o);
        arena = arena.max(o + buffers[b].size);
    }
    Ok((offsets.into_iter().map(|o| o.unwrap_or(0)).collect(), arena))
}

/// Largest first; ties by start, then index.
fn by_size(buffers: &[Lifetime], list: &mut [usize]) {
    list.sort_by(|&a, &b| {
        buffers[b].size.cmp(&buffers[a].size).then(buffers[a].first.cmp(&buffers[b].first)).then(a.cmp(&b))
    });
}

fn greedy_by_size(buffers: &[Lifetime], best_fit: bool) -> Result<(Vec<u64>, u64), PlanError> {
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    by_size(buffers, &mut order);
    place_in_order(buffers, &order, best_fit)
}

fn greedy_by_breadth(buffers: &[Lifetime]) -> Result<(Vec<u64>, u64), PlanError> {
    let steps = buffers.iter().map(|b| b.last + 1).max().unwrap_or(0);
    let mut live: Vec<Vec<usize>> = vec![Vec::new(); steps];
    let mut breadth = vec![0u128; steps];
    for (i, b) in buffers.iter().enumerate() {
        for t in b.first..=b.last {
            live[t].push(i);
            breadth[t] += u128::from(b.size);
        }
    }
    let mut step_order: Vec<usize> = (0..steps).collect();
    step_order.sort_by(|&a, &b| breadth[b].cmp(&breadth[a]).then(a.cmp(&b)));
    let mut order = Vec::with_capacity(buffers.len());
    let mut taken = vec![false; buffers.len()];
    for t in step_order {
        by_size(buffers, &mut live[t]);
        for &b in &live[t] {
            if !std::mem::replace(&mut taken[b], true) {
                order.push(b);
            }
        }
    }
    place_in_order(buffers, &order, true)
}

/// Branch and bound over placement orders. For any optimal placement, placing its buffers in
/// order of offset, each at the lowest offset it fits, puts every buffer at or below its
/// optimal offset, so some order reaches the optimum. Returns a placement strictly smaller than
/// `incumbent` if one was found, and whether the search was complete (every order explored,
/// or the lower bound reached).
fn exact(buffers: &[Lifetime], incumbent: u64, lower: u64, max_steps: u64) -> (Option<(Vec<u64>, u64)>, bool) {
    struct Search<'a> {
        buffers: &'a [Lifetime],
        order: Vec<usize>,
        offsets: Vec<Option<u64>>,
        best: u64,
        found: Option<Vec<u64>>,
        lower: u64,
        steps: u64,
        max_steps: u64,
    }
    impl Search<'_> {
        /// False when the search must stop (step cap).
        fn go(&mut self, depth: usize, peak: u64) -> bool {
            if depth == self.buffers.len() {
                if peak < self.best {
                    self.best = peak;
                    self.found = Some(self.offsets.iter().map(|o| o.unwrap_or(0)).collect());
                }
                return true;
            }
            for k in 0..self.order.len() {
                if self.best <= self.lower {
                    return true;
                }
                let b = self.order[k];
                if self.offsets[b].is_some() {
                    continue;
                }
                // Identical unplaced buffers are interchangeable: try only the first.
                let twin = self.order[..k].iter().any(|&p| {
                    self.offsets[p].is_none()
                        && (self.buffers[p].first, self.buffers[p].last, self.buffers[p].size)
                            == (self.buffers[b].first, self.buffers[b].last, self.buffers[b].size)
                });
                if twin {
                    continue;
                }
                self.steps += 1;
                if self.steps > self.max_steps {
                    return false;
                }
                let Ok(o) = fit(self.buffers, &self.offsets, b, false) else { continue };
                let new_peak = peak.max(o + self.buffers[b].size);
                if new_peak >= self.best {
                    continue;
                }
                self.offsets[b] = Some(o);
                let go_on = self.go(depth + 1, new_peak);
                self.offsets[b] = None;
                if !go_on {
                    return false;
                }
            }
            true
        }
    }
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    by_size(buffers, &mut order);
    let mut s = Search {
        buffers,
        order,
        offsets: vec![None; buffers.len()],
        best: incumbent,
        found: None,
        lower,
        steps: 0,
        max_steps,
    };
    let complete = s.go(0, 0) || s.best <= lower;
    let best = s.best;
    (s.found.map(|f| (f, best)), complete)
}

/// The state block: each state's offset (64-byte aligned, in graph order, sized by
/// `Graph::max_bytes`, so a q8 state takes 34 bytes per 32 values) and the block's size.
pub fn state_layout(g: &Graph) -> Result<(Vec<u64>, u64), PlanError> {
    let mut offsets = Vec::with_capacity(g.states.len());
    let mut size = 0u64;
    for s in &g.states {
        let bytes = g
            .max_bytes(&s.ty)
            .and_then(align_up)
            .ok_or_else(|| PlanError(format!("state '{}': size overflows u64", s.name)))?;
        offsets.push(size);
        size = size.checked_add(bytes).ok_or_else(|| PlanError("state size overflows u64".into()))?;
    }
    Ok((offsets, size))
}

/// Plans the arena and the state block of a graph with every strategy and in-place reuse.
pub fn plan_memory(g: &Graph) -> Result<MemoryPlan, PlanError> {
    plan_memory_with(g, &PlanOptions::default())
}

/// Plans the arena and the state block of a graph.
pub fn plan_memory_with(g: &Graph, opts: &PlanOptions) -> Result<MemoryPlan, PlanError> {
    if opts.strategies.is_empty() {
        return Err(PlanError("no placement strategy to try".into()));
    }
    let groups = if opts.dispatch_groups { dispatch_groups(g) } else { singles(g) };
    let in_place = if opts.in_place { in_place_choices(g, &groups) } else { vec![None; g.nodes.len()] };
    let (bufs, of_node) = buffers(g, &in_place, &groups)?;
    let lower = lower_bound(&bufs);
    let mut candidates = Vec::new();
    let mut best: Option<(Strategy, Vec<u64>, u64)> = None;
    for &s in &opts.strategies {
        let placed = match s {
            Strategy::GreedyBySize => greedy_by_size(&bufs, true)?,
            Strategy::FirstFitBySize => greedy_by_size(&bufs, false)?,
            Strategy::GreedyByBreadth => greedy_by_breadth(&bufs)?,
            Strategy::Exact => {
                if bufs.len() > opts.exact_max_buffers {
                    continue;
                }
                let incumbent = best.as_ref().map_or(u64::MAX, |b| b.2);
                let (found, complete) = exact(&bufs, incumbent, lower, opts.exact_max_steps);
                match found {
                    Some(p) => {
                        candidates.push(Candidate { strategy: s, arena_size: p.1, optimal: complete });
                        p
                    }
                    None => {
                        // Nothing beats the incumbent: with a complete search, it is optimal.
                        if incumbent != u64::MAX {
                            candidates.push(Candidate { strategy: s, arena_size: incumbent, optimal: complete });
                        }
                        continue;
                    }
                }
            }
        };
        if s != Strategy::Exact {
            candidates.push(Candidate { strategy: s, arena_size: placed.1, optimal: placed.1 <= lower });
        }
        if best.as_ref().is_none_or(|b| placed.1 < b.2) {
            best = Some((s, placed.0, placed.1));
        }
    }
    let Some((strategy, placed, arena_size)) = best else {
        return Err(PlanError("the exact search was the only strategy and the graph is too big for it".into()));
    };
    let mut offsets = vec![None; g.nodes.len()];
    let mut sizes = vec![0u64; g.nodes.len()];
    for lt in lifetimes(g, &groups)? {
        let b = of_node[lt.node].expect("every arena node has a buffer");
        offsets[lt.node] = Some(placed[b]);
        sizes[lt.node] = lt.size;
    }
    let (state_offsets, state_size) = state_layout(g)?;
    Ok(MemoryPlan {
        offsets,
        sizes,
        arena_size,
        state_offsets,
        state_size,
        lower_bound: lower,
        in_place,
        strategy,
        candidates,
        groups,
    })
}

impl MemoryPlan {
    /// Arena size over the lower bound (1 for an empty arena).
    pub fn ratio(&self) -> f64 {
        if self.lower_bound == 0 { 1.0 } else { self.arena_size as f64 / self.lower_bound as f64 }
    }

    /// The strategies tried and their arenas, e.g.
    /// `greedy-by-size 1024, greedy-by-breadth 1088, exact 1024 (optimal)`.
    pub fn candidates_text(&self) -> String {
        let parts: Vec<String> = self
            .candidates
            .iter()
            .map(|c| format!("{} {}{}", c.strategy.name(), c.arena_size, if c.optimal { " (optimal)" } else { "" }))
            .collect();
        parts.join(", ")
    }

    /// A readable table of the plan: the totals, the strategies, then one line per arena buffer.
    pub fn to_text(&self, g: &Graph) -> String {
        use std::fmt::Write;
        let buffers = lifetimes(g, &self.groups).unwrap_or_default();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "arena {} bytes, lower bound {} bytes (ratio {:.2}), state {} bytes",
            self.arena_size,
            self.lower_bound,
            self.ratio(),
            self.state_size
        );
        let _ = writeln!(s, "strategy {}: {}", self.strategy.name(), self.candidates_text());
        let fused: Vec<String> = self
            .groups
            .iter()
            .filter(|grp| grp.nodes.len() > 1)
            .map(|grp| format!("{:?} %{}..=%{}", grp.kind, grp.nodes.start, grp.nodes.end - 1).to_lowercase())
            .collect();
        if !fused.is_empty() {
            let _ = writeln!(s, "dispatch groups: {}", fused.join(", "));
        }
        for b in &buffers {
            let node = &g.nodes[b.node];
            let _ = write!(
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
            match self.in_place.get(b.node).copied().flatten() {
                Some(j) => {
                    let _ = writeln!(s, "  in place of %{j}");
                }
                None => s.push('\n'),
            }
        }
        for (st, off) in g.states.iter().zip(&self.state_offsets) {
            let _ =
                writeln!(s, "state {:<24} offset {:>8}  {}", st.name, off, edgec_ir::text::type_to_string(g, &st.ty));
        }
        s
    }
}
