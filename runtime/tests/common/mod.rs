//! A fake compiled model (the same logic as runtime/c/tests/fake_model.c) and weights files.
#![allow(dead_code)]

use edgec_runtime::abi::{self, ABI_VERSION, Context, ModelInfo, WEIGHTS_MAGIC, WeightsHeader};
use edgec_runtime::{Model, Session, SessionOptions};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

pub const VOCAB: u32 = 37;
pub const MAX_TOKENS: u32 = 4;
pub const MAX_CONTEXT: u32 = 64;
pub const WEIGHTS_SIZE: u64 = 128;
pub const SALT: u32 = 5;

pub fn hash() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

pub static INFO: ModelInfo = ModelInfo {
    abi_version: ABI_VERSION,
    vocab: VOCAB,
    max_tokens: MAX_TOKENS,
    max_context: MAX_CONTEXT,
    arena_size: 256,
    state_size: MAX_CONTEXT as u64 * 4,
    weights_size: WEIGHTS_SIZE,
    content_hash: [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29,
        30, 31,
    ],
};

thread_local! {
    /// (pos, n_tokens) of every call of `fake_forward` on this thread.
    pub static CALLS: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
}

pub fn take_calls() -> Vec<(u32, u32)> {
    CALLS.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

#[repr(C)]
struct RowArgs {
    id: u32,
    pos: u32,
    target: u32,
    row: *mut f32,
}

unsafe extern "C" fn row_kernel(args: *const u8, begin: u64, end: u64) {
    let a = unsafe { &*(args as *const RowArgs) };
    for j in begin..end {
        let v =
            if j as u32 == a.target { 10.0 } else { ((a.id * 31 + a.pos * 17 + j as u32 * 13) % 101) as f32 / 101.0 };
        unsafe { *a.row.add(j as usize) = v };
    }
}

/// The expected logits row for `id` at `pos` after `prev` (sum of earlier ids).
pub fn expected_row(id: u32, pos: u32, prev: u32) -> Vec<f32> {
    let target = (id * 7 + pos * 3 + prev + SALT) % VOCAB;
    (0..VOCAB).map(|j| if j == target { 10.0 } else { ((id * 31 + pos * 17 + j * 13) % 101) as f32 / 101.0 }).collect()
}

/// Logits for a whole sequence run from position 0.
pub fn expected_logits(ids: &[u32]) -> Vec<f32> {
    let mut prev = 0;
    let mut out = Vec::new();
    for (p, &id) in ids.iter().enumerate() {
        out.extend(expected_row(id, p as u32, prev));
        prev += id;
    }
    out
}

/// Greedy continuation computed directly from the formula.
pub fn expected_greedy(prompt: &[u32], n: usize) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let p = seq.len() as u32 - 1;
        let prev: u32 = seq[..seq.len() - 1].iter().sum();
        let id = *seq.last().unwrap();
        let t = (id * 7 + p * 3 + prev + SALT) % VOCAB;
        out.push(t);
        seq.push(t);
    }
    out
}

pub unsafe extern "C" fn fake_forward(
    ctx: *const Context,
    ids: *const i32,
    n_tokens: u32,
    pos: u32,
    logits: *mut f32,
) -> i32 {
    CALLS.with(|c| c.borrow_mut().push((pos, n_tokens)));
    if ctx.is_null() || ids.is_null() || logits.is_null() {
        return abi::STATUS_NULL_ARGUMENT;
    }
    if n_tokens == 0 || n_tokens > MAX_TOKENS {
        return abi::STATUS_BAD_TOKEN_COUNT;
    }
    if pos as u64 + n_tokens as u64 > MAX_CONTEXT as u64 {
        return abi::STATUS_CONTEXT_OVERFLOW;
    }
    let ctx = unsafe { &*ctx };
    let ids = unsafe { std::slice::from_raw_parts(ids, n_tokens as usize) };
    if ids.iter().any(|&i| i < 0 || i as u32 >= VOCAB) {
        return abi::STATUS_BAD_TOKEN_ID;
    }
    if !(ctx.weights as usize | ctx.arena as usize | ctx.state as usize).is_multiple_of(64) {
        return 99;
    }
    let salt = unsafe { u32::from_le_bytes(*(ctx.weights.add(64) as *const [u8; 4])) };
    unsafe { std::ptr::write_bytes(ctx.arena, 0xAA, 256) };
    let state = ctx.state as *mut i32;
    for (t, &id) in ids.iter().enumerate() {
        let p = pos + t as u32;
        let prev: u32 = (0..p).map(|k| unsafe { *state.add(k as usize) } as u32).sum();
        unsafe { *state.add(p as usize) = id };
        let id = id as u32;
        let a = RowArgs {
            id,
            pos: p,
            target: (id * 7 + p * 3 + prev + salt) % VOCAB,
            row: unsafe { logits.add(t * VOCAB as usize) },
        };
        unsafe { (ctx.parallel_for)(ctx.pool, row_kernel, &a as *const RowArgs as *const u8, VOCAB as u64) };
    }
    abi::STATUS_OK
}

pub unsafe extern "C" fn failing_forward(_: *const Context, _: *const i32, _: u32, _: u32, _: *mut f32) -> i32 {
    7
}

pub fn model() -> Model {
    Model { info: &INFO, forward: fake_forward }
}

/// The bytes of a valid weights file for [`INFO`].
pub fn weights_bytes() -> Vec<u8> {
    let h = WeightsHeader {
        magic: WEIGHTS_MAGIC,
        abi_version: ABI_VERSION,
        header_size: 64,
        content_hash: hash(),
        file_size: WEIGHTS_SIZE,
        reserved: 0,
    };
    let mut b = h.to_bytes().to_vec();
    b.resize(WEIGHTS_SIZE as usize, 0);
    b[64..68].copy_from_slice(&SALT.to_le_bytes());
    b
}

pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

pub fn session(dir: &Path, threads: usize) -> Session {
    let p = write_file(dir, "fake.weights", &weights_bytes());
    Session::new(model(), &p, SessionOptions { threads, ..Default::default() }).unwrap()
}

/// The runtime crate's directory.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `tool --version` runs.
pub fn on_path(tool: &str) -> bool {
    std::process::Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Runs `cmd`, failing the test with its output if it fails.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A C string returned by the C API (never NULL).
pub fn c_str(p: *const std::ffi::c_char) -> String {
    assert!(!p.is_null());
    unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
