//! int8-activation `matmul` (transpose_b) for int8 and int4 weights (`q8_c`, `q8_gG`,
//! `q4s_gG`, `q4_gG`, G a multiple of 32), on both ISAs and in every CPU variant.
//!
//! Each activation row is quantized on the fly to int8 in blocks of 32 (scale `d_a` = block
//! max |x| / 127, round to nearest). Every 32-element block of a dot product is then an exact
//! integer dot product (`sdot` and `vpdpbusd` sum four products per i32 lane), converted to
//! f32 once and scaled:
//!
//! - `q8`: `Σ w·a`, times `d_a · d_w` (`q8_c`'s per-row scale multiplies the finished sum);
//! - `q4s` (`(q - 8)·d`): `Σ q·a - 8·Σ a`, times `d_a · d_w`;
//! - `q4` (`q·d + m`): `Σ q·a` times `d_a · d_w`, plus `Σ a` times `d_a · m_w`.
//!
//! The activation sums `Σ a` are computed once per row and block when it is quantized.
//! The integer tree (widening multiply + pairwise adds, [`Dot`]) has the weights signed on
//! aarch64 (Cranelift folds it into `sdot` with `has_dotprod`) and unsigned on x86 (folded into
//! `vpdpbusd` with `has_avx_vnni` / `has_avx512vnni`): there int8 weights enter as `w ^ 0x80 =
//! w + 128` and the lanes start from `-128·Σ a`. Nibbles are 0..15 on both. So every lane holds
//! the same integer on every ISA and variant, the float formula is the same, and results are
//! bit-identical everywhere.
//!
//! The weights are packed four output columns at a time (`pack.rs`): a 16-byte load holds one
//! 4-byte word of each of four columns, the matching 4-byte word of activations is splat, and
//! each i32 lane sums one column's block. So a block's integer sum per column is one lane,
//! converted to f32 once and scaled by that column's scale in the same lane: no horizontal
//! sums, and the float work is shared by four columns.
//!
//! Task = a block of [`cols_per_task`] output columns over all rows (like `matmul_tq`): per pair
//! of rows, the rows are quantized into a stack buffer (their code words also stored splat, 16
//! bytes each, for the tiles to load), then tiles of two quads of columns (`pack.rs` stores
//! such pairs of quads interleaved, one stream) run over the task's columns (once per `linear`
//! epilogue pass): 2 rows × 8 columns in prefill, 1 × 8 in decode, each activation word loaded
//! once for both quads. Quantization is repeated per task, so tasks are wide when there are
//! enough of them (one row in decode would otherwise be quantized again for every 16 columns).
//! A norm whose every reader is such a matmul quantizes its rows itself, once (`norm.rs`,
//! [`QRow`]'s layout), and its matmuls (`quantized_x`) read them directly.
//!
//! The kernel is compiled as built ([`Schedule::AsBuilt`](super::Schedule)): its instruction
//! order is the schedule, so constants are made before the loops and each tile's loads come in
//! the order its registers can hold.

use super::epilogue::{Epilogue, MatMulArgs, Pass};
use super::{Ext, F32X4, Kargs, MATMUL_COLS_PER_TASK, SLOT_ROWS, each_task, ro, rw};
use crate::math;
use cranelift_codegen::ir::{
    Endianness, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, condcodes::FloatCC, condcodes::IntCC,
    types,
};
use cranelift_frontend::{FunctionBuilder, Variable};
use edgec_ir::Storage;

/// Elements per activation block.
pub(crate) const BLOCK: u64 = 32;
/// Largest K with an int8 twin: two quantized rows ([`row_bytes`]) and their splat words
/// live on the stack, 11·K bytes (176 KiB at this bound).
pub(crate) const MAX_K: u64 = 16384;

/// The integer dot-product tree of a kernel. All three give the same i32 lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dot {
    /// i8 weights × i8 activations: aarch64 (`sdot` with `has_dotprod`).
    Signed,
    /// u8 weights × i8 activations in VNNI's pattern: x86 variants with `vpdpbusd`.
    Unsigned,
    /// u8 weights × i8 activations for x86 without VNNI: widened to i16 first and multiplied
    /// pairwise, `pmaddwd`'s pattern. Measured against `Unsigned` compiled without VNNI (110M
    /// Llama, q4s): 1539 instead of 2025 instructions per kernel, prefill 57 instead of 48
    /// tokens/s, decode the same within noise.
    UnsignedMadd,
}

/// Whether a stored weight layout and inner dim have the int8-activation kernel.
pub(crate) fn supports(st: Storage, kk: u64) -> bool {
    let grouped = st.group().is_some_and(|g| g.is_multiple_of(BLOCK) && kk.is_multiple_of(g));
    matches!(st, Storage::Q8C | Storage::Q8G { .. } | Storage::Q4G { .. })
        && (st == Storage::Q8C || grouped)
        && kk > 0
        && kk.is_multiple_of(BLOCK)
        && kk <= MAX_K
}

/// Output columns per task: 16 like the other matmuls, wider while enough tasks remain for
/// the threads to share. A task that quantizes its input rows itself (`quantizes`) does so
/// again in every task, so it gets wider tasks (at least 12 of them); one reading rows a norm
/// quantized keeps at least 24. Measured on the 110M shape at q4s, one thread, CPU time: the
/// wider quantizing tasks gave decode +11-15% and prefill +20%.
pub(crate) fn cols_per_task(n: u64, quantizes: bool) -> u64 {
    let (widths, min_tasks): (&[u64], u64) = if quantizes { (&[128, 64, 32], 12) } else { (&[64, 32], 24) };
    widths.iter().copied().find(|&c| n / c >= min_tasks).unwrap_or(MATMUL_COLS_PER_TASK)
}

/// `acc + dot4(a, w)`: per i32 lane, the sum of four i8 (activation) × i8 or u8 (weight)
/// products; exact. `Signed`/`Unsigned` are the trees `sdot`/`vpdpbusd` are matched from.
fn dot4(b: &mut FunctionBuilder, dot: Dot, a: Value, w: Value, acc: Value) -> Value {
    let s = match dot {
        Dot::Signed | Dot::Unsigned => {
            let (wl, wh) = if dot == Dot::Signed {
                (b.ins().swiden_low(w), b.ins().swiden_high(w))
            } else {
                (b.ins().uwiden_low(w), b.ins().uwiden_high(w))
            };
            let al = b.ins().swiden_low(a);
            let ah = b.ins().swiden_high(a);
            let lo = b.ins().imul(al, wl);
            let hi = b.ins().imul(ah, wh);
            let lo_l = b.ins().swiden_low(lo);
            let lo_h = b.ins().swiden_high(lo);
            let hi_l = b.ins().swiden_low(hi);
            let hi_h = b.ins().swiden_high(hi);
            let pl = b.ins().iadd_pairwise(lo_l, lo_h);
            let ph = b.ins().iadd_pairwise(hi_l, hi_h);
            b.ins().iadd_pairwise(pl, ph)
        }
        Dot::UnsignedMadd => {
            // pmaddwd(x, y) = iadd_pairwise(imul(swiden_low x, swiden_low y), imul(high, high)):
            // sums of element pairs; one more pairwise add makes the lanes sums of four.
            let madd = |b: &mut FunctionBuilder, x: Value, y: Value| {
                let xl = b.ins().swiden_low(x);
                let yl = b.ins().swiden_low(y);
                let xh = b.ins().swiden_high(x);
                let yh = b.ins().swiden_high(y);
                let l = b.ins().imul(xl, yl);
                let h = b.ins().imul(xh, yh);
                b.ins().iadd_pairwise(l, h)
            };
            let al = b.ins().swiden_low(a);
            let ah = b.ins().swiden_high(a);
            let wl = b.ins().uwiden_low(w);
            let wh = b.ins().uwiden_high(w);
            let pl = madd(b, al, wl);
            let ph = madd(b, ah, wh);
            b.ins().iadd_pairwise(pl, ph)
        }
    };
    b.ins().iadd(s, acc)
}

/// How a stored layout is read, 32 elements at a time.
#[derive(Clone, Copy)]
struct Layout {
    st: Storage,
    /// Elements per weight scale (`q8_c`: 32, with no header; its scale is per row).
    group: u64,
    /// Bytes per group and row: header (f16 `d`, then f16 `m` for `q4`) and codes.
    group_bytes: i64,
    header: i32,
    /// Code bytes per 32 elements.
    sub_bytes: i32,
}

impl Layout {
    fn of(st: Storage) -> Layout {
        debug_assert!(crate::pack::packable(st));
        let (group, header, sub) = crate::pack::group_shape(st);
        let group_bytes = (header + group / BLOCK * sub) as i64;
        Layout { st, group, group_bytes, header: header as i32, sub_bytes: sub as i32 }
    }
    fn int4(&self) -> bool {
        matches!(self.st, Storage::Q4G { .. })
    }
    fn has_min(&self) -> bool {
        matches!(self.st, Storage::Q4G { min: true, .. })
    }
    /// What the integer lanes of a block start from, as a multiple of `Σ a` (the weight codes'
    /// offset from their signed value).
    fn offset(&self, dot: Dot) -> Option<i64> {
        match self.st {
            Storage::Q4G { min: false, .. } => Some(8),
            Storage::Q8C | Storage::Q8G { .. } if dot != Dot::Signed => Some(128),
            _ => None,
        }
    }
}

/// Bytes of a block record in a quantized row: `d_a` (f32), the lanes' starts `-8·Σ a` and
/// `-128·Σ a` (i32), and `d_a·Σ a` (f32).
pub(crate) const RECORD: u64 = 16;
/// Record field offsets.
const REC_SCALE: i32 = 0;
const REC_DA_SUM: i32 = 12;
fn rec_start(offset: i64) -> i32 {
    if offset == 8 { 4 } else { 8 }
}

/// Bytes of one quantized activation row of `kk` elements: its `kk` int8 codes, then one
/// [`RECORD`] per block of 32. At most 1.5 bytes per element, so a norm's f32 result buffer
/// holds its rows quantized (`norm.rs`, when every reader is an int8-activation matmul).
pub(crate) fn row_bytes(kk: u64) -> u64 {
    kk + kk / BLOCK * RECORD
}

/// One quantized activation row: where its codes and its block records start.
#[derive(Clone, Copy)]
pub(crate) struct QRow {
    codes: Value,
    recs: Value,
}

impl QRow {
    /// Row `row` of quantized rows of `kk` elements starting at `base`.
    pub(crate) fn at(b: &mut FunctionBuilder, base: Value, row: Value, kk: u64) -> QRow {
        let codes = b.addr(base, row, row_bytes(kk) as i64);
        let recs = b.ins().iadd_imm_s(codes, kk as i64);
        QRow { codes, recs }
    }
    fn record(&self, b: &mut FunctionBuilder, blk: Value) -> Value {
        b.addr(self.recs, blk, RECORD as i64)
    }
}
/// The 32 f32 at `p` as eight vectors, and their largest magnitude.
pub(crate) fn load_block(b: &mut FunctionBuilder, p: Value) -> (Vec<Value>, Value) {
    let v: Vec<Value> = (0..8).map(|j| b.ins().load(F32X4, ro(), p, j * 16)).collect();
    let amax = block_amax(b, &v);
    (v, amax)
}

/// The largest magnitude of a block's eight vectors. Compared as integers: a magnitude's bits
/// order like its value, so an unsigned max finds it in a few instructions where float max
/// (NaN-aware on both ISAs) takes a dozen per vector. A NaN's bits are above every number's,
/// so a block holding one gets a NaN scale, and its dot products are NaN.
pub(crate) fn block_amax(b: &mut FunctionBuilder, v: &[Value]) -> Value {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let magnitude = b.ins().iconst(types::I32, 0x7fff_ffff);
    let magnitude = b.ins().splat(types::I32X4, magnitude);
    let mut m: Option<Value> = None;
    for &vj in v {
        let bits = b.ins().bitcast(types::I32X4, le, vj);
        let a = b.ins().band(bits, magnitude);
        m = Some(match m {
            Some(m) => b.ins().umax(m, a),
            None => a,
        });
    }
    let m = m.expect("a block has vectors");
    let l: Vec<Value> = (0..4).map(|i| b.ins().extractlane(m, i)).collect();
    let a = b.ins().umax(l[0], l[1]);
    let c = b.ins().umax(l[2], l[3]);
    let r = b.ins().umax(a, c);
    b.ins().bitcast(types::F32, MemFlagsData::new(), r)
}

/// Quantizes block `blk` (eight vectors `v`, largest magnitude `amax`) into `row`: codes
/// rounded to nearest even at scale `amax / 127`, and the block's record. With `splat`, the
/// block's 4-byte code words are also stored splat (16 bytes each) there.
pub(crate) fn quantize_block(
    b: &mut FunctionBuilder,
    v: &[Value],
    amax: Value,
    row: QRow,
    blk: Value,
    splat: Option<Value>,
) {
    let k127 = math::fconst(b, types::F32, 127.0);
    let d = b.ins().fdiv(amax, k127);
    let inv = b.ins().fdiv(k127, amax);
    let zero = math::fconst(b, types::F32, 0.0);
    let pos = b.ins().fcmp(FloatCC::GreaterThan, amax, zero);
    let inv = b.ins().select(pos, inv, zero);
    let rec = row.record(b, blk);
    b.ins().store(rw(), d, rec, REC_SCALE);
    let invv = b.ins().splat(F32X4, inv);
    // Rounded to nearest even and converted at once: adding 1.5·2^23 leaves `round(y)` in the
    // low mantissa bits (|y| ≤ 127 here), so subtracting the constant's bits gives the integer.
    let magic = math::fconst(b, F32X4, 12_582_912.0);
    let magic_bits = b.ins().iconst(types::I32, 0x4b40_0000);
    let magic_bits = b.ins().splat(types::I32X4, magic_bits);
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let ints: Vec<Value> = v
        .iter()
        .map(|&vj| {
            let y = b.ins().fmul(vj, invv);
            let y = b.ins().fadd(y, magic);
            let y = b.ins().bitcast(types::I32X4, le, y);
            b.ins().isub(y, magic_bits)
        })
        .collect();
    let qp = b.addr(row.codes, blk, BLOCK as i64);
    let mut q8 = [ints[0]; 2];
    for (h, q8h) in q8.iter_mut().enumerate() {
        let a = b.ins().snarrow(ints[4 * h], ints[4 * h + 1]);
        let c = b.ins().snarrow(ints[4 * h + 2], ints[4 * h + 3]);
        *q8h = b.ins().snarrow(a, c);
        b.ins().store(rw(), *q8h, qp, 16 * h as i32);
    }
    if let Some(sp) = splat {
        store_splat(b, q8, sp, blk);
    }
    // `Σ a` of the codes (|y| < 127.5, so the narrowing never saturates and the i32 lanes are
    // the codes).
    let mut t = ints[0];
    for &i in &ints[1..] {
        t = b.ins().iadd(t, i);
    }
    let t = b.ins().iadd_pairwise(t, t);
    let t = b.ins().iadd_pairwise(t, t);
    let t = b.ins().extractlane(t, 0);
    for off in [8, 128] {
        let start = b.ins().imul_imm_s(t, -off);
        b.ins().store(rw(), start, rec, rec_start(off));
    }
    let f = b.ins().fcvt_from_sint(types::F32, t);
    let f = b.ins().fmul(d, f);
    b.ins().store(rw(), f, rec, REC_DA_SUM);
}

/// Stores block `blk`'s code words (`q8`: its two halves) splat at `splat`: each word
/// broadcast by a lane shuffle (`pshufd`, `dup`).
fn store_splat(b: &mut FunctionBuilder, q8: [Value; 2], splat: Value, blk: Value) {
    let sp = b.addr(splat, blk, BLOCK as i64 * 4);
    for (h, &q8h) in q8.iter().enumerate() {
        for j in 0..4u8 {
            let lane: Vec<u8> = (0..16).map(|i| 4 * j + i % 4).collect();
            let mask = b.func.dfg.immediates.push(lane.into());
            let w = b.ins().shuffle(q8h, q8h, mask);
            b.ins().store(rw(), w, sp, 16 * (4 * h + j as usize) as i32);
        }
    }
}

/// Quantizes the `kk` f32 of `x` into `row`, and its code words splat at `splat`.
fn quantize_row(b: &mut FunctionBuilder, x: Value, row: QRow, kk: u64, splat: Value) {
    let lo = b.c64(0);
    let hi = b.c64((kk / BLOCK) as i64);
    b.for_range(lo, hi, 1, |b, blk| {
        let xp = b.addr(x, blk, BLOCK as i64 * 4);
        let (v, amax) = load_block(b, xp);
        quantize_block(b, &v, amax, row, blk, Some(splat));
    });
}

/// Stores the code words of an already quantized `row` splat at `splat`.
fn splat_row(b: &mut FunctionBuilder, row: QRow, kk: u64, splat: Value) {
    let lo = b.c64(0);
    let hi = b.c64((kk / BLOCK) as i64);
    b.for_range(lo, hi, 1, |b, blk| {
        let qp = b.addr(row.codes, blk, BLOCK as i64);
        let q8 = [0, 16].map(|off| b.ins().load(types::I8X16, ro(), qp, off));
        store_splat(b, q8, splat, blk);
    });
}

/// One activation row's values for one 32-element block of a tile.
struct RowBlock {
    /// Byte offset of the block's splat code words from the tile's splat pointer.
    splat_at: i32,
    /// Where the block's integer lanes start (`-offset · Σ a`).
    start: Value,
    /// `d_a`, splat.
    da: Value,
    /// q4 with min: `d_a · Σ a`, splat.
    da_sum: Option<Value>,
}

impl RowBlock {
    /// Word `v` of the block's codes (activations `4v..4v+4`) in every lane: one load (a
    /// broadcast from the codes would take two, since Cranelift folds no load into it here).
    fn word(&self, b: &mut FunctionBuilder, splats: Value, v: usize) -> Value {
        b.ins().load(types::I8X16, ro(), splats, self.splat_at + 16 * v as i32)
    }
}

/// The activation rows a tile reads: `count` consecutive quantized rows, [`row_bytes`] apart
/// from the one whose block records start at `recs`, and their code words splat, `4·kk` bytes
/// apart from `splats`. Read-only while tiles run: `quantize_row`/`splat_row` write them in
/// loops that finish before the tile loops start (or an earlier launch, a norm, did).
struct TileRows {
    recs: Value,
    splats: Value,
    count: usize,
}

/// An `rows × 4·quads` tile: the rows of `rows` against the `quads` packed quads of columns
/// from `col0` of `w` (the weight of `pass`; `col0` a multiple of 4), finished by the
/// epilogue of `a` into output rows `row0..`. Lane `j` of quad `q`'s vectors is column
/// `col0 + 4q + j`. The loop advances three pointers (weights, splat words, block records),
/// so each block costs no address arithmetic beyond three adds.
///
/// int4 high nibbles: a tile of at most two (row, quad) pairs sums them in accumulators of
/// their own (a second dependency chain); x86 then takes them as `16·q` (one `and`: it has
/// no byte shifts) and divides their exact sum by 16. Bigger tiles have the chains already and
/// need the registers, so they shift the nibbles down and add them to the low ones' lanes.
#[allow(clippy::too_many_arguments)]
fn tile(
    b: &mut FunctionBuilder,
    l: Layout,
    dot: Dot,
    rows: &TileRows,
    quads: usize,
    kk: u64,
    a: &MatMulArgs,
    pass: Pass,
    w: Value,
    row0: Value,
    col0: Value,
    n: u64,
) {
    let rt = rows.count;
    let rb = l.st.row_bytes(kk).expect("checked by the layout") as i64;
    let quad = crate::pack::QUAD as i64;
    // Packed groups of the tile's quads alternate (`pack::quad_group_at`).
    let quad_bytes = (quad * l.group_bytes) as i32;
    let group_step = quads as i64 * quad * l.group_bytes;
    let subs = l.group / BLOCK;
    let (row_stride, splat_stride) = (row_bytes(kk) as i32, 4 * kk as i32);
    let own_high = l.int4() && rt * quads <= 2;
    let scaled = own_high && dot != Dot::Signed;
    let zero = math::fconst(b, F32X4, 0.0);
    let acc: Vec<Variable> = (0..rt * quads)
        .map(|_| {
            let v = b.declare_var(F32X4);
            b.def_var(v, zero);
            v
        })
        .collect();
    let splat_var = b.declare_var(types::I64);
    b.def_var(splat_var, rows.splats);
    let rec_var = b.declare_var(types::I64);
    b.def_var(rec_var, rows.recs);
    // Constants made once, before the loop (each use would otherwise rebuild or reload one).
    let half = super::quant::HalfSext::new(b);
    let lo_mask = splat8(b, 0x0f);
    let hi_mask = splat8(b, 0xf0);
    let flip = splat8(b, 0x80);
    let z = b.ins().iconst(types::I32, 0);
    let zero_lanes = b.ins().splat(types::I32X4, z);
    let first = b.addr(w, col0, rb);
    let end = b.ins().iadd_imm_s(first, (kk / l.group) as i64 * group_step);
    b.for_range(first, end, group_step, |b, gp| {
        let splats = b.use_var(splat_var);
        let recs = b.use_var(rec_var);
        // The group's `d` and (q4) `m` of each quad's four columns, one per lane.
        let halves = |b: &mut FunctionBuilder, q: usize, f: u64| {
            let at = q as i32 * quad_bytes + crate::pack::field_at(f, 0) as i32;
            let h = b.ins().sload16x4(ro(), gp, at);
            half.apply(b, h)
        };
        let d: Vec<Option<Value>> = (0..quads).map(|q| (l.header > 0).then(|| halves(b, q, 0))).collect();
        let m: Vec<Option<Value>> = (0..quads).map(|q| l.has_min().then(|| halves(b, q, 1))).collect();
        for s in 0..subs {
            let xq: Vec<RowBlock> = (0..rt)
                .map(|r| {
                    let rec = r as i32 * row_stride + (s * RECORD) as i32;
                    // Record fields are loaded as f32s: one broadcast each.
                    let field = |b: &mut FunctionBuilder, at: i32| {
                        let x = b.ins().load(types::F32, ro(), recs, rec + at);
                        b.ins().splat(F32X4, x)
                    };
                    let da = field(b, REC_SCALE);
                    let le = MemFlagsData::new().with_endianness(Endianness::Little);
                    let start = match l.offset(dot) {
                        Some(off) => {
                            let x = field(b, rec_start(off));
                            b.ins().bitcast(types::I32X4, le, x)
                        }
                        None => zero_lanes,
                    };
                    let da_sum = l.has_min().then(|| field(b, REC_DA_SUM));
                    let splat_at = r as i32 * splat_stride + (s * BLOCK * 4) as i32;
                    RowBlock { splat_at, start, da, da_sum }
                })
                .collect();
            let (header, sub) = (l.header as u64, l.sub_bytes as u64);
            // Lanes per (row, quad), `r * quads + q`.
            let mut lanes: Vec<Value> = xq.iter().flat_map(|x| vec![x.start; quads]).collect();
            let mut high = vec![zero_lanes; rt * quads];
            for v in 0..l.sub_bytes as usize / 4 {
                // Word `v` of each quad's four rows: one vector per quad.
                let wv: Vec<Value> = (0..quads)
                    .map(|q| {
                        let at = q as i32 * quad_bytes + crate::pack::word_at(header, sub, s, v as u64, 0) as i32;
                        b.ins().load(types::I8X16, ro(), gp, at)
                    })
                    .collect();
                if l.int4() {
                    let nibbles: Vec<(Value, Value)> = wv
                        .iter()
                        .map(|&wv| {
                            let wl = b.ins().band(wv, lo_mask);
                            let wh = if scaled { b.ins().band(wv, hi_mask) } else { b.ins().ushr_imm_u(wv, 4) };
                            (wl, wh)
                        })
                        .collect();
                    for (r, x) in xq.iter().enumerate() {
                        let al = x.word(b, splats, v);
                        for (q, &(wl, _)) in nibbles.iter().enumerate() {
                            let i = r * quads + q;
                            lanes[i] = dot4(b, dot, al, wl, lanes[i]);
                        }
                        let ah = x.word(b, splats, v + 4);
                        for (q, &(_, wh)) in nibbles.iter().enumerate() {
                            let i = r * quads + q;
                            if own_high {
                                high[i] = dot4(b, dot, ah, wh, high[i]);
                            } else {
                                lanes[i] = dot4(b, dot, ah, wh, lanes[i]);
                            }
                        }
                    }
                } else {
                    // int8 weights enter x86's unsigned trees as `w + 128`.
                    let w8: Vec<Value> =
                        wv.iter().map(|&wv| if dot == Dot::Signed { wv } else { b.ins().bxor(wv, flip) }).collect();
                    for (r, x) in xq.iter().enumerate() {
                        let a8 = x.word(b, splats, v);
                        for (q, &w8) in w8.iter().enumerate() {
                            let i = r * quads + q;
                            lanes[i] = dot4(b, dot, a8, w8, lanes[i]);
                        }
                    }
                }
            }
            for (r, x) in xq.iter().enumerate() {
                for q in 0..quads {
                    let i = r * quads + q;
                    let t = match (own_high, scaled) {
                        (true, true) => {
                            let h = b.ins().sshr_imm_u(high[i], 4);
                            b.ins().iadd(lanes[i], h)
                        }
                        (true, false) => b.ins().iadd(lanes[i], high[i]),
                        _ => lanes[i],
                    };
                    let f = b.ins().fcvt_from_sint(F32X4, t);
                    let scv = match d[q] {
                        Some(d) => b.ins().fmul(x.da, d),
                        None => x.da,
                    };
                    let mut av = b.use_var(acc[i]);
                    av = b.ins().fma(f, scv, av);
                    if let (Some(m), Some(ds)) = (m[q], x.da_sum) {
                        av = b.ins().fma(m, ds, av);
                    }
                    b.def_var(acc[i], av);
                }
            }
        }
        let next = b.ins().iadd_imm_s(splats, (subs * BLOCK * 4) as i64);
        b.def_var(splat_var, next);
        let next = b.ins().iadd_imm_s(recs, (subs * RECORD) as i64);
        b.def_var(rec_var, next);
    });
    for r in 0..rt {
        let orow = b.ins().iadd_imm_s(row0, r as i64);
        let out = a.at(b, orow, col0);
        for q in 0..quads {
            let mut v = b.use_var(acc[r * quads + q]);
            if l.st == Storage::Q8C {
                let at = Storage::q8c_scales_offset(n, kk).expect("checked by the layout") as i64;
                let scales = b.ins().iadd_imm_s(w, at);
                let p = b.addr(scales, col0, 4);
                let s = b.ins().load(F32X4, ro(), p, 16 * q as i32);
                v = b.ins().fmul(v, s);
            }
            for c in 0..quad as usize {
                let x = b.ins().extractlane(v, c as u8);
                out.store(b, pass, 4 * q + c, x);
            }
        }
    }
}

fn splat8(b: &mut FunctionBuilder, v: i64) -> Value {
    let k = b.ins().iconst(types::I8, v);
    b.ins().splat(types::I8X16, k)
}

/// Lowers `matmul` (transpose_b) with int8 activations; `supports(st, kk)` must hold, `n` be
/// a multiple of 4 and the weights packed (`pack.rs`). With `quantized_x`, `x` holds quantized
/// rows ([`row_bytes`] each, written by a norm) instead of f32 ones.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_tq8(
    b: &mut FunctionBuilder,
    k: &Kargs,
    kk: u64,
    n: u64,
    st: Storage,
    dot: Dot,
    ep: Epilogue,
    quantized_x: bool,
) {
    debug_assert!(supports(st, kk) && n.is_multiple_of(crate::pack::QUAD));
    let l = Layout::of(st);
    let m = k.slot(b, SLOT_ROWS);
    let a = MatMulArgs::load(b, k, ep, n);
    let x = a.x;
    let slot = |b: &mut FunctionBuilder, bytes: u64| {
        let ss = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes.max(16) as u32, 4));
        b.ins().stack_addr(types::I64, ss, 0)
    };
    // Two rows quantized by this task (unless `x` is quantized already), and their code words
    // stored splat: the tiles load each word for each quad of columns, so one load instead of
    // a load and a broadcast pays for the stores (measured on the 110M shape at q4s, one
    // thread: prefill +10%; decode always did this).
    let own = (!quantized_x).then(|| slot(b, 2 * row_bytes(kk)));
    let splat = slot(b, 2 * 4 * kk);
    let m2 = b.ins().band_imm_s(m, !1);
    let cols = cols_per_task(n, !quantized_x) as i64;
    each_task(b, k, |b, t| {
        let c0 = b.ins().imul_imm_s(t, cols);
        let c1 = b.ins().iadd_imm_s(c0, cols);
        let nn = b.c64(n as i64);
        let over = b.ins().icmp(IntCC::SignedGreaterThan, c1, nn);
        let c1 = b.ins().select(over, nn, c1);
        let rows = |b: &mut FunctionBuilder, row: Value, rt: usize| {
            let quantized: Vec<QRow> = (0..rt)
                .map(|r| {
                    let sp = b.ins().iadd_imm_s(splat, (r as u64 * 4 * kk) as i64);
                    let xr = b.ins().iadd_imm_s(row, r as i64);
                    match own {
                        None => {
                            let q = QRow::at(b, x, xr, kk);
                            splat_row(b, q, kk, sp);
                            q
                        }
                        Some(base) => {
                            let ri = b.c64(r as i64);
                            let q = QRow::at(b, base, ri, kk);
                            let xp = b.addr(x, xr, kk as i64 * 4);
                            quantize_row(b, xp, q, kk, sp);
                            q
                        }
                    }
                })
                .collect();
            let tile_rows = TileRows { recs: quantized[0].recs, splats: splat, count: rt };
            // Whole tiles of `TILE_QUADS` quads, then (the last task, `n` not a multiple of 8)
            // the weight's last quad, packed alone. Tasks start at multiples of 8.
            let (quad, quads) = (crate::pack::QUAD as i64, crate::pack::TILE_QUADS as i64);
            let span = b.ins().isub(c1, c0);
            let whole = b.ins().band_imm_s(span, -(quad * quads));
            let c_mid = b.ins().iadd(c0, whole);
            for (pass, w) in a.passes() {
                b.for_range(c0, c_mid, quad * quads, |b, col| {
                    tile(b, l, dot, &tile_rows, quads as usize, kk, &a, pass, w, row, col, n)
                });
                b.for_range(c_mid, c1, quad, |b, col| tile(b, l, dot, &tile_rows, 1, kk, &a, pass, w, row, col, n));
            }
        };
        let zero = b.c64(0);
        b.for_range(zero, m2, 2, |b, row| rows(b, row, 2));
        b.for_range(m2, m, 1, |b, row| rows(b, row, 1));
    });
}
