//! Shared test harness: graph building, a trivial memory planner, compiling + linking + loading
//! an x86_64 object, a context with serial or chunked `parallel_for`, and the reference.
#![allow(dead_code)]

use edgec_backend::{
    CompileOptions, ModelInfo, WeightsLayout, c_header, emit_object, layout_weights, model_info, write_weights,
};
use edgec_ir::interp::{Interpreter, Tensor};
use edgec_ir::{DType, Dim, Graph, Op, Shape, TensorType, ValueRef, WeightSource};
use edgec_passes::plan::{MemoryPlan, Strategy, align_up, lives_outside_arena};
use edgec_runtime::abi::{Context, ForwardFn, KernelFn};
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Test-only planner: every arena node gets its own 64-aligned slot (no reuse).
pub fn test_plan(g: &Graph) -> MemoryPlan {
    let mut offsets = Vec::new();
    let mut sizes = Vec::new();
    let mut at = 0u64;
    for i in 0..g.nodes.len() {
        if lives_outside_arena(g, i) {
            offsets.push(None);
            sizes.push(0);
        } else {
            let sz = align_up(g.max_bytes(&g.nodes[i].ty).unwrap()).unwrap();
            offsets.push(Some(at));
            sizes.push(sz);
            at += sz;
        }
    }
    let mut state_offsets = Vec::new();
    let mut st = 0u64;
    for s in &g.states {
        state_offsets.push(st);
        st += align_up(g.max_bytes(&s.ty).unwrap()).unwrap();
    }
    let in_place = vec![None; g.nodes.len()];
    let strategy = Strategy::FirstFitBySize;
    MemoryPlan {
        offsets,
        sizes,
        arena_size: at,
        state_offsets,
        state_size: st,
        lower_bound: at,
        in_place,
        strategy,
        candidates: vec![],
        // No buffer is reused, so any launch order is safe: fuse what the planner would.
        groups: edgec_passes::dispatch::dispatch_groups(g),
    }
}

/// Deterministic pseudo-random numbers.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407))
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    /// Uniform in [lo, hi).
    pub fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next_u32() as f32 / (1u64 << 31) as f32)
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(lo, hi)).collect()
    }
}

/// Builds decoder-signature graphs.
pub struct GB {
    pub g: Graph,
    pub seq: Dim,
    pub ids: ValueRef,
    pub pos: ValueRef,
    pub rng: Rng,
}

impl GB {
    pub fn new(name: &str, max_tokens: u64, seed: u64) -> GB {
        let mut g = Graph::new(name);
        let seq = g.add_symbol("seq", max_tokens);
        let ids = g.add_input("ids", TensorType::new(DType::I32, Shape(vec![seq])));
        let pos = g.add_input("pos", TensorType::new(DType::I32, Shape(vec![])));
        GB { g, seq, ids, pos, rng: Rng::new(seed) }
    }
    pub fn weight_data(&mut self, name: &str, dims: &[u64], data: Vec<f32>) -> ValueRef {
        assert_eq!(data.len() as u64, dims.iter().product::<u64>());
        self.g.add_weight(name, TensorType::new(DType::F32, Shape::of(dims)), WeightSource::Literal(data))
    }
    /// Random weight uniform in [lo, hi).
    pub fn weight(&mut self, name: &str, dims: &[u64], lo: f32, hi: f32) -> ValueRef {
        let n = dims.iter().product::<u64>() as usize;
        let d = self.rng.vec(n, lo, hi);
        self.weight_data(name, dims, d)
    }
    pub fn rope_tables(&mut self, positions: u64, rotary_dim: u32, theta: f64) -> (ValueRef, ValueRef) {
        let ty = TensorType::new(DType::F32, Shape::of(&[positions, u64::from(rotary_dim / 2)]));
        let mk = |part| WeightSource::Rope { part, theta, rotary_dim, scaling: edgec_ir::RopeScaling::None };
        let c = self.g.add_weight("rope.cos", ty.clone(), mk(edgec_ir::RopePart::Cos));
        let s = self.g.add_weight("rope.sin", ty, mk(edgec_ir::RopePart::Sin));
        (c, s)
    }
    pub fn state(&mut self, name: &str, rows: u64, w: u64) -> ValueRef {
        self.g.add_state(name, TensorType::new(DType::F32, Shape::of(&[rows, w])))
    }
    pub fn node(&mut self, op: Op, args: Vec<ValueRef>) -> ValueRef {
        self.g.add_node(op, args).unwrap_or_else(|e| panic!("building test graph: {e}"))
    }
    pub fn finish(mut self, out: ValueRef) -> Graph {
        self.g.add_output("logits", out);
        self.g
    }
}

/// A 64-aligned, zeroed heap buffer.
pub struct Buf {
    ptr: *mut u8,
    len: usize,
}
impl Buf {
    pub fn zeroed(len: usize) -> Buf {
        let ptr = unsafe { alloc_zeroed(Layout::from_size_align(len.max(64), 64).unwrap()) };
        assert!(!ptr.is_null());
        Buf { ptr, len }
    }
    pub fn from_bytes(b: &[u8]) -> Buf {
        let buf = Buf::zeroed(b.len());
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), buf.ptr, b.len()) };
        buf
    }
    pub fn bytes(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
}
impl Drop for Buf {
    fn drop(&mut self) {
        unsafe { dealloc(self.ptr, Layout::from_size_align(self.len.max(64), 64).unwrap()) }
    }
}

pub struct Model {
    pub dir: tempfile::TempDir,
    pub graph: Graph,
    pub info: ModelInfo,
    pub layout: WeightsLayout,
    pub weights: Buf,
    pub object: Vec<u8>,
    lib: libloading::Library,
    forward: ForwardFn,
}

pub fn x86() -> target_lexicon::Triple {
    "x86_64-unknown-linux-gnu".parse().unwrap()
}
pub fn arm64() -> target_lexicon::Triple {
    "aarch64-unknown-linux-gnu".parse().unwrap()
}

/// Writes the weights file into `dir`; returns layout, hash and the file path.
pub fn weights_file(g: &Graph, dir: &Path) -> (WeightsLayout, [u8; 32], PathBuf) {
    let layout = layout_weights(g, Default::default()).unwrap();
    let path = dir.join("model.weights");
    let mut f = std::fs::File::create(&path).unwrap();
    let hash = write_weights(g, &layout, &mut f).unwrap();
    (layout, hash, path)
}

/// Emits an object for `triple` with symbol prefix `name`.
pub fn object_for(
    g: &Graph,
    name: &str,
    triple: target_lexicon::Triple,
    dir: &Path,
) -> (Vec<u8>, ModelInfo, WeightsLayout) {
    object_with(g, name, triple, dir, |_| {})
}

/// [`object_for`] with options changed by `tweak`.
pub fn object_with(
    g: &Graph,
    name: &str,
    triple: target_lexicon::Triple,
    dir: &Path,
    tweak: impl FnOnce(&mut CompileOptions),
) -> (Vec<u8>, ModelInfo, WeightsLayout) {
    let plan = test_plan(g);
    let (layout, hash, _) = weights_file(g, dir);
    let info = model_info(g, &plan, &layout, hash).unwrap();
    let mut opts = CompileOptions::new(triple, name.to_string());
    tweak(&mut opts);
    let obj = emit_object(g, &plan, &layout, &info, &opts).unwrap_or_else(|e| panic!("emit_object: {e}"));
    std::fs::write(dir.join("model.h"), c_header(g, &info, &opts)).unwrap();
    (obj, info, layout)
}

/// Compiles `g` for x86_64, links a shared object and loads it.
pub fn compile(g: Graph) -> Model {
    compile_with(g, |_| {})
}

/// [`compile`] with options changed by `tweak`.
pub fn compile_with(g: Graph, tweak: impl FnOnce(&mut CompileOptions)) -> Model {
    let dir = tempfile::tempdir().unwrap();
    let (object, info, layout) = object_with(&g, "model", x86(), dir.path(), tweak);
    let o = dir.path().join("model.o");
    std::fs::write(&o, &object).unwrap();
    let so = dir.path().join("model.so");
    let st = Command::new("cc").arg("-shared").arg("-o").arg(&so).arg(&o).status().expect("running cc");
    assert!(st.success(), "linking the object failed");
    let weights = Buf::from_bytes(&std::fs::read(dir.path().join("model.weights")).unwrap());
    assert_eq!(weights.bytes().len() as u64, info.weights_size);
    let lib = unsafe { libloading::Library::new(&so).unwrap() };
    let forward: ForwardFn = unsafe { *lib.get::<ForwardFn>(b"model_forward").unwrap() };
    let exported: ModelInfo = unsafe { **lib.get::<*const ModelInfo>(b"model_info").unwrap() };
    assert_eq!(exported, info, "the exported NAME_info must equal model_info()");
    Model { dir, graph: g, info, layout, weights, object, lib, forward }
}

/// `parallel_for` for tests: `pool` carries the chunk size (0 = one call over everything).
/// Chunks run last-first to prove kernels honour their `[begin, end)` range.
pub unsafe extern "C" fn test_parallel_for(pool: *mut std::ffi::c_void, kernel: KernelFn, args: *const u8, n: u64) {
    let chunk = pool as u64;
    if chunk == 0 {
        unsafe { kernel(args, 0, n) };
        return;
    }
    let mut starts: Vec<u64> = (0..n).step_by(chunk as usize).collect();
    starts.reverse();
    for b in starts {
        unsafe { kernel(args, b, (b + chunk).min(n)) };
    }
}

pub struct Session<'m> {
    pub model: &'m Model,
    pub arena: Buf,
    pub state: Buf,
    pub chunk: u64,
}

impl Model {
    pub fn session(&self, chunk: u64) -> Session<'_> {
        Session {
            model: self,
            arena: Buf::zeroed(self.info.arena_size as usize),
            state: Buf::zeroed(self.info.state_size as usize),
            chunk,
        }
    }
    pub fn forward_raw(&self, ctx: *const Context, ids: *const i32, n: u32, pos: u32, logits: *mut f32) -> i32 {
        unsafe { (self.forward)(ctx, ids, n, pos, logits) }
    }
    pub fn has_symbol(&self, name: &[u8]) -> bool {
        unsafe { self.lib.get::<*const u8>(name).is_ok() }
    }
    /// Another exported entry point (a CPU-feature variant's `model_forward_<variant>`).
    pub fn entry(&self, name: &[u8]) -> Option<ForwardFn> {
        unsafe { self.lib.get::<ForwardFn>(name).ok().map(|f| *f) }
    }
}

impl Session<'_> {
    pub fn context(&self) -> Context {
        Context {
            weights: self.model.weights.ptr(),
            arena: self.arena.ptr(),
            state: self.state.ptr(),
            pool: self.chunk as usize as *mut std::ffi::c_void,
            parallel_for: test_parallel_for,
        }
    }
    /// Runs one forward call; `Err(status)` on a nonzero status.
    pub fn run(&mut self, ids: &[i32], pos: u32) -> Result<Vec<f32>, i32> {
        self.run_entry(self.model.forward, ids, pos)
    }
    /// [`Session::run`] through entry point `f` (see [`Model::entry`]).
    pub fn run_entry(&mut self, f: ForwardFn, ids: &[i32], pos: u32) -> Result<Vec<f32>, i32> {
        let v = self.model.info.vocab as usize;
        let mut logits = vec![f32::NAN; ids.len().max(1) * v];
        let ctx = self.context();
        let st = unsafe { f(&ctx, ids.as_ptr(), ids.len() as u32, pos, logits.as_mut_ptr()) };
        if st != 0 { Err(st) } else { Ok(logits) }
    }
}

/// The reference: the IR interpreter.
pub struct Reference<'g> {
    interp: Interpreter<'g>,
}
impl<'g> Reference<'g> {
    pub fn new(g: &'g Graph) -> Reference<'g> {
        Reference { interp: Interpreter::new(g).unwrap() }
    }
    pub fn run(&mut self, ids: &[i32], pos: u32) -> Vec<f32> {
        let out = self
            .interp
            .run(&[Tensor::i32(vec![ids.len()], ids.to_vec()), Tensor::scalar_i32(pos as i32)])
            .unwrap_or_else(|e| panic!("interpreter: {e}"));
        out[0].as_f32().unwrap().to_vec()
    }
}

/// `|got - want| <= tol · max(1, |want|)` everywhere.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let err = (a - b).abs() / b.abs().max(1.0);
        if err.is_nan() || err > tol {
            panic!("{what}: element {i}: got {a}, want {b} (rel err {err})");
        }
        if err > worst.1 {
            worst = (i, err);
        }
    }
}

/// Compiles `g`, then for each call `(ids, pos)` compares forward against the interpreter,
/// with a serial `parallel_for` and with several chunkings. Returns the logits of each call.
pub fn check_against_reference(g: Graph, calls: &[(Vec<i32>, u32)], tol: f32) -> Vec<Vec<f32>> {
    let model = compile(g);
    let mut all = Vec::new();
    for chunk in [0u64, 1, 3] {
        let mut reference = Reference::new(&model.graph);
        let mut s = model.session(chunk);
        for (c, (ids, pos)) in calls.iter().enumerate() {
            let want = reference.run(ids, *pos);
            let got = s.run(ids, *pos).unwrap_or_else(|st| panic!("call {c}: status {st}"));
            assert_close(&got, &want, tol, &format!("call {c} (chunk {chunk})"));
            if chunk == 0 {
                all.push(got);
            }
        }
    }
    all
}

/// Links `g`'s aarch64 object with `tests/c/run_model.c`, runs the calls under qemu and
/// returns every call's logits, concatenated.
pub fn run_aarch64(g: &Graph, calls: &[(Vec<i32>, u32)]) -> Vec<f32> {
    run_aarch64_with_state(g, calls).0
}

/// [`run_aarch64`], also returning the state block after the last call.
pub fn run_aarch64_with_state(g: &Graph, calls: &[(Vec<i32>, u32)]) -> (Vec<f32>, Vec<u8>) {
    run_aarch64_with(g, calls, |_| {})
}

/// [`run_aarch64_with_state`] with options changed by `tweak`.
pub fn run_aarch64_with(
    g: &Graph,
    calls: &[(Vec<i32>, u32)],
    tweak: impl FnOnce(&mut CompileOptions),
) -> (Vec<f32>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (obj, _, _) = object_with(g, "model", arm64(), dir.path(), tweak);
    let o = dir.path().join("model.o");
    std::fs::write(&o, obj).unwrap();
    let exe = dir.path().join("run_model");
    let c_src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/run_model.c");
    let st = Command::new("aarch64-linux-gnu-gcc")
        .args(["-static", "-O1", "-std=c11", "-Wall", "-Werror", "-I"])
        .arg(dir.path())
        .arg(c_src)
        .arg(&o)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(st.success(), "linking the aarch64 driver failed");
    let out = dir.path().join("logits.bin");
    let args: Vec<String> = calls
        .iter()
        .map(|(ids, pos)| format!("{pos}:{}", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")))
        .collect();
    let state = dir.path().join("state.bin");
    let st = Command::new("qemu-aarch64")
        .env("RUN_MODEL_STATE", &state)
        .arg(&exe)
        .arg(dir.path().join("model.weights"))
        .arg(&out)
        .args(&args)
        .status()
        .unwrap();
    assert!(st.success(), "aarch64 run failed: {st:?}");
    let bytes = std::fs::read(&out).unwrap();
    let logits = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (logits, std::fs::read(&state).unwrap())
}

pub fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

/// A small Llama-style decoder (all the Llama ops), for end-to-end tests.
#[derive(Clone, Copy)]
pub struct LlamaCfg {
    pub vocab: u64,
    pub hidden: u64,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub intermediate: u64,
    pub layers: usize,
    pub max_tokens: u64,
    pub max_context: u64,
    pub window: Option<u32>,
    pub rotary_dim: u32,
}

impl Default for LlamaCfg {
    fn default() -> Self {
        LlamaCfg {
            vocab: 50,
            hidden: 32,
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
            intermediate: 43,
            layers: 2,
            max_tokens: 8,
            max_context: 16,
            window: None,
            rotary_dim: 8,
        }
    }
}

pub fn llama_graph(c: LlamaCfg, seed: u64) -> Graph {
    use edgec_ir::{BinaryOp, UnaryOp};
    let mut b = GB::new("tiny_llama", c.max_tokens, seed);
    let (h, v, i) = (c.hidden, c.vocab, c.intermediate);
    let qw = u64::from(c.heads * c.head_dim);
    let kvw = u64::from(c.kv_heads * c.head_dim);
    let embed = b.weight("embed", &[v, h], -1.0, 1.0);
    let (cos, sin) = b.rope_tables(c.max_context, c.rotary_dim, 10000.0);
    let (ids, pos) = (b.ids, b.pos);
    let mut x = b.node(Op::Gather, vec![embed, ids]);
    let s = |n: u64| 1.0 / (n as f32).sqrt();
    for l in 0..c.layers {
        let ln1 = b.weight(&format!("l{l}.ln1"), &[h], 0.5, 1.5);
        let wq = b.weight(&format!("l{l}.wq"), &[qw, h], -s(h), s(h));
        let wk = b.weight(&format!("l{l}.wk"), &[kvw, h], -s(h), s(h));
        let wv = b.weight(&format!("l{l}.wv"), &[kvw, h], -s(h), s(h));
        let wo = b.weight(&format!("l{l}.wo"), &[h, qw], -s(qw), s(qw));
        let ln2 = b.weight(&format!("l{l}.ln2"), &[h], 0.5, 1.5);
        let wg = b.weight(&format!("l{l}.wg"), &[i, h], -s(h), s(h));
        let wu = b.weight(&format!("l{l}.wu"), &[i, h], -s(h), s(h));
        let wd = b.weight(&format!("l{l}.wd"), &[h, i], -s(i), s(i));
        let kst = b.state(&format!("l{l}.k"), c.max_context, kvw);
        let vst = b.state(&format!("l{l}.v"), c.max_context, kvw);
        let hn = b.node(Op::RmsNorm { eps: 1e-5, group: None }, vec![x, ln1]);
        let q = b.node(Op::MatMul { transpose_b: true }, vec![hn, wq]);
        let k = b.node(Op::MatMul { transpose_b: true }, vec![hn, wk]);
        let vv = b.node(Op::MatMul { transpose_b: true }, vec![hn, wv]);
        let rope = Op::Rope { head_dim: c.head_dim, rotary_dim: c.rotary_dim, interleaved: false };
        let q = b.node(rope.clone(), vec![q, cos, sin, pos]);
        let k = b.node(rope, vec![k, cos, sin, pos]);
        let kc = b.node(Op::CacheWrite, vec![kst, k, pos]);
        let vc = b.node(Op::CacheWrite, vec![vst, vv, pos]);
        let att = Op::Attention {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            window: c.window,
        };
        let a = b.node(att, vec![q, kc, vc, pos]);
        let o = b.node(Op::MatMul { transpose_b: true }, vec![a, wo]);
        x = b.node(Op::Binary(BinaryOp::Add), vec![x, o]);
        let hn = b.node(Op::RmsNorm { eps: 1e-5, group: None }, vec![x, ln2]);
        let gg = b.node(Op::MatMul { transpose_b: true }, vec![hn, wg]);
        let uu = b.node(Op::MatMul { transpose_b: true }, vec![hn, wu]);
        let sg = b.node(Op::Unary(UnaryOp::Silu), vec![gg]);
        let m = b.node(Op::Binary(BinaryOp::Mul), vec![sg, uu]);
        let d = b.node(Op::MatMul { transpose_b: true }, vec![m, wd]);
        x = b.node(Op::Binary(BinaryOp::Add), vec![x, d]);
    }
    let lnf = b.weight("lnf", &[h], 0.5, 1.5);
    let head = b.weight("lm_head", &[v, h], -s(h), s(h));
    let xn = b.node(Op::RmsNorm { eps: 1e-5, group: None }, vec![x, lnf]);
    let logits = b.node(Op::MatMul { transpose_b: true }, vec![xn, head]);
    b.finish(logits)
}

/// Calls that reach every row tile: 7 tokens at position 0, then 1 and 3 more (ids mod `vocab`).
pub fn tile_calls(vocab: i32) -> Vec<(Vec<i32>, u32)> {
    let m = |v: &[i32]| v.iter().map(|&i| i % vocab).collect::<Vec<_>>();
    vec![(m(&[0, vocab - 1, 2, 3, 1, 4, 2]), 0), (m(&[5]), 7), (m(&[1, 2, 6]), 8)]
}

/// A `[rows, cols]` activation table whose rows the int8-activation matmuls quantize without
/// loss: each block of 32 is `d · q` with integer `q` in -127..=127, one of them ±127 (so the
/// block's scale is `d`); a tail shorter than 32 is uniform in [-1, 1). A matmul reading these
/// rows must match the interpreter to f32 rounding with int8 activations too.
pub fn int8_grid(rng: &mut Rng, rows: u64, cols: u64) -> Vec<f32> {
    let mut v = Vec::with_capacity((rows * cols) as usize);
    for _ in 0..rows {
        let blocks = cols / 32;
        for _ in 0..blocks {
            let d = rng.f32(0.5, 1.0) / 127.0;
            let peak = (rng.next_u32() % 32) as usize;
            for i in 0..32 {
                let q = if i == peak { 127.0 } else { rng.f32(-127.0, 127.0).round() };
                let q = if i == peak && rng.next_u32().is_multiple_of(2) { -q } else { q };
                v.push(d * q);
            }
        }
        v.extend(rng.vec((cols - 32 * blocks) as usize, -1.0, 1.0));
    }
    v
}

/// Stores weight `w` as `s` (a trailing `quantize`; nothing for f32).
pub fn quantize(b: &mut GB, w: ValueRef, s: edgec_ir::Storage) {
    let ValueRef::Weight(i) = w else { panic!("not a weight") };
    if s != edgec_ir::Storage::F32 {
        b.g.weights[i as usize].transforms.push(edgec_ir::Transform::Quantize(s));
    }
}
