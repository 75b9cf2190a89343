//! General graphs (anything that is not the decoder signature, e.g. an imported ONNX graph):
//! their checks and the `NAME_run` entry point.
//!
//! `int32_t NAME_run(const edgec_context *ctx, const void *const *inputs, void *const *outputs,
//! const int64_t *dims)`: `inputs`/`outputs` hold one pointer per graph input/output in graph
//! order, each sized for the value's shape at the run-time symbol values; `dims` holds one
//! value per graph symbol (at most one symbol; NULL allowed when there is none). The entry
//! checks NULLs, every symbol value against `1..=max` (`STATUS_BAD_TOKEN_COUNT`) and every
//! element of an input that a `gather` indexes with (`STATUS_BAD_TOKEN_ID`) before any kernel
//! runs, and returns having done nothing on failure.

use crate::entry::{Call, Dispatch, check_ids, return_if, rows_value};
use crate::error::BackendError;
use crate::kernels::{Kargs, KernelSpec, gather_index_input, kernel_signature};
use crate::signature::rows_cols;
use crate::weights_file::WeightsLayout;
use cranelift_codegen::Context;
use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, MemFlagsData, Signature as ClifSig, UserFuncName, Value, condcodes::IntCC, types,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use edgec_ir::{DType, Dim, Graph, Op, ValueRef};
use edgec_passes::plan::MemoryPlan;
use edgec_runtime::abi::{Context as AbiContext, ModelInfo, STATUS_BAD_TOKEN_COUNT, STATUS_NULL_ARGUMENT, STATUS_OK};
use std::collections::HashMap;
use std::mem::offset_of;

/// What the `NAME_run` entry needs to know about a general graph.
#[derive(Clone, Debug)]
pub(crate) struct GenericSig {
    /// The one symbol's bound, if the graph has a symbol.
    pub sym_max: Option<u64>,
    /// The node behind each graph output, in output order.
    pub outputs: Vec<usize>,
    /// Inputs that `gather`s index with, and the fewest table rows any of them indexes.
    pub index_inputs: Vec<(u32, u64)>,
}

fn err(m: impl Into<String>) -> BackendError {
    BackendError::Signature(m.into())
}

/// Checks a general graph: at most one symbol, 4-byte (f32/i32) inputs, every output a distinct
/// node result, f32 weights of constant shape, no state and none of the decoder-only ops.
pub(crate) fn check(g: &Graph) -> Result<GenericSig, BackendError> {
    if g.symbols.len() > 1 {
        return Err(err(format!("a general graph may have one symbolic dim, this one has {}", g.symbols.len())));
    }
    if !g.states.is_empty() {
        return Err(err("a general graph has no state"));
    }
    for inp in &g.inputs {
        if !matches!(inp.ty.dtype, DType::F32 | DType::I32) {
            return Err(err(format!(
                "input `{}` is {}; general graphs take f32 or i32 inputs",
                inp.name, inp.ty.dtype
            )));
        }
    }
    if g.outputs.is_empty() {
        return Err(err("the graph has no outputs"));
    }
    let mut outputs = Vec::new();
    for o in &g.outputs {
        match o.value {
            ValueRef::Node(i) if (i as usize) < g.nodes.len() && !outputs.contains(&(i as usize)) => {
                outputs.push(i as usize)
            }
            v => {
                return Err(err(format!(
                    "output `{}` must be a node result not listed twice, got {}",
                    o.name,
                    g.value_name(v)
                )));
            }
        }
    }
    for w in &g.weights {
        if w.ty.dtype != DType::F32 || w.ty.shape.dims().iter().any(|d| d.as_const().is_none()) {
            return Err(BackendError::Weight { name: w.name.clone(), message: "must be f32 of constant shape".into() });
        }
    }
    let mut index_inputs: Vec<(u32, u64)> = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        match n.op {
            Op::Rope { .. } | Op::CacheWrite | Op::Attention { .. } => {
                return Err(BackendError::node(g, i, "needs the decoder signature (ids, pos, state)"));
            }
            Op::Gather => {
                let k = gather_index_input(g, n.args[1])
                    .ok_or_else(|| BackendError::node(g, i, "gather indices must be an i32 graph input"))?;
                let rows = g.type_of(n.args[0]).shape.dims()[0]
                    .as_const()
                    .ok_or_else(|| BackendError::node(g, i, "table rows must be constant"))?;
                match index_inputs.iter_mut().find(|(x, _)| *x == k) {
                    Some(e) => e.1 = e.1.min(rows),
                    None => index_inputs.push((k, rows)),
                }
            }
            _ => {}
        }
    }
    Ok(GenericSig { sym_max: g.symbols.first().map(|s| s.max), outputs, index_inputs })
}

/// `int32_t run(const ctx*, const void *const *inputs, void *const *outputs, const int64_t *dims)`.
fn run_signature(cc: CallConv) -> ClifSig {
    let mut s = ClifSig::new(cc);
    for _ in 0..4 {
        s.params.push(AbiParam::new(types::I64));
    }
    s.returns.push(AbiParam::new(types::I32));
    s
}

/// The `NAME_info` of a general graph: `vocab` and `max_context` 0, `max_tokens` the symbol's
/// bound (0 without a symbol).
pub(crate) fn info(sig: &GenericSig, plan: &MemoryPlan, layout: &WeightsLayout, hash: [u8; 32]) -> ModelInfo {
    ModelInfo {
        abi_version: edgec_runtime::abi::ABI_VERSION,
        vocab: 0,
        max_tokens: sig.sym_max.map_or(0, |m| m.min(u64::from(u32::MAX)) as u32),
        max_context: 0,
        arena_size: plan.arena_size,
        state_size: plan.state_size,
        weights_size: layout.file_size,
        content_hash: hash,
    }
}

/// Emits the object of a general graph: kernels, `NAME_run`, `NAME_info`, and optionally
/// `NAME_weights`.
pub(crate) fn emit(
    g: &Graph,
    plan: &MemoryPlan,
    layout: &WeightsLayout,
    info: &ModelInfo,
    opts: &crate::CompileOptions,
    embedded_weights: Option<&[u8]>,
    sig: &GenericSig,
) -> Result<Vec<u8>, BackendError> {
    let cg = |what: &str, e: &dyn std::fmt::Display| BackendError::Codegen {
        what: what.to_string(),
        message: e.to_string(),
    };
    crate::signature::check_plan_outputs(g, plan, &sig.outputs)?;
    if layout.offsets.len() != g.weights.len() {
        return Err(BackendError::Plan("weights layout does not match the graph".into()));
    }
    let specs: Vec<KernelSpec> = (0..g.nodes.len()).map(|i| KernelSpec::of_node(g, i)).collect::<Result<_, _>>()?;
    let isa = crate::object::make_isa(&opts.triple)?;
    let cc = isa.default_call_conv();
    let fcfg = isa.frontend_config();
    let builder = ObjectBuilder::new(isa, format!("{}.o", opts.name), cranelift_module::default_libcall_names())
        .map_err(|e| cg("object", &e))?;
    let mut module = ObjectModule::new(builder);
    let mut ids: HashMap<String, FuncId> = HashMap::new();
    let mut node_kernel = Vec::with_capacity(specs.len());
    let mut ctx = Context::new();
    let mut fctx = FunctionBuilderContext::new();
    for spec in &specs {
        let key = spec.key();
        if let Some(&id) = ids.get(&key) {
            node_kernel.push(id);
            continue;
        }
        let sym = format!("{}_k{}_{}", opts.name, ids.len(), spec.short_name());
        let ksig = kernel_signature(cc);
        let id = module.declare_function(&sym, Linkage::Local, &ksig).map_err(|e| cg(&sym, &e))?;
        ctx.func.signature = ksig;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let p = b.block_params(entry).to_vec();
            let k = Kargs { args: p[0], begin: p[1], end: p[2] };
            spec.build(&mut b, &k);
            b.ins().return_(&[]);
            b.seal_all_blocks();
            b.finalize(fcfg);
        }
        module.define_function(id, &mut ctx).map_err(|e| cg(&format!("kernel {sym} ({key})"), &e))?;
        module.clear_context(&mut ctx);
        ids.insert(key, id);
        node_kernel.push(id);
    }

    let run_name = format!("{}_run", opts.name);
    let rsig = run_signature(cc);
    let rid = module.declare_function(&run_name, Linkage::Export, &rsig).map_err(|e| cg(&run_name, &e))?;
    ctx.func.signature = rsig;
    ctx.func.name = UserFuncName::user(0, rid.as_u32());
    build_run(&mut module, &mut ctx.func, &mut fctx, g, plan, layout, sig, &specs, &node_kernel, cc, fcfg);
    module.define_function(rid, &mut ctx).map_err(|e| cg(&run_name, &e))?;
    module.clear_context(&mut ctx);

    let info_name = format!("{}_info", opts.name);
    let did = module.declare_data(&info_name, Linkage::Export, false, false).map_err(|e| cg(&info_name, &e))?;
    let mut data = DataDescription::new();
    data.define(info.to_bytes().to_vec().into_boxed_slice());
    data.set_align(8);
    module.define_data(did, &data).map_err(|e| cg(&info_name, &e))?;
    if let Some(w) = embedded_weights {
        let wname = format!("{}_weights", opts.name);
        let wid = module.declare_data(&wname, Linkage::Export, false, false).map_err(|e| cg(&wname, &e))?;
        let mut data = DataDescription::new();
        data.define(w.to_vec().into_boxed_slice());
        data.set_align(edgec_runtime::abi::ALIGN as u64);
        module.define_data(wid, &data).map_err(|e| cg(&wname, &e))?;
    }
    module.finish().emit().map_err(|e| cg("object file", &e))
}

/// `c · n^p` of a product of dims.
fn emit_count(b: &mut FunctionBuilder, dims: &[Dim], n: Value) -> Value {
    let mut c = 1i64;
    let mut v = None;
    for d in dims {
        match d {
            Dim::Const(x) => c = c.wrapping_mul(*x as i64),
            Dim::Sym(_) => v = Some(v.map_or(n, |acc| b.ins().imul(acc, n))),
        }
    }
    match v {
        Some(v) => b.ins().imul_imm_s(v, c),
        None => b.ins().iconst(types::I64, c),
    }
}

#[allow(clippy::too_many_arguments)]
fn build_run(
    module: &mut ObjectModule,
    func: &mut Function,
    fctx: &mut FunctionBuilderContext,
    g: &Graph,
    plan: &MemoryPlan,
    layout: &WeightsLayout,
    sig: &GenericSig,
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
    let (ctx, inputs, outputs, dims) = (p[0], p[1], p[2], p[3]);
    let z = b.ins().iconst(types::I64, 0);
    // `inputs` may be NULL when there are none, `dims` when there is no symbol.
    let mut must = vec![ctx, outputs];
    if !g.inputs.is_empty() {
        must.push(inputs);
    }
    if sig.sym_max.is_some() {
        must.push(dims);
    }
    let mut any = b.ins().icmp(IntCC::Equal, must[0], z);
    for &v in &must[1..] {
        let c = b.ins().icmp(IntCC::Equal, v, z);
        any = b.ins().bor(any, c);
    }
    return_if(&mut b, any, STATUS_NULL_ARGUMENT);
    let trusted = MemFlagsData::new().with_notrap();
    let n = match sig.sym_max {
        Some(max) => {
            let n = b.ins().load(types::I64, trusted, dims, 0);
            // 1 <= n <= max, as one unsigned compare of n - 1.
            let nm1 = b.ins().iadd_imm_s(n, -1);
            let bad = b.ins().icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, nm1, max as i64);
            return_if(&mut b, bad, STATUS_BAD_TOKEN_COUNT);
            n
        }
        None => b.ins().iconst(types::I64, 1),
    };
    let in_ptrs: Vec<Value> = (0..g.inputs.len())
        .map(|k| {
            let v = b.ins().load(types::I64, trusted, inputs, (k * 8) as i32);
            let c = b.ins().icmp(IntCC::Equal, v, z);
            return_if(&mut b, c, STATUS_NULL_ARGUMENT);
            v
        })
        .collect();
    let out_ptrs: Vec<Value> = (0..sig.outputs.len())
        .map(|k| {
            let v = b.ins().load(types::I64, trusted, outputs, (k * 8) as i32);
            let c = b.ins().icmp(IntCC::Equal, v, z);
            return_if(&mut b, c, STATUS_NULL_ARGUMENT);
            v
        })
        .collect();
    // Every index a gather will read: 0 <= id < rows (as u32).
    for &(k, rows) in &sig.index_inputs {
        let count = emit_count(&mut b, g.inputs[k as usize].ty.shape.dims(), n);
        check_ids(&mut b, in_ptrs[k as usize], count, rows);
    }

    let ctx_flags = MemFlagsData::trusted().with_readonly();
    let weights = b.ins().load(types::I64, ctx_flags, ctx, offset_of!(AbiContext, weights) as i32);
    let arena = b.ins().load(types::I64, ctx_flags, ctx, offset_of!(AbiContext, arena) as i32);
    // The context's buffers must be there (an empty arena is never read), as in NAME_forward.
    let mut missing = b.ins().icmp_imm_u(IntCC::Equal, weights, 0);
    if plan.arena_size > 0 {
        let c = b.ins().icmp_imm_u(IntCC::Equal, arena, 0);
        missing = b.ins().bor(missing, c);
    }
    return_if(&mut b, missing, STATUS_NULL_ARGUMENT);
    // Launched node by node: the plan's dispatch groups allow that order too.
    let dispatch = Dispatch::new(&mut b, g, ctx, cc, 1);
    let node_ptr = |b: &mut FunctionBuilder, i: usize| -> Value {
        match sig.outputs.iter().position(|&o| o == i) {
            Some(j) => out_ptrs[j],
            None => b.ins().iadd_imm_s(arena, plan.offsets[i].expect("checked by check_plan") as i64),
        }
    };
    for (i, node) in g.nodes.iter().enumerate() {
        let rows = rows_value(&mut b, rows_cols(&node.ty), n);
        let operands: Vec<Value> = node
            .args
            .iter()
            .map(|&v| match v {
                ValueRef::Input(k) => in_ptrs[k as usize],
                ValueRef::Weight(w) => b.ins().iadd_imm_s(weights, layout.offsets[w as usize] as i64),
                ValueRef::Node(j) => node_ptr(&mut b, j as usize),
                ValueRef::State(_) => unreachable!("checked: no state"),
            })
            .collect();
        let out = node_ptr(&mut b, i);
        // General graphs have no position: slot 1 is 0.
        dispatch.call(&mut b, krefs[i], n, z, &Call { spec: &specs[i], rows, operands: &operands, result: out });
    }
    let ok = b.ins().iconst(types::I32, i64::from(STATUS_OK));
    b.ins().return_(&[ok]);
    b.seal_all_blocks();
    b.finalize(fcfg);
}
