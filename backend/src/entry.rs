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

/// How an entry point calls its kernels: one argument block on its stack, refilled for each
/// node (see the slot table in lib.rs), then `ctx->parallel_for(pool, kernel, block, n_tasks)`.
pub(crate) struct Dispatch {
    args: Value,
    pool: Value,
    parallel_for: Value,
    signature: SigRef,
}

impl Dispatch {
    pub(crate) fn new(b: &mut FunctionBuilder, g: &Graph, ctx: Value, cc: CallConv) -> Dispatch {
        let ctx_flags = MemFlagsData::trusted().with_readonly();
        let pool = b.ins().load(types::I64, ctx_flags, ctx, offset_of!(Context, pool) as i32);
        let parallel_for = b.ins().load(types::I64, ctx_flags, ctx, offset_of!(Context, parallel_for) as i32);
        // Defence in depth: a NULL callback is refused, not called (`pool` may be NULL).
        let no_pf = b.ins().icmp_imm_u(IntCC::Equal, parallel_for, 0);
        return_if(b, no_pf, STATUS_NULL_ARGUMENT);
        let max_arity = g.nodes.iter().map(|n| n.args.len()).max().unwrap_or(0) as u32;
        let block_bytes = (SLOT_PTRS + max_arity + 1) * 8;
        let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, block_bytes, 4));
        let args = b.ins().stack_addr(types::I64, slot, 0);
        // parallel_for(pool, kernel, args, n_tasks)
        let mut sig = ClifSig::new(cc);
        sig.params.extend([AbiParam::new(types::I64); 4]);
        let signature = b.import_signature(sig);
        Dispatch { args, pool, parallel_for, signature }
    }

    /// Fills the block for one node and runs its kernel over its tasks.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call(
        &self,
        b: &mut FunctionBuilder,
        spec: &KernelSpec,
        kernel: FuncRef,
        n: Value,
        pos: Value,
        rows: Value,
        operands: &[Value],
        result: Value,
    ) {
        let st = MemFlagsData::trusted();
        let slot = |k: u32| (k * 8) as i32;
        b.ins().store(st, n, self.args, slot(SLOT_N_TOKENS));
        b.ins().store(st, pos, self.args, slot(SLOT_POS));
        b.ins().store(st, rows, self.args, slot(SLOT_ROWS));
        for (a, &ptr) in operands.iter().enumerate() {
            b.ins().store(st, ptr, self.args, slot(SLOT_PTRS + a as u32));
        }
        b.ins().store(st, result, self.args, slot(SLOT_PTRS + operands.len() as u32));
        let n_tasks = match spec.tasks() {
            Tasks::Rows => rows,
            Tasks::Static(t) => b.ins().iconst(types::I64, t as i64),
            Tasks::RowsTimes(t) => b.ins().imul_imm_s(rows, t as i64),
            Tasks::Prod(p) => p.emit(b, n),
        };
        let kaddr = b.ins().func_addr(types::I64, kernel);
        b.ins().call_indirect(self.signature, self.parallel_for, &[self.pool, kaddr, self.args, n_tasks]);
    }
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
    node_kernel: &[FuncId],
    cc: CallConv,
    fcfg: cranelift_codegen::isa::TargetFrontendConfig,
) {
    let krefs: Vec<_> = node_kernel.iter().map(|&id| module.declare_func_in_func(id, func)).collect();
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
    let dispatch = Dispatch::new(&mut b, g, ctx, cc);

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

    for (i, node) in g.nodes.iter().enumerate() {
        // A cache write's rows are those of the rows it writes, not of the whole state.
        let rows_ty = match node.op {
            Op::CacheWrite => g.type_of(node.args[1]),
            _ => &node.ty,
        };
        let rows = rows_value(&mut b, rows_cols(rows_ty), n);
        let operands: Vec<Value> = node.args.iter().map(|&v| value_ptr(&mut b, v)).collect();
        let out = node_ptr(&mut b, g, plan, sig, i, logits, arena, state);
        dispatch.call(&mut b, &specs[i], krefs[i], n, pos, rows, &operands, out);
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
