//! Kernel lowering: one Cranelift function per distinct [`KernelSpec`].
//!
//! Every kernel has the signature `extern "C" fn(args: *const u8, begin: u64, end: u64)` and
//! processes tasks `[begin, end)`; the argument block layout is described in the crate docs.
//! A spec holds only static facts (op, attributes, constant dims), so all layers whose nodes
//! agree on them share one function.

mod attention;
mod elementwise;
mod epilogue;
mod general;
pub(crate) mod group;
mod matmul;
mod norm;
pub(crate) mod qdot;
mod quant;
mod rope;

use crate::error::BackendError;
use crate::signature::rows_cols;
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Signature, Type, Value, condcodes::IntCC, types};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;
use edgec_ir::{BinaryOp, DType, Dim, Graph, Op, ReduceOp, Storage, UnaryOp, ValueRef};

pub(crate) use elementwise::Bcast;
pub(crate) use epilogue::Epilogue;
pub(crate) use general::Prod;
use general::SOp;
pub(crate) use qdot::Dot;

/// Slots of the argument block (each a u64).
pub(crate) const SLOT_N_TOKENS: u32 = 0;
pub(crate) const SLOT_POS: u32 = 1;
pub(crate) const SLOT_ROWS: u32 = 2;
/// Operand pointers start here; the result pointer follows the last operand.
pub(crate) const SLOT_PTRS: u32 = 3;

/// Output columns per matmul task (transposed weight form). A multiple of the 4-column tile.
pub(crate) const MATMUL_COLS_PER_TASK: u64 = 16;

/// How a KV state stores its rows (its dtype: f32, f16, or q8 blocks, `edgec_ir::DType::Q8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KvStore {
    F32,
    F16,
    Q8,
}

impl KvStore {
    fn of(d: DType) -> Option<KvStore> {
        match d {
            DType::F32 => Some(KvStore::F32),
            DType::F16 => Some(KvStore::F16),
            DType::Q8 => Some(KvStore::Q8),
            _ => None,
        }
    }
}

/// The static description of one kernel; its `Debug` text is the dedupe key.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum KernelSpec {
    /// `gather`: task = one output row (copy a table row, or decode it from the table's
    /// storage `w`, `packed` as `pack.rs` lays it out; `vocab` is the table's row count).
    Gather { h: u64, vocab: u64, w: Storage, packed: bool },
    /// `matmul` with `transpose_b` (`x[M,K]·W[N,K]ᵀ`) and `linear` (the same with epilogue
    /// `ep`): task = a block of [`MATMUL_COLS_PER_TASK`] output columns, every row. `w` and
    /// `up` are the storages of the weight and of a gated `linear`'s up projection (f32 when
    /// there is none), dequantized in registers when not f32.
    MatMulT { k: u64, n: u64, w: Storage, up: Storage, ep: Epilogue },
    /// [`KernelSpec::MatMulT`] for int8 and int4 weights with int8 activations (`qdot.rs`),
    /// its integer products built as `dot` (see [`KernelSpec::int8_twin`]); task = a block of
    /// [`qdot::cols_per_task`] output columns. `quantized_x`: `x` is a norm's result written
    /// as quantized rows (`to_int8`), not f32.
    MatMulTI8 { k: u64, n: u64, w: Storage, up: Storage, ep: Epilogue, dot: Dot, quantized_x: bool },
    /// `matmul` without transpose (`x[M,K]·B[K,N]`): task = 4 output columns, every row.
    MatMulN { k: u64, n: u64 },
    /// `rms_norm`: task = one row (normalized in groups of `group` features; `group == h` for
    /// the whole row). `to_int8`: the result is written as int8-activation rows
    /// (`qdot::QRow`) for the int8-activation matmuls that are its only readers
    /// ([`crate::norm_quant`]).
    RmsNorm { h: u64, group: u64, eps: f32, to_int8: bool },
    /// `layer_norm`: task = one row; `to_int8` as for `RmsNorm`.
    LayerNorm { h: u64, eps: f32, to_int8: bool },
    /// `rope`: task = one row (all its heads).
    Rope { width: u64, head_dim: u64, rotary_dim: u64, interleaved: bool },
    /// `cache_write`: task = one written row (rounded to f16, or quantized to q8 blocks, as the
    /// state `kv` stores rows).
    CacheWrite { w: u64, kv: KvStore },
    /// `attention`: task = one query row and `n = attention::heads_per_task` query heads
    /// sharing a KV head, numbered `row * (heads / n) + head / n`; the caches hold `kv` rows.
    Attention { heads: u64, kv_heads: u64, head_dim: u64, scale: f32, window: Option<u32>, kv: KvStore },
    /// unary ops: task = one row of the flattened `[rows, cols]` tensor.
    Unary { op: UnaryOp, cols: u64 },
    /// binary ops: task = one output row.
    Binary { op: BinaryOp, cols: u64, lhs: Bcast, rhs: Bcast },
    /// `softmax` over the last axis: task = one row.
    Softmax { cols: u64 },
    /// reductions over the last axis: task = one row.
    Reduce { op: ReduceOp, cols: u64 },
    /// Run-time shapes (general graphs): layout ops, broadcasting elementwise ops and `select`,
    /// one output row per task (see [`general::strided`]).
    Strided { op: SOp, out: Vec<Prod>, ins: Vec<(Prod, Vec<Prod>)> },
    /// `concat`: task = one index of the axes before the concat axis; `a`/`b` elements each.
    Concat { outer: Prod, a: Prod, b: Prod },
    /// `batch_matmul`: task = one output row.
    BatchMatMul { batch: Vec<Prod>, sa: Vec<Prod>, sb: Vec<Prod>, m: Prod, k: Prod, n: Prod },
    /// softmax (`op: None`) or a reduction over a symbolic last axis: task = one row.
    RowOp { op: Option<ReduceOp>, rows: Prod, cols: Prod },
}

/// How many tasks a node's kernel call has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tasks {
    /// The node's run-time row count.
    Rows,
    /// A constant.
    Static(u64),
    /// Rows times a constant.
    RowsTimes(u64),
    /// `c · n^p` with `n` the symbol's run-time value.
    Prod(Prod),
}

/// The graph input a `gather`'s indices come from, through `reshape`s (the entry point
/// range-checks that input before any kernel runs).
pub(crate) fn gather_index_input(g: &Graph, mut v: ValueRef) -> Option<u32> {
    loop {
        match v {
            ValueRef::Input(k) if g.inputs.get(k as usize)?.ty.dtype == edgec_ir::DType::I32 => return Some(k),
            ValueRef::Node(j) if matches!(g.nodes.get(j as usize)?.op, Op::Reshape { .. }) => {
                v = g.nodes[j as usize].args[0];
            }
            _ => return None,
        }
    }
}

/// Element strides of an operand of dims `a` read at every index of output dims `o` (numpy
/// broadcasting, aligned from the right; 0 along broadcast axes).
fn bcast_strides(a: &[Dim], o: &[Dim]) -> Option<Vec<Prod>> {
    let s = Prod::strides(a)?;
    let off = o.len().checked_sub(a.len())?;
    Some(
        (0..o.len())
            .map(|k| match k.checked_sub(off) {
                Some(ka) if a[ka] != Dim::Const(1) => s[ka],
                _ => Prod::ZERO,
            })
            .collect(),
    )
}

/// The run-time-shape kernel for node `i`, or `None` when a static kernel applies.
fn general_spec(g: &Graph, i: usize) -> Result<Option<KernelSpec>, BackendError> {
    let node = &g.nodes[i];
    let nerr = |m: &str| BackendError::node(g, i, m);
    let ovf = || nerr("shape too large");
    let od = node.ty.shape.dims();
    let dims = |k: usize| g.type_of(node.args[k]).shape.dims();
    // The decoder's own ops always have static kernels (a cache may be f16 or q8).
    if matches!(node.op, Op::CacheWrite | Op::Attention { .. } | Op::Rope { .. }) {
        return Ok(None);
    }
    for k in 0..node.args.len() {
        if g.type_of(node.args[k]).dtype.size() != Some(4) {
            return Err(nerr("general kernels take 4-byte elements only"));
        }
    }
    let static_ok = rows_cols(&node.ty).is_some();
    let out: Vec<Prod> = od.iter().map(|&d| Prod::of(d)).collect();
    let elementwise = |op: SOp| -> Result<Option<KernelSpec>, BackendError> {
        let ins = (0..node.args.len())
            .map(|k| bcast_strides(dims(k), od).map(|s| (Prod::ZERO, s)).ok_or_else(|| nerr("bad broadcast")))
            .collect::<Result<_, _>>()?;
        Ok(Some(KernelSpec::Strided { op, out: out.clone(), ins }))
    };
    match &node.op {
        Op::Unary(u) if !static_ok => elementwise(SOp::Unary(*u)),
        Op::Binary(o) if g.type_of(node.args[0]).dtype == DType::I32 => elementwise(SOp::BinaryI32(*o)),
        Op::Binary(o) => {
            // The static kernels are vectorized float arithmetic: comparisons go here.
            let fits = static_ok
                && !o.is_comparison()
                && Bcast::classify(&g.type_of(node.args[0]).shape, &node.ty.shape).is_some()
                && Bcast::classify(&g.type_of(node.args[1]).shape, &node.ty.shape).is_some();
            if fits { Ok(None) } else { elementwise(SOp::Binary(*o)) }
        }
        Op::Select => elementwise(SOp::Select),
        Op::Cast { to } => elementwise(SOp::Cast(*to)),
        Op::Expand { .. } => elementwise(SOp::Copy),
        Op::Reshape { .. } => {
            let s = Prod::strides(od).ok_or_else(ovf)?;
            Ok(Some(KernelSpec::Strided { op: SOp::Copy, out, ins: vec![(Prod::ZERO, s)] }))
        }
        Op::Transpose { perm } => {
            let xs = Prod::strides(dims(0)).ok_or_else(ovf)?;
            let s = perm.iter().map(|&p| xs[p as usize]).collect();
            Ok(Some(KernelSpec::Strided { op: SOp::Copy, out, ins: vec![(Prod::ZERO, s)] }))
        }
        Op::Slice { axis, start, .. } => {
            let xs = Prod::strides(dims(0)).ok_or_else(ovf)?;
            let st = xs[*axis as usize];
            let off = Prod { c: st.c.checked_mul(*start).ok_or_else(ovf)?, p: st.p };
            Ok(Some(KernelSpec::Strided { op: SOp::Copy, out, ins: vec![(off, xs)] }))
        }
        Op::Concat { axis } => {
            let ax = *axis as usize;
            Ok(Some(KernelSpec::Concat {
                outer: Prod::of_dims(&od[..ax]).ok_or_else(ovf)?,
                a: Prod::of_dims(&dims(0)[ax..]).ok_or_else(ovf)?,
                b: Prod::of_dims(&dims(1)[ax..]).ok_or_else(ovf)?,
            }))
        }
        Op::BatchMatMul => {
            let (a, bd) = (dims(0), dims(1));
            let (ra, rb, r) = (a.len(), bd.len(), od.len());
            let lead = &od[..r - 2];
            let sa = bcast_strides(&a[..ra - 2], lead).ok_or_else(|| nerr("bad broadcast"))?;
            let sb = bcast_strides(&bd[..rb - 2], lead).ok_or_else(|| nerr("bad broadcast"))?;
            // Leading strides count whole matrices.
            let ma = Prod::of(a[ra - 2]).mul(Prod::of(a[ra - 1])).ok_or_else(ovf)?;
            let mb = Prod::of(bd[rb - 2]).mul(Prod::of(bd[rb - 1])).ok_or_else(ovf)?;
            let scale = |v: Vec<Prod>, m: Prod| -> Option<Vec<Prod>> {
                v.into_iter().map(|s| if s == Prod::ZERO { Some(s) } else { s.mul(m) }).collect()
            };
            Ok(Some(KernelSpec::BatchMatMul {
                batch: lead.iter().map(|&d| Prod::of(d)).collect(),
                sa: scale(sa, ma).ok_or_else(ovf)?,
                sb: scale(sb, mb).ok_or_else(ovf)?,
                m: Prod::of(a[ra - 2]),
                k: Prod::of(a[ra - 1]),
                n: Prod::of(bd[rb - 1]),
            }))
        }
        Op::Softmax if !static_ok => Ok(Some(KernelSpec::RowOp {
            op: None,
            rows: Prod::of_dims(&od[..od.len() - 1]).ok_or_else(ovf)?,
            cols: Prod::of(od[od.len() - 1]),
        })),
        Op::Reduce(r) if rows_cols(g.type_of(node.args[0])).is_none() => {
            let x = dims(0);
            Ok(Some(KernelSpec::RowOp {
                op: Some(*r),
                rows: Prod::of_dims(&x[..x.len() - 1]).ok_or_else(ovf)?,
                cols: Prod::of(x[x.len() - 1]),
            }))
        }
        _ => Ok(None),
    }
}

impl KernelSpec {
    /// The spec for node `i`, or why it cannot be lowered.
    pub fn of_node(g: &Graph, i: usize) -> Result<KernelSpec, BackendError> {
        let node = &g.nodes[i];
        let nerr = |m: &str| BackendError::node(g, i, m);
        let ty = |k: usize| g.type_of(node.args[k]);
        let cdim = |d: Dim, what: &str| d.as_const().ok_or_else(|| nerr(&format!("{what} must be a constant dim")));
        // Stored (quantized, half) weights are read only by the kernels that decode them.
        let storage_of = |k: usize| match node.args.get(k) {
            Some(ValueRef::Weight(w)) => g.weights.get(*w as usize).map_or(Storage::F32, |w| w.storage()),
            _ => Storage::F32,
        };
        for k in 0..node.args.len() {
            let st = storage_of(k);
            if st != Storage::F32 && !node.op.reads_stored_weight(k) {
                return Err(nerr(&format!(
                    "operand {k} is stored as {}; only matmul (transpose_b) and linear weights and gather tables may be",
                    st.name()
                )));
            }
        }
        if let Some(spec) = general_spec(g, i)? {
            return Ok(spec);
        }
        let rc = rows_cols(&node.ty).ok_or_else(|| nerr("last dim must be constant"))?;
        Ok(match &node.op {
            Op::Gather => {
                if gather_index_input(g, node.args[1]).is_none() {
                    return Err(nerr("gather indices must be an i32 graph input (possibly reshaped)"));
                }
                KernelSpec::Gather {
                    h: cdim(ty(0).shape.dims()[1], "table width")?,
                    vocab: cdim(ty(0).shape.dims()[0], "table rows")?,
                    w: storage_of(0),
                    packed: false,
                }
            }
            Op::MatMul { transpose_b } => {
                let k = cdim(ty(0).shape.dims()[1], "inner dim")?;
                let bd = ty(1).shape.dims();
                let n = cdim(if *transpose_b { bd[0] } else { bd[1] }, "output width")?;
                if *transpose_b {
                    KernelSpec::MatMulT { k, n, w: storage_of(1), up: Storage::F32, ep: Epilogue::default() }
                } else {
                    KernelSpec::MatMulN { k, n }
                }
            }
            Op::Linear { .. } => {
                let ep = Epilogue::of(&node.op);
                let up = node.op.linear_operands().up.map_or(Storage::F32, storage_of);
                let k = cdim(ty(0).shape.dims()[1], "inner dim")?;
                let n = cdim(ty(1).shape.dims()[0], "output width")?;
                KernelSpec::MatMulT { k, n, w: storage_of(1), up, ep }
            }
            Op::RmsNorm { eps, group } => {
                let group = group.map_or(rc.cols, u64::from);
                if group == 0 || rc.cols % group != 0 {
                    return Err(nerr("features must be a multiple of the norm group"));
                }
                KernelSpec::RmsNorm { h: rc.cols, group, eps: *eps, to_int8: false }
            }
            Op::LayerNorm { eps } => KernelSpec::LayerNorm { h: rc.cols, eps: *eps, to_int8: false },
            Op::Rope { head_dim, rotary_dim, interleaved } => {
                if node.args[3] != edgec_ir::ValueRef::Input(1) {
                    return Err(nerr("rope position must be the `pos` input"));
                }
                KernelSpec::Rope {
                    width: rc.cols,
                    head_dim: u64::from(*head_dim),
                    rotary_dim: u64::from(*rotary_dim),
                    interleaved: *interleaved,
                }
            }
            Op::CacheWrite => {
                if !matches!(node.args[0], edgec_ir::ValueRef::State(_)) {
                    return Err(nerr("operand 0 must be a state buffer"));
                }
                if node.args[2] != edgec_ir::ValueRef::Input(1) {
                    return Err(nerr("cache_write position must be the `pos` input"));
                }
                let kv = KvStore::of(ty(0).dtype).ok_or_else(|| {
                    nerr(&format!("a {} state has no cache_write kernel (f32, f16 or q8)", ty(0).dtype))
                })?;
                if ty(1).dtype != DType::F32 {
                    return Err(nerr(&format!("cache_write takes f32 rows, got {}", ty(1).dtype)));
                }
                if kv == KvStore::Q8 {
                    ty(0).dtype.check_row(rc.cols).map_err(|m| nerr(&m))?;
                }
                KernelSpec::CacheWrite { w: rc.cols, kv }
            }
            Op::Attention { heads, kv_heads, head_dim, scale, window } => {
                if node.args[3] != edgec_ir::ValueRef::Input(1) {
                    return Err(nerr("attention position must be the `pos` input"));
                }
                if window == &Some(0) {
                    return Err(nerr("window 0 attends to nothing"));
                }
                let kv = KvStore::of(ty(1).dtype)
                    .filter(|_| ty(2).dtype == ty(1).dtype)
                    .ok_or_else(|| nerr("attention's caches must both be f32, f16 or q8"))?;
                if ty(0).dtype != DType::F32 {
                    return Err(nerr(&format!("attention takes an f32 query, got {}", ty(0).dtype)));
                }
                KernelSpec::Attention {
                    heads: u64::from(*heads),
                    kv_heads: u64::from(*kv_heads),
                    head_dim: u64::from(*head_dim),
                    scale: *scale,
                    window: *window,
                    kv,
                }
            }
            Op::Unary(op) => KernelSpec::Unary { op: *op, cols: rc.cols },
            Op::Binary(op) => {
                let lhs = Bcast::classify(&ty(0).shape, &node.ty.shape)
                    .ok_or_else(|| nerr("unsupported broadcast pattern for operand 0 (supported: equal shapes, a trailing row [H], a column [S,1], a scalar)"))?;
                let rhs = Bcast::classify(&ty(1).shape, &node.ty.shape)
                    .ok_or_else(|| nerr("unsupported broadcast pattern for operand 1 (supported: equal shapes, a trailing row [H], a column [S,1], a scalar)"))?;
                KernelSpec::Binary { op: *op, cols: rc.cols, lhs, rhs }
            }
            Op::Softmax => KernelSpec::Softmax { cols: rc.cols },
            Op::Reshape { .. }
            | Op::Expand { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Slice { .. }
            | Op::BatchMatMul
            | Op::Select
            | Op::Cast { .. } => unreachable!("general_spec covers it"),
            Op::Reduce(op) => {
                let inner = rows_cols(ty(0)).ok_or_else(|| nerr("last dim must be constant"))?;
                KernelSpec::Reduce { op: *op, cols: inner.cols }
            }
        })
    }

    /// The int8-activation form of this kernel, if it has one: int8- and int4-weight matmuls
    /// whose inner dim is whole blocks of 32 (used in every variant of both ISAs; `dot` is the
    /// ISA's baseline tree).
    pub fn int8_twin(&self, dot: Dot) -> Option<KernelSpec> {
        match *self {
            KernelSpec::MatMulT { k, n, w, up, ep } if qdot::supports(w, k) && (!ep.gated || up == w) => {
                Some(KernelSpec::MatMulTI8 { k, n, w, up, ep, dot, quantized_x: false })
            }
            _ => None,
        }
    }

    /// The kernel as a CPU-feature variant compiles it again (with the ISA flags that fold
    /// the integer dot products into `sdot` / `vpdpbusd`), or `None` when the variant shares
    /// the baseline's kernel.
    pub fn in_variant(&self) -> Option<KernelSpec> {
        match *self {
            KernelSpec::MatMulTI8 { dot: Dot::UnsignedMadd, k, n, w, up, ep, quantized_x } => {
                Some(KernelSpec::MatMulTI8 { k, n, w, up, ep, dot: Dot::Unsigned, quantized_x })
            }
            KernelSpec::MatMulTI8 { .. } => Some(self.clone()),
            _ => None,
        }
    }

    /// Who schedules the kernel's instructions.
    pub fn schedule(&self) -> Schedule {
        match self {
            KernelSpec::MatMulTI8 { .. } => Schedule::AsBuilt,
            KernelSpec::Attention { .. } => Schedule::AsBuilt,
            KernelSpec::MatMulT { w, up, .. } if (*w, *up) != (Storage::F32, Storage::F32) => Schedule::AsBuilt,
            _ => Schedule::Optimized,
        }
    }

    pub fn key(&self) -> String {
        format!("{self:?}")
    }

    /// A short name for the symbol.
    pub fn short_name(&self) -> String {
        match self {
            KernelSpec::Gather { .. } => "gather".into(),
            KernelSpec::MatMulT { ep, .. } if !ep.is_none() => "linear".into(),
            KernelSpec::MatMulT { .. } => "matmul_t".into(),
            KernelSpec::MatMulTI8 { ep, .. } if !ep.is_none() => "linear_i8".into(),
            KernelSpec::MatMulTI8 { .. } => "matmul_t_i8".into(),
            KernelSpec::MatMulN { .. } => "matmul".into(),
            KernelSpec::RmsNorm { to_int8: true, .. } => "rms_norm_i8".into(),
            KernelSpec::RmsNorm { .. } => "rms_norm".into(),
            KernelSpec::LayerNorm { to_int8: true, .. } => "layer_norm_i8".into(),
            KernelSpec::LayerNorm { .. } => "layer_norm".into(),
            KernelSpec::Rope { .. } => "rope".into(),
            KernelSpec::CacheWrite { .. } => "cache_write".into(),
            KernelSpec::Attention { .. } => "attention".into(),
            KernelSpec::Unary { op, .. } => op.name().into(),
            KernelSpec::Binary { op, .. } => op.name().into(),
            KernelSpec::Softmax { .. } => "softmax".into(),
            KernelSpec::Reduce { op, .. } => op.name().into(),
            KernelSpec::Strided { op: SOp::Copy, .. } => "copy".into(),
            KernelSpec::Strided { op: SOp::Unary(u), .. } => format!("{}_g", u.name()),
            KernelSpec::Strided { op: SOp::Binary(o), .. } => format!("{}_g", o.name()),
            KernelSpec::Strided { op: SOp::Select, .. } => "select".into(),
            KernelSpec::Strided { op: SOp::BinaryI32(o), .. } => format!("{}_i32", o.name()),
            KernelSpec::Strided { op: SOp::Cast(to), .. } => format!("cast_{to}"),
            KernelSpec::Concat { .. } => "concat".into(),
            KernelSpec::BatchMatMul { .. } => "batch_matmul".into(),
            KernelSpec::RowOp { op: None, .. } => "softmax_g".into(),
            KernelSpec::RowOp { op: Some(r), .. } => format!("{}_g", r.name()),
        }
    }

    pub fn tasks(&self) -> Tasks {
        match self {
            KernelSpec::MatMulT { n, .. } => Tasks::Static(n.div_ceil(MATMUL_COLS_PER_TASK)),
            KernelSpec::MatMulTI8 { n, quantized_x, .. } => {
                Tasks::Static(n.div_ceil(qdot::cols_per_task(*n, !quantized_x)))
            }
            KernelSpec::MatMulN { n, .. } => Tasks::Static(n.div_ceil(4)),
            KernelSpec::Attention { heads, kv_heads, .. } => {
                Tasks::RowsTimes(heads / attention::heads_per_task(*heads, *kv_heads))
            }
            KernelSpec::Strided { out, .. } => {
                let lead = &out[..out.len().saturating_sub(1)];
                Tasks::Prod(lead.iter().fold(Prod::ONE, |a, &d| Prod { c: a.c * d.c, p: a.p + d.p }))
            }
            KernelSpec::Concat { outer, .. } => Tasks::Prod(*outer),
            KernelSpec::BatchMatMul { batch, m, .. } => {
                Tasks::Prod(batch.iter().fold(*m, |a, &d| Prod { c: a.c * d.c, p: a.p + d.p }))
            }
            KernelSpec::RowOp { rows, .. } => Tasks::Prod(*rows),
            _ => Tasks::Rows,
        }
    }

    /// Emits the kernel body into `b` (whose entry block has params `args, begin, end`).
    pub fn build(&self, b: &mut FunctionBuilder, k: &Kargs) {
        match self {
            KernelSpec::Gather { h, w: Storage::F32, .. } => elementwise::gather(b, k, *h),
            KernelSpec::Gather { h, vocab, w, packed } => quant::gather_q(b, k, *h, *vocab, *w, *packed),
            KernelSpec::MatMulT { k: kk, n, w: Storage::F32, up: Storage::F32, ep } => {
                matmul::matmul_t(b, k, *kk, *n, *ep)
            }
            KernelSpec::MatMulT { k: kk, n, w, up, ep } => quant::matmul_tq(b, k, *kk, *n, [*w, *up], *ep),
            KernelSpec::MatMulTI8 { k: kk, n, w, ep, dot, quantized_x, .. } => {
                qdot::matmul_tq8(b, k, *kk, *n, *w, *dot, *ep, *quantized_x)
            }
            KernelSpec::MatMulN { k: kk, n } => matmul::matmul_n(b, k, *kk, *n),
            KernelSpec::RmsNorm { h, group, eps, to_int8 } => norm::rms_norm(b, k, *h, *group, *eps, *to_int8),
            KernelSpec::LayerNorm { h, eps, to_int8 } => norm::layer_norm(b, k, *h, *eps, *to_int8),
            KernelSpec::Rope { width, head_dim, rotary_dim, interleaved } => {
                rope::rope(b, k, *width, *head_dim, *rotary_dim, *interleaved)
            }
            KernelSpec::CacheWrite { w, kv } => elementwise::cache_write(b, k, *w, *kv),
            KernelSpec::Attention { heads, kv_heads, head_dim, scale, window, kv } => {
                attention::attention(b, k, *heads, *kv_heads, *head_dim, *scale, *window, *kv)
            }
            KernelSpec::Unary { op, cols } => elementwise::unary(b, k, *op, *cols),
            KernelSpec::Binary { op, cols, lhs, rhs } => elementwise::binary(b, k, *op, *cols, *lhs, *rhs),
            KernelSpec::Softmax { cols } => norm::softmax(b, k, *cols),
            KernelSpec::Reduce { op, cols } => norm::reduce(b, k, *op, *cols),
            KernelSpec::Strided { op, out, ins } => general::strided(b, k, *op, out, ins),
            KernelSpec::Concat { a, b: bb, .. } => general::concat(b, k, *a, *bb),
            KernelSpec::BatchMatMul { batch, sa, sb, m, k: kk, n } => {
                general::batch_matmul(b, k, batch, sa, sb, *m, *kk, *n)
            }
            KernelSpec::RowOp { op, cols, .. } => general::row_op(b, k, *op, *cols),
        }
    }
}

/// The kernel's parameters, as values in its entry block.
pub(crate) struct Kargs {
    pub args: Value,
    pub begin: Value,
    pub end: Value,
}

impl Kargs {
    /// Loads u64 slot `i` of the argument block.
    pub fn slot(&self, b: &mut FunctionBuilder, i: u32) -> Value {
        // readonly but not can_move: the load stays in the entry block instead of being
        // re-placed next to (and inside the loops of) its uses.
        b.ins().load(types::I64, MemFlagsData::trusted().with_readonly(), self.args, (i * 8) as i32)
    }
    /// Pointer to operand `i` (or the result, for `i == arity`).
    pub fn ptr(&self, b: &mut FunctionBuilder, i: u32) -> Value {
        self.slot(b, SLOT_PTRS + i)
    }
}

/// The kernel signature: `(args: *const u8, begin: u64, end: u64)`.
pub(crate) fn kernel_signature(cc: CallConv) -> Signature {
    let mut sig = Signature::new(cc);
    for _ in 0..3 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig
}

/// Loads of weights and activations: never written while a kernel runs (see DESIGN.md: without
/// `readonly`/`can_move` the optimizer hoists loads badly and accumulators spill). Not
/// `aligned`: vector loads are only 4-byte aligned.
pub(crate) fn ro() -> MemFlagsData {
    MemFlagsData::new().with_notrap().with_readonly().with_can_move()
}

/// Loads and stores of memory this kernel writes.
pub(crate) fn rw() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Who orders a kernel's instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Schedule {
    /// Cranelift's optimizer (`opt_level=speed`): its egraph places every pure instruction
    /// where it likes (constants and addresses recomputed in loops, loads next to their first
    /// use).
    Optimized,
    /// The builder (`opt_level=none`): instructions run in the order they were built, so a
    /// kernel makes its constants once before its loops, shares values itself, and orders a
    /// tile's loads so its live values fit in registers. The int8 matmul tiles: measured on
    /// the 110M shape at q4s, one thread, their optimized schedule spilled a tile's words and
    /// rebuilt its addresses and masks every block (decode 243 → 276, prefill 303 → 371
    /// tok/s as built). Also the matmuls reading stored weights in f32 (`quant.rs`: f16, bf16,
    /// and int8/int4 with `--activations f32`) and attention (110M, one thread, 1500-token
    /// context: prefill 5.43 → 4.85 s, decode about 10 → 6.4 ms per token).
    AsBuilt,
}

pub(crate) const F32X4: Type = types::F32X4;

/// Small CLIF-building helpers shared by all kernels.
pub(crate) trait Ext {
    fn c64(&mut self, v: i64) -> Value;
    /// `base + idx * scale` (byte address arithmetic on i64).
    fn addr(&mut self, base: Value, idx: Value, scale: i64) -> Value;
    /// `for i in (lo..hi).step_by(step)`, testing at the top (zero iterations when lo >= hi).
    fn for_range(&mut self, lo: Value, hi: Value, step: i64, f: impl FnMut(&mut Self, Value));
    /// Sum of the four lanes.
    fn hsum(&mut self, v: Value) -> Value;
    /// Max of the four lanes.
    fn hmax(&mut self, v: Value) -> Value;
}

impl Ext for FunctionBuilder<'_> {
    fn c64(&mut self, v: i64) -> Value {
        self.ins().iconst(types::I64, v)
    }
    fn addr(&mut self, base: Value, idx: Value, scale: i64) -> Value {
        let off = if scale == 1 { idx } else { self.ins().imul_imm_s(idx, scale) };
        self.ins().iadd(base, off)
    }
    fn for_range(&mut self, lo: Value, hi: Value, step: i64, mut f: impl FnMut(&mut Self, Value)) {
        let header = self.create_block();
        let body = self.create_block();
        let exit = self.create_block();
        self.append_block_param(header, types::I64);
        self.ins().jump(header, &[lo.into()]);
        self.switch_to_block(header);
        let i = self.block_params(header)[0];
        let go = self.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.ins().brif(go, body, &[], exit, &[]);
        self.switch_to_block(body);
        f(self, i);
        let next = self.ins().iadd_imm_s(i, step);
        self.ins().jump(header, &[next.into()]);
        self.switch_to_block(exit);
    }
    fn hsum(&mut self, v: Value) -> Value {
        let l: Vec<Value> = (0..4).map(|i| self.ins().extractlane(v, i)).collect();
        let a = self.ins().fadd(l[0], l[1]);
        let c = self.ins().fadd(l[2], l[3]);
        self.ins().fadd(a, c)
    }
    fn hmax(&mut self, v: Value) -> Value {
        let l: Vec<Value> = (0..4).map(|i| self.ins().extractlane(v, i)).collect();
        let a = crate::math::max_num(self, l[0], l[1], false);
        let c = crate::math::max_num(self, l[2], l[3], false);
        crate::math::max_num(self, a, c, false)
    }
}

/// Visits `n` consecutive f32s (a constant count) as f32x4 chunks in a loop, then the tail as
/// unrolled scalars. `f(b, byte_offset, ty)` gets the chunk's byte offset and `F32X4` or `F32`.
pub(crate) fn each_chunk(b: &mut FunctionBuilder, n: u64, mut f: impl FnMut(&mut FunctionBuilder, Value, Type)) {
    let n4 = n / 4 * 4;
    if n4 > 0 {
        let lo = b.c64(0);
        let hi = b.c64(n4 as i64 * 4);
        b.for_range(lo, hi, 16, |b, off| f(b, off, F32X4));
    }
    for i in n4..n {
        let off = b.c64(i as i64 * 4);
        f(b, off, types::F32);
    }
}

/// Folds `n` f32s with `Sum` or `Max` (vector accumulator, horizontal step, scalar tail).
/// `load(b, byte_offset, ty)` produces each chunk.
pub(crate) fn fold_row(
    b: &mut FunctionBuilder,
    n: u64,
    max: bool,
    mut load: impl FnMut(&mut FunctionBuilder, Value, Type) -> Value,
) -> Value {
    let init = if max { f32::NEG_INFINITY } else { 0.0 };
    let n4 = n / 4 * 4;
    let mut acc = crate::math::fconst(b, types::F32, init);
    if n4 > 0 {
        let accv = b.declare_var(F32X4);
        let z = crate::math::fconst(b, F32X4, init);
        b.def_var(accv, z);
        let lo = b.c64(0);
        let hi = b.c64(n4 as i64 * 4);
        b.for_range(lo, hi, 16, |b, off| {
            let x = load(b, off, F32X4);
            let a = b.use_var(accv);
            let a = if max { crate::math::max_num(b, a, x, false) } else { b.ins().fadd(a, x) };
            b.def_var(accv, a);
        });
        let a = b.use_var(accv);
        acc = if max { b.hmax(a) } else { b.hsum(a) };
    }
    for i in n4..n {
        let off = b.c64(i as i64 * 4);
        let x = load(b, off, types::F32);
        acc = if max { crate::math::max_num(b, acc, x, false) } else { b.ins().fadd(acc, x) };
    }
    acc
}

/// `for t in begin..end` over the kernel's tasks.
pub(crate) fn each_task(b: &mut FunctionBuilder, k: &Kargs, f: impl FnMut(&mut FunctionBuilder, Value)) {
    b.for_range(k.begin, k.end, 1, f);
}
