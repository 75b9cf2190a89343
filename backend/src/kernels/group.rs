//! A fused dispatch group (`edgec_passes::dispatch`): one kernel that runs several nodes'
//! kernels within one `parallel_for`, calling them directly.
//!
//! Its argument block holds, per member, the member's own argument block and task count.
//! - Concatenated tasks: tasks `[begin, end)` of the group are cut at the members' boundaries
//!   and each piece runs the member's kernel on its own task numbers.
//! - Shared rows: every member has one task per row; task `t` runs each member's task `t` in
//!   order, so a member reads the rows earlier members just wrote.

use super::{Ext, Kargs};
use cranelift_codegen::ir::{FuncRef, InstBuilder, MemFlagsData, Value, condcodes::IntCC, types};
use cranelift_frontend::FunctionBuilder;

pub(crate) fn group(b: &mut FunctionBuilder, k: &Kargs, members: &[FuncRef], rows: bool) {
    let flags = MemFlagsData::trusted().with_readonly();
    let blocks: Vec<(Value, Value)> = (0..members.len() as i32)
        .map(|m| (b.ins().load(types::I64, flags, k.args, 16 * m), b.ins().load(types::I64, flags, k.args, 16 * m + 8)))
        .collect();
    if rows {
        b.for_range(k.begin, k.end, 1, |b, t| {
            let next = b.ins().iadd_imm_s(t, 1);
            for (&f, &(args, _)) in members.iter().zip(&blocks) {
                b.ins().call(f, &[args, t, next]);
            }
        });
        return;
    }
    let mut first = b.c64(0);
    for (&f, &(args, tasks)) in members.iter().zip(&blocks) {
        // This member's tasks are group tasks [first, first + tasks).
        let last = b.ins().iadd(first, tasks);
        let lo = b.ins().umax(k.begin, first);
        let hi = b.ins().umin(k.end, last);
        let run = b.create_block();
        let skip = b.create_block();
        let some = b.ins().icmp(IntCC::UnsignedLessThan, lo, hi);
        b.ins().brif(some, run, &[], skip, &[]);
        b.switch_to_block(run);
        let lo = b.ins().isub(lo, first);
        let hi = b.ins().isub(hi, first);
        b.ins().call(f, &[args, lo, hi]);
        b.ins().jump(skip, &[]);
        b.switch_to_block(skip);
        first = last;
    }
}
