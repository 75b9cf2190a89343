//! `NAME_forward`: argument checks (NULL arguments and context fields, token count, context
//! room, every id), then one `parallel_for` call per node.

use crate::kernels::{KernelSpec, SLOT_N_TOKENS, SLOT_POS, SLOT_PTRS, SLOT_ROWS, Tasks};
use crate::signature::{RowsCols, Signature, rows_cols};
use crate::weights_file::WeightsLayout;
use cranelift_codegen::ir::{
    AbiParam, FuncRef, Function, InstBuilder, MemFlagsData, SigRef, Signature as ClifSig, StackSlotData, StackSlotKind,
    Value, condcodes::IntCC, types,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Module};
use cranelift_object::ObjectModule;
use edgec_ir::{Graph, Op, ValueRef};
use edgec_passes::dispatch::GroupKind;
use edgec_passes::plan::MemoryPlan;
use edgec_runtime::abi::{
    Context, STATUS_BAD_TOKEN_COUNT, STATUS_BAD_TOKEN_ID, STATUS_CONTEXT_OVERFLOW, STATUS_NULL_ARGUMENT, STATUS_OK,
};
use std::mem::offset_of;

/// `int32_t forward(const ctx*, const int32_t *ids, uint32_t n_tokens, uint32_t pos, float *logits)`.
pub(crate) fn forward_signature(cc: CallConv) -> ClifSig {
    let mut s = ClifSig::new(cc);
    for t in [types::I64, types::I64, types::I32, types::I32, types::I64] {
        s.params.push(AbiParam::new(t));
    }
    s.returns.push(AbiParam::new(types::I32));
    s
}

// Offsets of `Context` fields, from the one ABI definition. Every target is 64-bit, so the
// host's layout is the target's.
const CTX_WEIGHTS: i32 = offset_of!(Context, weights) as i32;
const CTX_ARENA: i32 = offset_of!(Context, arena) as i32;
const CTX_STATE: i32 = offset_of!(Context, state) as i32;

/// Returns `code` from the function when `cond` is true, else continues.
pub(crate) fn return_if(b: &mut FunctionBuilder, cond: Value, code: i32) {
    let fail = b.create_block();
    let cont = b.create_block();
    b.ins().brif(cond, fail, &[], cont, &[]);
    b.switch_to_block(fail);
    let c = b.ins().iconst(types::I32, i64::from(code));
    b.ins().return_(&[c]);
    b.switch_to_block(cont);
}

/// Returns `STATUS_BAD_TOKEN_ID` unless each of the `count` i32s at `base`, read as u32, is
/// below `limit` (so a negative id fails too).
pub(crate) fn check_ids(b: &mut FunctionBuilder, base: Value, count: Value, limit: u64) {
    let header = b.create_block();
    let body = b.create_block();
    let done = b.create_block();
    b.append_block_param(header, types::I64);
    let zero = b.ins().iconst(types::I64, 0);
    b.ins().jump(header, &[zero.into()]);
    b.switch_to_block(header);
    let i = b.block_params(header)[0];
    let go = b.ins().icmp(IntCC::UnsignedLessThan, i, count);
    b.ins().brif(go, body, &[], done, &[]);
    b.switch_to_block(body);
    let off = b.ins().imul_imm_s(i, 4);
    let a = b.ins().iadd(base, off);
    let id = b.ins().load(types::I32, MemFlagsData::new().with_notrap(), a, 0);
    let bad = b.ins().icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, id, limit.min(u64::from(u32::MAX)) as i64);
    return_if(b, bad, STATUS_BAD_TOKEN_ID);
    let next = b.ins().iadd_imm_s(i, 1);
    b.ins().jump(header, &[next.into()]);
    b.switch_to_block(done);
}

/// A node's run-time row count, `const_factor · n^seq_powers`; 0 for kernels that compute
/// their own extents (no row/column split).
pub(crate) fn rows_value(b: &mut FunctionBuilder, rc: Option<RowsCols>, n: Value) -> Value {
    let Some(rc) = rc else { return b.ins().iconst(types::I64, 0) };
    let mut rows = b.ins().iconst(types::I64, rc.const_factor as i64);
    for _ in 0..rc.seq_powers {
        rows = b.ins().imul(rows, n);
    }
    rows
}

/// How an entry point calls its kernels: argument blocks on its stack (see the slot table in
/// lib.rs), refilled for each launch, then `ctx->parallel_for(pool, kernel, block, n_tasks)`.
/// A fused dispatch group gets one block per member plus the group kernel's block of
/// `(member block, member tasks)` pairs (`kernels/group.rs`).
pub(crate) struct Dispatch {
    /// `max_members` member blocks of `block_bytes` each, then the group block.
    blocks: Value,
    block_bytes: u32,
    max_members: u32,
    pool: Value,
    parallel_for: Value,
    signature: SigRef,
}

/// What one node's kernel call needs.
pub(crate) struct Call<'a> {
    pub spec: &'a KernelSpec,
    pub rows: Value,
    pub operands: &'a [Value],
    pub result: Value,
}

impl Dispatch {
    /// `max_members`: the largest dispatch group the entry point launches as one.
    pub(crate) fn new(b: &mut FunctionBuilder, g: &Graph, ctx: Value, cc: CallConv, max_members: u32) -> Dispatch {
        let ctx_flags = MemFlagsData::trusted().with_readonly();
        let pool = b.ins().load(types::I64, ctx_flags, ctx, offset_of!(Context, pool) as i32);
        let parallel_for = b.ins().load(types::I64, ctx_flags, ctx, offset_of!(Context, parallel_for) as i32);
        // Defence in depth: a NULL callback is refused, not called (`pool` may be NULL).
        let no_pf = b.ins().icmp_imm_u(IntCC::Equal, parallel_for, 0);
        return_if(b, no_pf, STATUS_NULL_ARGUMENT);
        let max_arity = g.nodes.iter().map(|n| n.args.len()).max().unwrap_or(0) as u32;
        let block_bytes = (SLOT_PTRS + max_arity + 1) * 8;
        let max_members = max_members.max(1);
        let total = block_bytes * max_members + 16 * max_members;
        let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, total, 4));
        let blocks = b.ins().stack_addr(types::I64, slot, 0);
        // parallel_for(pool, kernel, args, n_tasks)
        let mut sig = ClifSig::new(cc);
        sig.params.extend([AbiParam::new(types::I64); 4]);
        let signature = b.import_signature(sig);
        Dispatch { blocks, block_bytes, max_members, pool, parallel_for, signature }
    }

    /// Member `m`'s argument block.
    fn block(&self, b: &mut FunctionBuilder, m: u32) -> Value {
        b.ins().iadd_imm_s(self.blocks, i64::from(m * self.block_bytes))
    }

    /// Fills argument block `m` for one call and returns its task count.
    fn fill(&self, b: &mut FunctionBuilder, m: u32, n: Value, pos: Value, call: &Call<'_>) -> Value {
        let block = self.block(b, m);
        let st = MemFlagsData::trusted();
        let slot = |k: u32| (k * 8) as i32;
        b.ins().store(st, n, block, slot(SLOT_N_TOKENS));
        b.ins().store(st, pos, block, slot(SLOT_POS));
        b.ins().store(st, call.rows, block, slot(SLOT_ROWS));
        for (a, &ptr) in call.operands.iter().enumerate() {
            b.ins().store(st, ptr, block, slot(SLOT_PTRS + a as u32));
        }
        b.ins().store(st, call.result, block, slot(SLOT_PTRS + call.operands.len() as u32));
        match call.spec.tasks() {
            Tasks::Rows => call.rows,
            Tasks::Static(t) => b.ins().iconst(types::I64, t as i64),
            Tasks::RowsTimes(t) => b.ins().imul_imm_s(call.rows, t as i64),
            Tasks::Prod(p) => p.emit(b, n),
        }
    }

    fn launch(&self, b: &mut FunctionBuilder, kernel: FuncRef, block: Value, n_tasks: Value) {
        let kaddr = b.ins().func_addr(types::I64, kernel);
        b.ins().call_indirect(self.signature, self.parallel_for, &[self.pool, kaddr, block, n_tasks]);
    }

    /// Runs one node's kernel over its tasks.
    pub(crate) fn call(&self, b: &mut FunctionBuilder, kernel: FuncRef, n: Value, pos: Value, call: &Call<'_>) {
        let n_tasks = self.fill(b, 0, n, pos, call);
        let block = self.block(b, 0);
        self.launch(b, kernel, block, n_tasks);
    }

    /// Runs a fused dispatch group's kernel: every member's block, then the group block of
    /// `(block, tasks)` pairs. `rows_kind`: the members share their tasks (one per row), else
    /// their task ranges are concatenated.
    pub(crate) fn call_group(
        &self,
        b: &mut FunctionBuilder,
        kernel: FuncRef,
        n: Value,
        pos: Value,
        calls: &[Call<'_>],
        rows_kind: bool,
    ) {
        assert!(calls.len() as u32 <= self.max_members, "groups are sized by Dispatch::new");
        let group = b.ins().iadd_imm_s(self.blocks, i64::from(self.max_members * self.block_bytes));
        let st = MemFlagsData::trusted();
        let mut total = b.ins().iconst(types::I64, 0);
        for (m, call) in calls.iter().enumerate() {
            let tasks = self.fill(b, m as u32, n, pos, call);
            let block = self.block(b, m as u32);
            b.ins().store(st, block, group, 16 * m as i32);
            b.ins().store(st, tasks, group, 16 * m as i32 + 8);
            total = if rows_kind { tasks } else { b.ins().iadd(total, tasks) };
        }
        self.launch(b, kernel, group, total);
    }
}

/// The value whose rows a node's kernel runs over: its result, except a cache write's, whose
/// rows are those it writes (not the whole state).
pub(crate) fn rows_type(g: &Graph, i: usize) -> &edgec_ir::TensorType {
    let node = &g.nodes[i];
    match node.op {
        Op::CacheWrite => g.type_of(node.args[1]),
        _ => &node.ty,
    }
}

/// The kernels an entry point launches: per node, and per dispatch group of the plan the
/// group's own kernel when it is launched as one.
pub(crate) struct Kernels<'a> {
    pub node: &'a [FuncId],
    pub group: &'a [Option<FuncId>],
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn build_forward(
    module: &mut ObjectModule,
    func: &mut Function,
    fctx: &mut FunctionBuilderContext,
    g: &Graph,
    plan: &MemoryPlan,
    layout: &WeightsLayout,
    sig: &Signature,
    specs: &[KernelSpec],
    kernels: &Kernels<'_>,
    cc: CallConv,
    fcfg: cranelift_codegen::isa::TargetFrontendConfig,
) {
    let krefs: Vec<_> = kernels.node.iter().map(|&id| module.declare_func_in_func(id, func)).collect();
    let grefs: Vec<_> = kernels.group.iter().map(|id| id.map(|id| module.declare_func_in_func(id, func))).collect();
    let mut b = FunctionBuilder::new(func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (ctx, ids, n32, pos32, logits) = (p[0], p[1], p[2], p[3], p[4]);

    // Every check happens before anything is written.
    let z = b.ins().iconst(types::I64, 0);
    let c1 = b.ins().icmp(IntCC::Equal, ctx, z);
    let c2 = b.ins().icmp(IntCC::Equal, ids, z);
    let c3 = b.ins().icmp(IntCC::Equal, logits, z);
    let any = b.ins().bor(c1, c2);
    let any = b.ins().bor(any, c3);
    return_if(&mut b, any, STATUS_NULL_ARGUMENT);

    let n = b.ins().uextend(types::I64, n32);
    let pos = b.ins().uextend(types::I64, pos32);
    let zero_n = b.ins().icmp_imm_u(IntCC::Equal, n, 0);
    let big_n = b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, n, i64::from(sig.max_tokens));
    let bad_n = b.ins().bor(zero_n, big_n);
    return_if(&mut b, bad_n, STATUS_BAD_TOKEN_COUNT);

    // In u64: two u32s cannot overflow.
    let end = b.ins().iadd(pos, n);
    let over = b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, end, i64::from(sig.max_context));
    return_if(&mut b, over, STATUS_CONTEXT_OVERFLOW);

    // ids[i] as u32 < vocab for i in 0..n.
    check_ids(&mut b, ids, n, u64::from(sig.vocab));

    let ctx_flags = MemFlagsData::trusted().with_readonly();
    let weights = b.ins().load(types::I64, ctx_flags, ctx, CTX_WEIGHTS);
    let arena = b.ins().load(types::I64, ctx_flags, ctx, CTX_ARENA);
    let state = b.ins().load(types::I64, ctx_flags, ctx, CTX_STATE);
    // The context's buffers must be there (an empty arena or state is never read).
    let mut missing = b.ins().icmp_imm_u(IntCC::Equal, weights, 0);
    for (ptr, size) in [(arena, plan.arena_size), (state, plan.state_size)] {
        if size > 0 {
            let c = b.ins().icmp_imm_u(IntCC::Equal, ptr, 0);
            missing = b.ins().bor(missing, c);
        }
    }
    return_if(&mut b, missing, STATUS_NULL_ARGUMENT);
    let max_members = plan.groups.iter().map(|grp| grp.nodes.len()).max().unwrap_or(1) as u32;
    let dispatch = Dispatch::new(&mut b, g, ctx, cc, max_members);

    // The `pos` operand of rope/cache_write/attention is read from the block's slot 1; its
    // pointer slot still gets a valid address (a stack copy) for uniformity.
    let pos_slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 8, 3));
    b.ins().stack_store(types::I64, pos32, pos_slot, 0);
    let pos_ptr = b.ins().stack_addr(types::I64, pos_slot, 0);

    let value_ptr = |b: &mut FunctionBuilder, v: ValueRef| -> Value {
        match v {
            ValueRef::Input(0) => ids,
            ValueRef::Input(_) => pos_ptr,
            ValueRef::Weight(w) => b.ins().iadd_imm_s(weights, layout.offsets[w as usize] as i64),
            ValueRef::State(s) => b.ins().iadd_imm_s(state, plan.state_offsets[s as usize] as i64),
            ValueRef::Node(i) => node_ptr(b, g, plan, sig, i as usize, logits, arena, state),
        }
    };

    for (grp, gref) in plan.groups.iter().zip(&grefs) {
        let mut members = Vec::with_capacity(grp.nodes.len());
        for i in grp.nodes.clone() {
            let rows = rows_value(&mut b, rows_cols(rows_type(g, i)), n);
            let operands: Vec<Value> = g.nodes[i].args.iter().map(|&v| value_ptr(&mut b, v)).collect();
            let out = node_ptr(&mut b, g, plan, sig, i, logits, arena, state);
            members.push((i, rows, operands, out));
        }
        let calls: Vec<Call<'_>> = members
            .iter()
            .map(|(i, rows, operands, out)| Call { spec: &specs[*i], rows: *rows, operands, result: *out })
            .collect();
        match gref {
            Some(k) => dispatch.call_group(&mut b, *k, n, pos, &calls, grp.kind == GroupKind::Rows),
            None => {
                for ((i, ..), call) in members.iter().zip(&calls) {
                    dispatch.call(&mut b, krefs[*i], n, pos, call);
                }
            }
        }
    }
    let ok = b.ins().iconst(types::I32, i64::from(STATUS_OK));
    b.ins().return_(&[ok]);
    b.seal_all_blocks();
    b.finalize(fcfg);
}

/// Where node `i`'s result lives: the caller's logits (the output), its state (`cache_write`),
/// or its arena slot.
#[allow(clippy::too_many_arguments)]
fn node_ptr(
    b: &mut FunctionBuilder,
    g: &Graph,
    plan: &MemoryPlan,
    sig: &Signature,
    i: usize,
    logits: Value,
    arena: Value,
    state: Value,
) -> Value {
    if i == sig.output_node {
        return logits;
    }
    let node = &g.nodes[i];
    if let Op::CacheWrite = node.op {
        let ValueRef::State(s) = node.args[0] else { unreachable!("checked by KernelSpec::of_node") };
        return b.ins().iadd_imm_s(state, plan.state_offsets[s as usize] as i64);
    }
    let off = plan.offsets[i].expect("checked by check_plan");
    b.ins().iadd_imm_s(arena, off as i64)
}
