//! Target selection, Cranelift flags and the object module.

use crate::entry;
use crate::error::BackendError;
use crate::kernels::{Dot, Kargs, KernelSpec, Schedule, kernel_signature};
use crate::signature;
use crate::target::{SUPPORTED_TRIPLES, Target};
use crate::weights_file::WeightsLayout;
use cranelift_codegen::Context;
use cranelift_codegen::ir::{InstBuilder, UserFuncName};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, FuncId, Linkage, Module, ModuleReloc};
use cranelift_object::{ObjectBuilder, ObjectModule};
use edgec_ir::{Graph, ValueRef};
use edgec_passes::dispatch::{GroupKind, dispatch_groups};
use edgec_passes::plan::MemoryPlan;
use edgec_runtime::abi::ModelInfo;
use std::collections::HashMap;
use target_lexicon::{Architecture, Triple};

#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub triple: Triple,
    /// A C identifier: the prefix of the exported symbols `NAME_info` and `NAME_forward`.
    pub name: String,
    /// The CPU-feature variants to emit (names as `edgec targets` lists them). The target's
    /// first variant, behind `NAME_forward`, is always among them.
    pub variants: Vec<&'static str>,
    /// Norms read only by int8-activation matmuls write their rows quantized, once, instead of
    /// every matmul task quantizing them (`norm_quant.rs`; bit-identical). On by default; off
    /// only to compare against the unfused kernels.
    pub quantize_in_norms: bool,
}

impl CompileOptions {
    /// Options that emit every variant the target has.
    pub fn new(triple: Triple, name: impl Into<String>) -> CompileOptions {
        let variants = Target::from_triple(&triple)
            .map(|t| t.variants().iter().filter(|v| v.available).map(|v| v.name).collect())
            .unwrap_or_default();
        CompileOptions { triple, name: name.into(), variants, quantize_in_norms: true }
    }

    /// Emits only the named variants. An unknown name, a variant that is not emitted yet, or a
    /// list without the target's first (baseline) variant is an error naming the target's
    /// variants.
    pub fn with_variants<S: AsRef<str>>(mut self, names: &[S]) -> Result<CompileOptions, BackendError> {
        let target = Target::from_triple(&self.triple)?;
        let all = target.variants();
        let known = || all.iter().map(|v| v.name).collect::<Vec<_>>().join(", ");
        let bad = |message: String| BackendError::BadTarget { triple: self.triple.to_string(), message };
        let mut chosen = Vec::new();
        for name in names {
            let name = name.as_ref();
            // `baseline` names the first variant on every target.
            let Some(v) =
                all.iter().enumerate().find(|(i, v)| v.name == name || (*i == 0 && name == "baseline")).map(|(_, v)| v)
            else {
                return Err(bad(format!("unknown CPU variant '{name}' (this target has: {})", known())));
            };
            if !v.available {
                return Err(bad(format!("CPU variant '{name}' is not emitted yet ({})", v.features)));
            }
            if !chosen.contains(&v.name) {
                chosen.push(v.name);
            }
        }
        if !chosen.contains(&all[0].name) {
            return Err(bad(format!(
                "the CPU variants must include '{}', the variant behind NAME_forward (this target has: {})",
                all[0].name,
                known()
            )));
        }
        self.variants = chosen;
        Ok(self)
    }

    pub fn emits(&self, variant: &str) -> bool {
        self.variants.contains(&variant)
    }
}

fn unsupported(t: &Triple) -> BackendError {
    BackendError::UnsupportedTarget { triple: t.to_string(), supported: SUPPORTED_TRIPLES.join(", ") }
}

fn cg_err(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Codegen { what: what.to_string(), message: e.to_string() }
}

/// The ISA for a supported triple (see [`Target`]): `opt_level=speed`, PIC, unwind info; on
/// x86_64 the AVX2+FMA level (without `has_fma` every f32x4 fma would become libm calls). The
/// triple is normalized first, so an Apple object always records its minimum OS version.
pub(crate) fn make_isa(triple: &Triple) -> Result<OwnedTargetIsa, BackendError> {
    make_isa_with(triple, &[], Schedule::Optimized)
}

/// [`make_isa`] with extra ISA flags enabled (a CPU-feature variant's, e.g. `has_dotprod`), for
/// kernels of the given schedule (`opt_level=none` for [`Schedule::AsBuilt`]).
pub(crate) fn make_isa_with(
    triple: &Triple,
    extra: &[&str],
    schedule: Schedule,
) -> Result<OwnedTargetIsa, BackendError> {
    let triple = &Target::from_triple(triple)?.triple;
    let mut flags = settings::builder();
    let opt_level = match schedule {
        Schedule::Optimized => "speed",
        Schedule::AsBuilt => "none",
    };
    for (k, v) in [("opt_level", opt_level), ("is_pic", "true"), ("unwind_info", "true")] {
        flags.set(k, v).map_err(|e| cg_err("flags", e))?;
    }
    let mut isa = cranelift_codegen::isa::lookup(triple.clone()).map_err(|_| unsupported(triple))?;
    if matches!(triple.architecture, Architecture::X86_64) {
        for f in ["has_sse3", "has_ssse3", "has_sse41", "has_sse42", "has_popcnt", "has_avx", "has_avx2", "has_fma"] {
            isa.enable(f).map_err(|e| cg_err(f, e))?;
        }
    }
    for f in extra {
        isa.enable(f).map_err(|e| cg_err(f, e))?;
    }
    isa.finish(settings::Flags::new(flags)).map_err(|e| cg_err("isa", e))
}

/// Compiles `ctx`'s function with `isa` (not the module's) and defines its bytes as `id`: the
/// way to give a function other flags than the module's. It gets no unwind entry (kernels
/// call nothing, so no unwinder walks through them).
fn define_compiled(
    module: &mut ObjectModule,
    ctx: &mut Context,
    isa: &dyn cranelift_codegen::isa::TargetIsa,
    id: FuncId,
    what: &str,
) -> Result<(), BackendError> {
    ctx.compile(isa, &mut Default::default()).map_err(|e| cg_err(what, format!("{:?}", e.inner)))?;
    let code = ctx.compiled_code().expect("just compiled");
    let align = u64::from(code.buffer.alignment);
    let bytes = code.buffer.data().to_vec();
    let relocs: Vec<ModuleReloc> =
        code.buffer.relocs().iter().map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, id)).collect();
    module.define_function_bytes(id, align, &bytes, &relocs).map_err(|e| cg_err(what, e))
}

fn check_name(name: &str) -> Result<(), BackendError> {
    let ok = !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
    if ok { Ok(()) } else { Err(BackendError::Options(format!("model name `{name}` is not a C identifier"))) }
}

/// Emits the object: one function per distinct kernel (local), `NAME_forward` and `NAME_info`
/// (exported). Imports nothing.
pub fn emit_object(
    g: &Graph,
    plan: &MemoryPlan,
    layout: &WeightsLayout,
    info: &ModelInfo,
    opts: &CompileOptions,
) -> Result<Vec<u8>, BackendError> {
    emit_object_with(g, plan, layout, info, opts, None)
}

/// [`emit_object`], and with `embedded_weights` (the whole weights file image, header
/// included) also the exported read-only data symbol `NAME_weights`, 64-byte aligned, so an
/// app needs no separate weights file. The runtime still checks its header and hash.
pub fn emit_object_with(
    g: &Graph,
    plan: &MemoryPlan,
    layout: &WeightsLayout,
    info: &ModelInfo,
    opts: &CompileOptions,
    embedded_weights: Option<&[u8]>,
) -> Result<Vec<u8>, BackendError> {
    check_name(&opts.name)?;
    if let Some(w) = embedded_weights
        && w.len() as u64 != info.weights_size
    {
        return Err(BackendError::Plan(format!(
            "embedded weights are {} bytes, the model info says {}",
            w.len(),
            info.weights_size
        )));
    }
    let isa = make_isa(&opts.triple)?;
    let as_built = make_isa_with(&opts.triple, &[], Schedule::AsBuilt)?;
    let sig = match signature::kind(g)? {
        signature::Kind::Decoder(s) => s,
        // A general graph gets `NAME_run` instead of `NAME_forward` (generic.rs).
        signature::Kind::General(gs) => {
            return crate::generic::emit(g, plan, layout, info, opts, embedded_weights, &gs);
        }
    };
    signature::check_plan(g, plan, &sig)?;
    if layout.offsets.len() != g.weights.len() || layout.packed != crate::pack::packed_weights(g, layout.activations) {
        return Err(BackendError::Plan("weights layout does not match the graph".into()));
    }
    if info.vocab != sig.vocab || info.max_tokens != sig.max_tokens || info.max_context != sig.max_context {
        return Err(BackendError::Plan("model info does not match the graph".into()));
    }
    let mut specs: Vec<KernelSpec> = (0..g.nodes.len()).map(|i| KernelSpec::of_node(g, i)).collect::<Result<_, _>>()?;
    // int8- and int4-weight matmuls take int8 activations in every variant of both ISAs, so
    // all entry points compute bit-identical results (only instruction selection differs).
    let target = Target::from_triple(&opts.triple)?;
    let dot = if target.is_aarch64() { Dot::Signed } else { Dot::UnsignedMadd };
    // They read packed weights (`pack.rs`), and so do gathers from a packed table.
    for (s, node) in specs.iter_mut().zip(&g.nodes) {
        let packed = |k: usize| matches!(node.args.get(k), Some(ValueRef::Weight(w)) if layout.packed[*w as usize]);
        match s {
            KernelSpec::Gather { packed: p, .. } => *p = packed(0),
            _ if packed(1) => {
                if let Some(t) = s.int8_twin(dot) {
                    *s = t;
                }
            }
            _ => {}
        }
    }
    // Norms read only by int8-activation matmuls quantize their rows for them (`norm_quant.rs`).
    if opts.quantize_in_norms {
        let fused = crate::norm_quant::quantized_norms(g, &layout.packed);
        for (i, (s, node)) in specs.iter_mut().zip(&g.nodes).enumerate() {
            match s {
                KernelSpec::RmsNorm { to_int8, .. } | KernelSpec::LayerNorm { to_int8, .. } => *to_int8 = fused[i],
                KernelSpec::MatMulTI8 { quantized_x, .. } => {
                    *quantized_x = matches!(node.args[0], ValueRef::Node(j) if fused[j as usize])
                }
                _ => {}
            }
        }
        // Quantized rows are readable only by those matmuls; any other kernel would take them
        // for f32 values.
        for (i, (s, node)) in specs.iter().zip(&g.nodes).enumerate() {
            let reads_fused = node.args.iter().any(|a| matches!(a, ValueRef::Node(j) if fused[*j as usize]));
            if reads_fused && !matches!(s, KernelSpec::MatMulTI8 { quantized_x: true, .. }) {
                return Err(BackendError::node(g, i, "reads a norm's int8 rows but is not an int8-activation matmul"));
            }
        }
    }
    check_bounds(g, &sig)?;

    let cc = isa.default_call_conv();
    let fcfg = isa.frontend_config();
    let builder = ObjectBuilder::new(isa, format!("{}.o", opts.name), cranelift_module::default_libcall_names())
        .map_err(|e| cg_err("object", e))?;
    let mut module = ObjectModule::new(builder);

    // Dedupe kernels by their static description, numbered by first use (deterministic).
    let mut ids: HashMap<String, FuncId> = HashMap::new();
    let mut node_kernel: Vec<FuncId> = Vec::with_capacity(specs.len());
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
        let id = module.declare_function(&sym, Linkage::Local, &ksig).map_err(|e| cg_err(&sym, e))?;
        ctx.func.signature = ksig;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        build_kernel(&mut ctx, &mut fctx, spec, fcfg);
        match spec.schedule() {
            Schedule::Optimized => {
                module.define_function(id, &mut ctx).map_err(|e| cg_err(&format!("kernel {sym} ({key})"), e))?
            }
            Schedule::AsBuilt => {
                define_compiled(&mut module, &mut ctx, &*as_built, id, &format!("kernel {sym} ({key})"))?
            }
        }
        module.clear_context(&mut ctx);
        ids.insert(key, id);
        node_kernel.push(id);
    }

    // The other CPU-feature variants (aarch64 `dotprod`, x86 `avxvnni`, `avx512vnni`): the
    // int8-activation kernels (scheduled as built, like every kernel `in_variant` returns) are
    // compiled again with the variant's ISA flags, and an entry point
    // `NAME_forward_<variant>` calls those and shares every other kernel. The caller picks an
    // entry point from the CPU's features.
    let mut entries = vec![(format!("{}_forward", opts.name), node_kernel.clone())];
    let mut numbered = ids.len();
    for v in target.variants().iter().skip(1).filter(|v| v.available && opts.emits(v.name)) {
        let isa_v = make_isa_with(&opts.triple, v.flags, Schedule::AsBuilt)?;
        let mut v_ids: HashMap<String, FuncId> = HashMap::new();
        let mut v_kernel = node_kernel.clone();
        for (i, spec) in specs.iter().enumerate() {
            let Some(twin) = spec.in_variant() else { continue };
            let key = twin.key();
            if let Some(&id) = v_ids.get(&key) {
                v_kernel[i] = id;
                continue;
            }
            let sym = format!("{}_k{numbered}_{}_{}", opts.name, twin.short_name(), v.name);
            numbered += 1;
            let ksig = kernel_signature(cc);
            let id = module.declare_function(&sym, Linkage::Local, &ksig).map_err(|e| cg_err(&sym, e))?;
            ctx.func.signature = ksig;
            ctx.func.name = UserFuncName::user(0, id.as_u32());
            build_kernel(&mut ctx, &mut fctx, &twin, fcfg);
            debug_assert!(twin.schedule() == Schedule::AsBuilt);
            define_compiled(&mut module, &mut ctx, &*isa_v, id, &format!("kernel {sym} ({key})"))?;
            module.clear_context(&mut ctx);
            v_ids.insert(key, id);
            v_kernel[i] = id;
        }
        entries.push((format!("{}_forward_{}", opts.name, v.name), v_kernel));
    }
    let launches = group_launches(g, plan, &specs)?;
    let mut group_ids: HashMap<(bool, Vec<FuncId>), FuncId> = HashMap::new();
    for (fwd_name, kernels) in &entries {
        // One kernel per distinct fused group (kind and member kernels), shared by all layers.
        let mut group_kernel: Vec<Option<FuncId>> = Vec::with_capacity(launches.len());
        for (grp, launch) in plan.groups.iter().zip(&launches) {
            let Some(rows) = *launch else {
                group_kernel.push(None);
                continue;
            };
            let members: Vec<FuncId> = grp.nodes.clone().map(|i| kernels[i]).collect();
            let key = (rows, members);
            if let Some(&id) = group_ids.get(&key) {
                group_kernel.push(Some(id));
                continue;
            }
            let sym = format!("{}_k{numbered}_group", opts.name);
            numbered += 1;
            let ksig = kernel_signature(cc);
            let id = module.declare_function(&sym, Linkage::Local, &ksig).map_err(|e| cg_err(&sym, e))?;
            ctx.func.signature = ksig;
            ctx.func.name = UserFuncName::user(0, id.as_u32());
            build_group_kernel(&mut module, &mut ctx, &mut fctx, &key.1, rows, fcfg);
            module.define_function(id, &mut ctx).map_err(|e| cg_err(&sym, e))?;
            module.clear_context(&mut ctx);
            group_ids.insert(key, id);
            group_kernel.push(Some(id));
        }
        let fsig = entry::forward_signature(cc);
        let fid = module.declare_function(fwd_name, Linkage::Export, &fsig).map_err(|e| cg_err(fwd_name, e))?;
        ctx.func.signature = fsig;
        ctx.func.name = UserFuncName::user(0, fid.as_u32());
        let kernels = entry::Kernels { node: kernels, group: &group_kernel };
        entry::build_forward(&mut module, &mut ctx.func, &mut fctx, g, plan, layout, &sig, &specs, &kernels, cc, fcfg);
        module.define_function(fid, &mut ctx).map_err(|e| cg_err(fwd_name, e))?;
        module.clear_context(&mut ctx);
    }

    let info_name = format!("{}_info", opts.name);
    let did = module.declare_data(&info_name, Linkage::Export, false, false).map_err(|e| cg_err(&info_name, e))?;
    let mut data = DataDescription::new();
    data.define(info.to_bytes().to_vec().into_boxed_slice());
    data.set_align(8);
    module.define_data(did, &data).map_err(|e| cg_err(&info_name, e))?;

    if let Some(w) = embedded_weights {
        let wname = format!("{}_weights", opts.name);
        let wid = module.declare_data(&wname, Linkage::Export, false, false).map_err(|e| cg_err(&wname, e))?;
        let mut data = DataDescription::new();
        data.define(w.to_vec().into_boxed_slice());
        data.set_align(edgec_runtime::abi::ALIGN as u64);
        module.define_data(wid, &data).map_err(|e| cg_err(&wname, e))?;
    }

    let product = module.finish();
    product.emit().map_err(|e| cg_err("object file", e))
}

/// Builds kernel `spec`'s body into `ctx.func` (whose signature and name are set).
fn build_kernel(
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
    spec: &KernelSpec,
    fcfg: cranelift_codegen::isa::TargetFrontendConfig,
) {
    build_body(&mut ctx.func, fctx, fcfg, |b, k| spec.build(b, k));
}

/// A kernel-signature function's body: `body` gets the builder in the entry block and the
/// `(args, begin, end)` parameters; the return and finalization are added around it.
fn build_body(
    func: &mut cranelift_codegen::ir::Function,
    fctx: &mut FunctionBuilderContext,
    fcfg: cranelift_codegen::isa::TargetFrontendConfig,
    body: impl FnOnce(&mut FunctionBuilder, &Kargs),
) {
    let mut b = FunctionBuilder::new(func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let k = Kargs { args: p[0], begin: p[1], end: p[2] };
    body(&mut b, &k);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(fcfg);
}

/// Per dispatch group of the plan: `Some(rows)` when it is launched as one kernel (sharing
/// rows, or concatenating tasks), `None` when its members are launched one by one (a single
/// node, or members whose kernels do not all run one task per row of the same count; always
/// safe, since the plan's lifetimes cover any order within a group).
fn group_launches(g: &Graph, plan: &MemoryPlan, specs: &[KernelSpec]) -> Result<Vec<Option<bool>>, BackendError> {
    if plan.groups != dispatch_groups(g) {
        return Err(BackendError::Plan("the memory plan's dispatch groups do not match the graph".into()));
    }
    Ok(plan
        .groups
        .iter()
        .map(|grp| match grp.kind {
            GroupKind::Single => None,
            GroupKind::Tasks => Some(false),
            GroupKind::Rows => {
                let first = signature::rows_cols(entry::rows_type(g, grp.nodes.start)).map(|rc| rc.rows_key());
                let same = grp.nodes.clone().all(|i| {
                    specs[i].tasks() == crate::kernels::Tasks::Rows
                        && signature::rows_cols(entry::rows_type(g, i)).map(|rc| rc.rows_key()) == first
                });
                (same && first.is_some()).then_some(true)
            }
        })
        .collect())
}

/// Builds a fused group's kernel into `ctx.func`: it calls `members` (see `kernels/group.rs`).
fn build_group_kernel(
    module: &mut ObjectModule,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
    members: &[FuncId],
    rows: bool,
    fcfg: cranelift_codegen::isa::TargetFrontendConfig,
) {
    let refs: Vec<_> = members.iter().map(|&id| module.declare_func_in_func(id, &mut ctx.func)).collect();
    build_body(&mut ctx.func, fctx, fcfg, |b, k| crate::kernels::group::group(b, k, &refs, rows));
}

/// Compile-time bounds the kernels rely on instead of run-time checks.
fn check_bounds(g: &Graph, sig: &signature::Signature) -> Result<(), BackendError> {
    for (i, n) in g.nodes.iter().enumerate() {
        match &n.op {
            edgec_ir::Op::Gather => {
                let v = g.dim_max(g.type_of(n.args[0]).shape.dims()[0]);
                if v < u64::from(sig.vocab) {
                    return Err(BackendError::node(
                        g,
                        i,
                        format!("table has {v} rows, fewer than vocab {}", sig.vocab),
                    ));
                }
            }
            edgec_ir::Op::Rope { .. } => {
                let p = g.dim_max(g.type_of(n.args[1]).shape.dims()[0]);
                if p < u64::from(sig.max_context) {
                    return Err(BackendError::node(
                        g,
                        i,
                        format!("rotary tables have {p} rows, fewer than max_context {}", sig.max_context),
                    ));
                }
            }
            edgec_ir::Op::Attention { .. } => {
                for a in [1, 2] {
                    let c = g.dim_max(g.type_of(n.args[a]).shape.dims()[0]);
                    if c < u64::from(sig.max_context) {
                        return Err(BackendError::node(
                            g,
                            i,
                            format!("cache operand {a} has {c} rows, fewer than max_context {}", sig.max_context),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
