#![allow(non_camel_case_types)]
//! The C API (declared in `include/edgec_runtime.h`).
//!
//! Every function returns an `int32_t` status: `EDGEC_RT_OK` (0) or a negative `EDGEC_ERR_*`
//! code; only the two error-message accessors return a string. NULL pointers are rejected
//! with `EDGEC_ERR_NULL_ARGUMENT` and never dereferenced. A session's last error message is
//! kept in the session; every failure (before a session exists, or with a NULL or dead
//! session handle included) also goes to a thread-local message read by `edgec_last_error()`.
//! No panic crosses the boundary.
//!
//! Handles: an `edgec_session *` is an opaque token, not the address of anything. A
//! process-wide registry (a `Mutex`ed map) maps each live token to its session; tokens come
//! from a counter and are never reused in a process. A freed (dangling) or made-up handle is
//! therefore recognised by a registry lookup, without reading any memory it points to, and
//! refused with `EDGEC_ERR_INVALID_HANDLE`; a double free is refused the same way. Each
//! session sits behind its own `Mutex`, so two threads calling one session are serialized
//! instead of racing, and a session freed while another thread is inside a call on it lives
//! until that call returns.

use crate::abi::{ForwardFn, ModelInfo};
use crate::error::Error;
use crate::sample::{Sampler, SamplerConfig};
use crate::session::{Model, Session, SessionOptions};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub const EDGEC_RT_OK: i32 = 0;
pub const EDGEC_ERR_NULL_ARGUMENT: i32 = -1;
pub const EDGEC_ERR_INVALID_ARGUMENT: i32 = -2;
pub const EDGEC_ERR_IO: i32 = -3;
pub const EDGEC_ERR_WEIGHTS: i32 = -4;
pub const EDGEC_ERR_MODEL_INFO: i32 = -5;
pub const EDGEC_ERR_TOKEN_ID: i32 = -6;
pub const EDGEC_ERR_CONTEXT_OVERFLOW: i32 = -7;
pub const EDGEC_ERR_MODEL_STATUS: i32 = -8;
pub const EDGEC_ERR_OUT_OF_MEMORY: i32 = -9;
pub const EDGEC_ERR_PANIC: i32 = -10;
pub const EDGEC_ERR_INVALID_HANDLE: i32 = -11;

/// Opaque to C, and never instantiated: an `*mut edgec_session` is a registry token (see the
/// module documentation), never dereferenced.
#[repr(C)]
pub struct edgec_session {
    _opaque: [u8; 0],
}

/// What a live handle stands for.
struct Slot {
    session: Session,
    last_error: CString,
}

type Shared = Arc<Mutex<Slot>>;

/// Live sessions by handle token.
static REGISTRY: Mutex<BTreeMap<usize, Shared>> = Mutex::new(BTreeMap::new());
/// The next handle token is `NEXT_HANDLE * HANDLE_STEP`: never 0, never reused.
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(1);
const HANDLE_STEP: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock is caught at the boundary; the data stays consistent (a
    // map insert/remove, or a session whose call failed), so a poisoned lock is still used.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn register(session: Session) -> *mut edgec_session {
    let token = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed).wrapping_mul(HANDLE_STEP);
    let slot = Arc::new(Mutex::new(Slot { session, last_error: CString::default() }));
    lock(&REGISTRY).insert(token, slot);
    token as *mut edgec_session
}

fn lookup(s: *const edgec_session) -> Option<Shared> {
    lock(&REGISTRY).get(&(s as usize)).cloned()
}

fn dead_handle(s: *const edgec_session) -> String {
    format!("session handle {s:p} is not a live session (already freed, or not from edgec_session_new)")
}

/// Mirrors `edgec_sampler_params` in the header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct edgec_sampler_params {
    /// <= 0: greedy.
    pub temperature: f32,
    /// 0: no limit.
    pub top_k: u32,
    /// In (0, 1]; 1: no limit.
    pub top_p: f32,
    pub reserved: u32,
    pub seed: u64,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn to_cstring(msg: &str) -> CString {
    CString::new(msg.replace('\0', "\\0")).unwrap_or_default()
}

fn set_thread_error(msg: &str) {
    LAST_ERROR.with(|e| *e.borrow_mut() = to_cstring(msg));
}

fn null(what: &str) -> Error {
    Error::InvalidArgument(format!("{what} is NULL"))
}

fn code_of(e: &Error) -> i32 {
    match e {
        Error::InvalidArgument(m) if m.ends_with(" is NULL") => EDGEC_ERR_NULL_ARGUMENT,
        e => e.code(),
    }
}

/// Runs `f` without letting a panic escape; errors go to the thread-local message.
fn guard_global(f: impl FnOnce() -> Result<(), Error>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => EDGEC_RT_OK,
        Ok(Err(e)) => {
            set_thread_error(&e.to_string());
            code_of(&e)
        }
        Err(_) => {
            set_thread_error("internal error: the runtime panicked");
            EDGEC_ERR_PANIC
        }
    }
}

/// Runs `f` on a live session; errors go to the session's message (and the thread's). A NULL
/// handle is `EDGEC_ERR_NULL_ARGUMENT`, a handle not in the registry `EDGEC_ERR_INVALID_HANDLE`
/// (neither is dereferenced; their message goes to the thread only).
fn guard_session(s: *const edgec_session, f: impl FnOnce(&mut Session) -> Result<(), Error>) -> i32 {
    if s.is_null() {
        set_thread_error("session is NULL");
        return EDGEC_ERR_NULL_ARGUMENT;
    }
    let Some(slot) = lookup(s) else {
        set_thread_error(&dead_handle(s));
        return EDGEC_ERR_INVALID_HANDLE;
    };
    let mut slot = lock(&slot);
    let r = catch_unwind(AssertUnwindSafe(|| f(&mut slot.session)));
    let (code, msg) = match r {
        Ok(Ok(())) => return EDGEC_RT_OK,
        Ok(Err(e)) => (code_of(&e), e.to_string()),
        Err(_) => (EDGEC_ERR_PANIC, "internal error: the runtime panicked".to_string()),
    };
    slot.last_error = to_cstring(&msg);
    set_thread_error(&msg);
    code
}

/// Creates a session. `threads` 0 = the default (the fast cores, at most 8); above 1024 is
/// refused with `EDGEC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `info` points to a valid `edgec_model_info` that outlives the session (normally the
/// object's static `<name>_info`); `forward` is that object's entry point; `weights_path` is
/// a NUL-terminated string; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgec_session_new(
    info: *const ModelInfo,
    forward: Option<ForwardFn>,
    weights_path: *const c_char,
    threads: u32,
    out: *mut *mut edgec_session,
) -> i32 {
    guard_global(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { *out = std::ptr::null_mut() };
        if info.is_null() {
            return Err(null("info"));
        }
        let forward = forward.ok_or_else(|| null("forward"))?;
        if weights_path.is_null() {
            return Err(null("weights_path"));
        }
        // SAFETY: NUL-terminated by contract.
        let path = unsafe { CStr::from_ptr(weights_path) };
        #[cfg(unix)]
        let path = {
            use std::os::unix::ffi::OsStrExt;
            PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes()))
        };
        #[cfg(not(unix))]
        let path =
            PathBuf::from(path.to_str().map_err(|_| Error::InvalidArgument("weights_path is not UTF-8".into()))?);
        // SAFETY: lives as long as the session by contract (static in practice).
        let info: &'static ModelInfo = unsafe { &*info };
        let options = SessionOptions { threads: threads as usize, ..Default::default() };
        let session = Session::new(Model { info, forward }, &path, options)?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = register(session) };
        Ok(())
    })
}

/// Creates a session over weights already in memory: the object's embedded `<name>_weights`
/// (`edgec compile --embed-weights`; `size` is `info->weights_size`) or a caller's copy of a
/// weights file. Checked like a file (magic, ABI version, size, content hash); used in place
/// when 64-byte aligned, copied otherwise.
///
/// # Safety
/// As [`edgec_session_new`]; `weights` points to `size` readable bytes that stay valid and
/// unchanged for the session's life (static in practice).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgec_session_new_from_memory(
    info: *const ModelInfo,
    forward: Option<ForwardFn>,
    weights: *const u8,
    size: u64,
    threads: u32,
    out: *mut *mut edgec_session,
) -> i32 {
    guard_global(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked non-NULL, writable by contract.
        unsafe { *out = std::ptr::null_mut() };
        if info.is_null() {
            return Err(null("info"));
        }
        let forward = forward.ok_or_else(|| null("forward"))?;
        if weights.is_null() {
            return Err(null("weights"));
        }
        // A slice may not exceed isize::MAX bytes; no real memory does.
        let len = usize::try_from(size)
            .ok()
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or_else(|| Error::InvalidArgument(format!("weights size {size} does not fit in memory")))?;
        // SAFETY: `size` readable bytes that outlive the session, by contract.
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(weights, len) };
        // SAFETY: lives as long as the session by contract (static in practice).
        let info: &'static ModelInfo = unsafe { &*info };
        let options = SessionOptions { threads: threads as usize, ..Default::default() };
        let session = Session::from_static(Model { info, forward }, bytes, options)?;
        // SAFETY: checked non-NULL above.
        unsafe { *out = register(session) };
        Ok(())
    })
}

/// Frees a session; NULL is accepted and ignored (like `free`). A handle that is not live
/// (freed already: a double free) is refused with `EDGEC_ERR_INVALID_HANDLE`.
///
/// Safe to call with any pointer value: the handle is only looked up, never dereferenced.
#[unsafe(no_mangle)]
pub extern "C" fn edgec_session_free(s: *mut edgec_session) -> i32 {
    if s.is_null() {
        return EDGEC_RT_OK;
    }
    let removed = lock(&REGISTRY).remove(&(s as usize));
    match removed {
        // Dropped outside the registry lock: ending the pool joins its threads. If another
        // thread is inside a call on this session, the session ends when that call returns.
        Some(slot) => match catch_unwind(AssertUnwindSafe(|| drop(slot))) {
            Ok(()) => EDGEC_RT_OK,
            Err(_) => {
                set_thread_error("internal error: the runtime panicked");
                EDGEC_ERR_PANIC
            }
        },
        None => {
            set_thread_error(&dead_handle(s));
            EDGEC_ERR_INVALID_HANDLE
        }
    }
}

/// Runs `n` ids at the current position, writing `n * vocab` logits.
///
/// # Safety
/// `ids` holds `n` values; `logits` has room for `n * vocab` floats (`s` may be any value).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgec_session_forward(
    s: *mut edgec_session,
    ids: *const i32,
    n: u32,
    logits: *mut f32,
) -> i32 {
    guard_session(s, |session| {
        if ids.is_null() {
            return Err(null("ids"));
        }
        if logits.is_null() {
            return Err(null("logits"));
        }
        // SAFETY: n readable ids by contract.
        let ids = unsafe { std::slice::from_raw_parts(ids, n as usize) };
        let ids = ids_to_u32(ids, session.info().vocab)?;
        let mut out = Vec::new();
        session.forward(&ids, &mut out)?;
        // SAFETY: room for n * vocab floats by contract; out has exactly that many.
        unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), logits, out.len()) };
        Ok(())
    })
}

/// The ids as u32; a negative id is out of range like one at or above `vocab`.
fn ids_to_u32(ids: &[i32], vocab: u32) -> Result<Vec<u32>, Error> {
    ids.iter()
        .enumerate()
        .map(|(index, &id)| u32::try_from(id).map_err(|_| Error::TokenOutOfRange { id: i64::from(id), index, vocab }))
        .collect()
}

/// Position 0, state zeroed.
///
/// Safe to call with any handle value (looked up, never dereferenced).
#[unsafe(no_mangle)]
pub extern "C" fn edgec_session_reset(s: *mut edgec_session) -> i32 {
    guard_session(s, |session| {
        session.reset();
        Ok(())
    })
}

/// Writes the current position (tokens in the KV cache) to `*out`.
///
/// # Safety
/// `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgec_session_position(s: *const edgec_session, out: *mut u32) -> i32 {
    guard_session(s, |session| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked, writable by contract.
        unsafe { *out = session.position() };
        Ok(())
    })
}

/// Writes the number of threads running the session's kernels (the caller's included) to
/// `*out`: what `threads` 0 resolved to, or the count asked for.
///
/// # Safety
/// `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgec_session_threads(s: *const edgec_session, out: *mut u32) -> i32 {
    guard_session(s, |session| {
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: checked, writable by contract. At most MAX_THREADS, so it fits.
        unsafe { *out = session.threads() as u32 };
        Ok(())
    })
}

/// Prefills `prompt` (`n_prompt` ids, at least one) and generates up to `max_new_tokens` ids
/// into `out_tokens`, writing how many to `*out_n`. `params` NULL = greedy. `prompt_logits`
/// may be NULL; otherwise it receives `n_prompt * vocab` floats. Generation stops early when
/// the context is full (not an error).
///
/// # Safety
/// Pointers are NULL or valid for the stated sizes (`s` may be any value).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn edgec_session_generate(
    s: *mut edgec_session,
    prompt: *const i32,
    n_prompt: u32,
    max_new_tokens: u32,
    params: *const edgec_sampler_params,
    out_tokens: *mut i32,
    out_n: *mut u32,
    prompt_logits: *mut f32,
) -> i32 {
    guard_session(s, |session| {
        if prompt.is_null() {
            return Err(null("prompt"));
        }
        if out_n.is_null() {
            return Err(null("out_n"));
        }
        if out_tokens.is_null() && max_new_tokens > 0 {
            return Err(null("out_tokens"));
        }
        // SAFETY: writable by contract.
        unsafe { *out_n = 0 };
        let mut sampler = if params.is_null() {
            Sampler::greedy()
        } else {
            // SAFETY: readable by contract.
            let p = unsafe { *params };
            Sampler::new(SamplerConfig {
                temperature: p.temperature,
                top_k: p.top_k as usize,
                top_p: p.top_p,
                seed: p.seed,
            })?
        };
        // SAFETY: n_prompt readable ids by contract.
        let ids = ids_to_u32(unsafe { std::slice::from_raw_parts(prompt, n_prompt as usize) }, session.info().vocab)?;
        let g = session.generate(&ids, max_new_tokens as usize, &mut sampler, |_| true)?;
        for (i, &t) in g.tokens.iter().enumerate() {
            // SAFETY: room for max_new_tokens >= tokens.len() ids by contract.
            unsafe { *out_tokens.add(i) = t as i32 };
        }
        // SAFETY: as above.
        unsafe { *out_n = g.tokens.len() as u32 };
        if !prompt_logits.is_null() {
            // SAFETY: room for n_prompt * vocab floats by contract.
            unsafe { std::ptr::copy_nonoverlapping(g.prompt_logits.as_ptr(), prompt_logits, g.prompt_logits.len()) };
        }
        Ok(())
    })
}

/// The session's last error message ("" if none). Valid until the next call on the session
/// or its free. For a NULL or dead handle, returns the thread's message (`edgec_last_error`),
/// which the failing call on that handle has set.
///
/// Safe to call with any handle value (looked up, never dereferenced).
#[unsafe(no_mangle)]
pub extern "C" fn edgec_session_last_error(s: *const edgec_session) -> *const c_char {
    if s.is_null() {
        return edgec_last_error();
    }
    match lookup(s) {
        // The CString's heap buffer stays put until the session's next failing call replaces
        // it or the session is freed, as documented.
        Some(slot) => lock(&slot).last_error.as_ptr(),
        None => edgec_last_error(),
    }
}

/// The calling thread's last error message ("" if none), for failures before a session
/// exists. Valid until the next failing call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn edgec_last_error() -> *const c_char {
    // The CString lives in the thread-local until replaced; its heap buffer does not move.
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
