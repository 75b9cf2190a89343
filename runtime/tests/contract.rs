//! The runtime's contract with its callers (issue 9, part 4), from C and from Rust: every error
//! path returns its code (C) or `Err` (Rust) with an exact message and changes nothing.
//!
//! - `c_contract_program`: `c/tests/contract.c`, compiled with `cc` against
//!   `include/edgec_runtime.h` and linked with this crate built as a static library, calls every
//!   C API error path (NULL and dead handles, weights files of another hash, size or ABI
//!   version, truncated or padded files, ids >= vocab or negative, context overflow, absurd
//!   thread counts, bad sampler settings, a failing model) and checks codes and messages; run
//!   natively and under valgrind (dead handles are refused without reading freed memory).
//! - The Rust tests below cover the same rules through `Session` and through the C functions
//!   called from Rust, plus thread-count limits, shared weights and per-thread messages.
//!   (`runtime.rs` has the older NULL, header, id and overflow cases; not repeated here.)
mod common;

use common::*;
use edgec_runtime::capi::*;
use edgec_runtime::pool::{MAX_THREADS, ThreadPool, check_threads, default_threads};
use edgec_runtime::*;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// This crate as a C static library, built from the current sources with `rustc` directly
/// (it has no dependencies, so no cargo is needed), and the system libraries it needs.
fn runtime_staticlib(dir: &Path) -> (PathBuf, Vec<String>) {
    let lib = dir.join("libedgec_runtime.a");
    let out = run_ok(
        Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .current_dir(root())
            .args(["--edition", "2024", "--crate-type", "staticlib", "--crate-name", "edgec_runtime"])
            .args(["-C", "debuginfo=1", "--cap-lints", "allow", "--print", "native-static-libs"])
            .arg("src/lib.rs")
            .arg("-o")
            .arg(&lib),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let libs = err
        .lines()
        .find_map(|l| l.split("native-static-libs:").nth(1))
        .unwrap_or_else(|| panic!("rustc printed no native-static-libs: {err}"));
    (lib, libs.split_whitespace().map(str::to_string).collect())
}

/// How many checks contract.c makes; a run that stops early or skips a group fails.
const C_CHECKS: usize = 130;

#[test]
fn c_contract_program() {
    assert!(on_path("cc"), "no cc on PATH: the C contract test needs a C compiler");
    let dir = tempfile::tempdir().unwrap();
    let (lib, native) = runtime_staticlib(dir.path());
    let inc = root().join("include");
    let exe = dir.path().join("contract");
    run_ok(
        Command::new("cc")
            .args(["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-pedantic", "-Werror"])
            .arg("-I")
            .arg(&inc)
            .arg(root().join("c/tests/contract.c"))
            .arg(root().join("c/tests/fake_model.c"))
            .arg(&lib)
            .args(&native)
            .arg("-o")
            .arg(&exe),
    );
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let want = format!("contract.c: {C_CHECKS} checks passed\n");
    let out = Command::new(&exe).arg(&scratch).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout == want,
        "contract.c failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Under valgrind, no invalid read or write anywhere, dead handles included, and no
    // definite leak (freed sessions are really freed).
    if !on_path("valgrind") {
        println!("note: valgrind not on PATH (scripts/test installs it): skipping the valgrind run");
        return;
    }
    let out = Command::new("valgrind")
        .args(["--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite", "-q"])
        .arg(&exe)
        .arg(&scratch)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout == want,
        "contract.c under valgrind (exit {:?}):\n{stdout}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------- Rust API ----------

#[test]
fn thread_counts_zero_means_default_and_absurd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "w", &weights_bytes());
    let open = |threads: usize| Session::new(model(), &p, SessionOptions { threads, ..Default::default() });
    assert_eq!(open(0).unwrap().threads(), default_threads());
    assert!((1..=edgec_runtime::pool::MAX_AUTO_THREADS).contains(&default_threads()));
    assert_eq!(open(3).unwrap().threads(), 3);
    for n in [MAX_THREADS + 1, u32::MAX as usize, usize::MAX] {
        let e = open(n).err().expect("refused");
        assert_eq!(
            e.to_string(),
            format!(
                "invalid argument: {n} threads is more than the limit of 1024 (0 = the default: the fast cores, at most 8)"
            )
        );
        assert_eq!(e.code(), EDGEC_ERR_INVALID_ARGUMENT);
    }
    // The limit itself is accepted (not started here: 1024 threads); the pool refuses, not caps.
    assert_eq!(check_threads(MAX_THREADS), Ok(()));
    let e = ThreadPool::new(MAX_THREADS + 1).err().expect("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    // The thread count is checked before the weights: a bad count and a bad file name the count.
    let e = Session::new(model(), Path::new("/nonexistent"), SessionOptions { threads: 5000, ..Default::default() });
    assert!(e.err().unwrap().to_string().contains("5000 threads"));
    // Embedded weights obey the same rule.
    let w: &'static [u8] = Box::leak(weights_bytes().into_boxed_slice());
    let e = Session::from_static(model(), w, SessionOptions { threads: 2000, ..Default::default() }).err().unwrap();
    assert!(matches!(e, Error::InvalidArgument(ref m) if m.starts_with("2000 threads")), "{e}");
}

#[test]
fn sessions_share_weights_and_run_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "w", &weights_bytes());
    let weights = Arc::new(Weights::open(&p, &INFO).unwrap());
    let opts = SessionOptions { threads: 2, ..Default::default() };
    let a = Session::with_shared_weights(model(), weights.clone(), opts).unwrap();
    let b = Session::with_shared_weights(model(), a.shared_weights().clone(), opts).unwrap();
    assert_eq!(a.weights().as_ptr(), b.weights().as_ptr(), "one mapping");
    assert_eq!(Arc::strong_count(&weights), 3);
    // Each session has its own KV state and position: different sequences at the same time.
    let seqs: [Vec<u32>; 2] =
        [(0..40).map(|i| (i * 7 + 3) % VOCAB).collect(), (0..50).map(|i| (i * 11 + 1) % VOCAB).collect()];
    std::thread::scope(|scope| {
        for (mut s, seq) in [(a, &seqs[0]), (b, &seqs[1])] {
            scope.spawn(move || {
                for _round in 0..20 {
                    s.reset();
                    let mut all = Vec::new();
                    let mut l = Vec::new();
                    for chunk in seq.chunks(3) {
                        s.forward(chunk, &mut l).unwrap();
                        all.extend_from_slice(&l);
                    }
                    assert_eq!(all, expected_logits(seq));
                    assert_eq!(s.position(), seq.len() as u32);
                }
            });
        }
    });
    assert_eq!(Arc::strong_count(&weights), 1, "the sessions released the weights");

    // Weights opened for another build are refused, as a file would be.
    static OTHER: edgec_runtime::abi::ModelInfo = edgec_runtime::abi::ModelInfo { content_hash: [9; 32], ..INFO };
    let e = Session::with_shared_weights(Model { info: &OTHER, forward: fake_forward }, weights.clone(), opts)
        .err()
        .unwrap();
    assert!(matches!(e, Error::Weights { .. }) && e.to_string().contains("content hash"), "{e}");
    static BIGGER: edgec_runtime::abi::ModelInfo = edgec_runtime::abi::ModelInfo { weights_size: 192, ..INFO };
    let e = Session::with_shared_weights(Model { info: &BIGGER, forward: fake_forward }, weights, opts).err().unwrap();
    assert!(
        e.to_string().ends_with("file is 128 bytes but the model was compiled with a 192-byte weights file"),
        "{e}"
    );
}

// ---------- C API, called from Rust ----------

fn new_session(path: &CString, threads: u32) -> *mut edgec_session {
    let mut s = std::ptr::null_mut();
    let f: edgec_runtime::abi::ForwardFn = fake_forward;
    assert_eq!(unsafe { edgec_session_new(&INFO, Some(f), path.as_ptr(), threads, &mut s) }, EDGEC_RT_OK);
    assert!(!s.is_null());
    s
}

fn weights_path(dir: &Path) -> CString {
    CString::new(write_file(dir, "w", &weights_bytes()).to_str().unwrap()).unwrap()
}

#[test]
fn c_api_dead_handles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(dir.path());
    let s = new_session(&path, 2);
    let ids = [1i32, 2, 3];
    let mut logits = vec![0f32; 3 * VOCAB as usize];
    let mut n = 0u32;
    unsafe {
        assert_eq!(edgec_session_forward(s, ids.as_ptr(), 3, logits.as_mut_ptr()), EDGEC_RT_OK);
        assert_eq!(edgec_session_free(s), EDGEC_RT_OK);
        let want = format!("session handle {s:p} is not a live session (already freed, or not from edgec_session_new)");
        assert_eq!(edgec_session_forward(s, ids.as_ptr(), 3, logits.as_mut_ptr()), EDGEC_ERR_INVALID_HANDLE);
        assert_eq!(c_str(edgec_last_error()), want);
        assert_eq!(c_str(edgec_session_last_error(s)), want);
        assert_eq!(edgec_session_position(s, &mut n), EDGEC_ERR_INVALID_HANDLE);
        assert_eq!(edgec_session_threads(s, &mut n), EDGEC_ERR_INVALID_HANDLE);
        assert_eq!(edgec_session_reset(s), EDGEC_ERR_INVALID_HANDLE);
        let mut out = [0i32; 2];
        let g = edgec_session_generate(
            s,
            ids.as_ptr(),
            3,
            2,
            std::ptr::null(),
            out.as_mut_ptr(),
            &mut n,
            std::ptr::null_mut(),
        );
        assert_eq!(g, EDGEC_ERR_INVALID_HANDLE);
        assert_eq!(edgec_session_free(s), EDGEC_ERR_INVALID_HANDLE, "double free");
        assert_eq!(c_str(edgec_last_error()), want);
        // Handles are not reused: a new session does not revive the old handle.
        let t = new_session(&path, 1);
        assert_ne!(t, s);
        assert_eq!(edgec_session_reset(s), EDGEC_ERR_INVALID_HANDLE);
        assert_eq!(edgec_session_forward(t, ids.as_ptr(), 3, logits.as_mut_ptr()), EDGEC_RT_OK);
        assert_eq!(logits, expected_logits(&[1, 2, 3]));
        // A made-up handle (here the address of a live Rust value) is never dereferenced.
        let decoy = [0xABu8; 64];
        let fake = decoy.as_ptr() as *mut edgec_session;
        assert_eq!(edgec_session_reset(fake), EDGEC_ERR_INVALID_HANDLE);
        assert_eq!(edgec_session_free(fake), EDGEC_ERR_INVALID_HANDLE);
        assert_eq!(decoy, [0xAB; 64]);
        assert_eq!(edgec_session_free(t), EDGEC_RT_OK);
    }
}

#[test]
fn c_api_errors_before_a_session_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(dir.path());
    let f: edgec_runtime::abi::ForwardFn = fake_forward;
    unsafe {
        let mut s = std::ptr::dangling_mut::<edgec_session>(); // garbage: reset to NULL on failure
        assert_eq!(edgec_session_new(&INFO, Some(f), path.as_ptr(), 1025, &mut s), EDGEC_ERR_INVALID_ARGUMENT);
        assert!(s.is_null());
        assert_eq!(
            c_str(edgec_last_error()),
            "invalid argument: 1025 threads is more than the limit of 1024 (0 = the default: the fast cores, at most 8)"
        );
        let w = weights_bytes();
        let e = edgec_session_new_from_memory(&INFO, Some(f), w.as_ptr(), w.len() as u64, u32::MAX, &mut s);
        assert_eq!(e, EDGEC_ERR_INVALID_ARGUMENT);
        assert!(c_str(edgec_last_error()).starts_with("invalid argument: 4294967295 threads"));
        // 0 resolves to the default; the session says how many it runs.
        let s = new_session(&path, 0);
        let mut n = 0u32;
        assert_eq!(edgec_session_threads(s, &mut n), EDGEC_RT_OK);
        assert_eq!(n as usize, default_threads());
        // Negative ids are out of range like ids >= vocab (EDGEC_ERR_TOKEN_ID).
        let mut logits = vec![0f32; 2 * VOCAB as usize];
        assert_eq!(edgec_session_forward(s, [4, i32::MIN].as_ptr(), 2, logits.as_mut_ptr()), EDGEC_ERR_TOKEN_ID);
        assert_eq!(c_str(edgec_session_last_error(s)), "token id -2147483648 at index 1 is out of range (vocab 37)");
        assert_eq!(edgec_session_free(s), EDGEC_RT_OK);
    }
}

#[test]
fn c_api_messages_are_per_thread_and_per_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(dir.path());
    let a = new_session(&path, 1) as usize;
    let b = new_session(&path, 1) as usize;
    std::thread::scope(|scope| {
        let t1 = scope.spawn(|| unsafe {
            let mut l = vec![0f32; VOCAB as usize];
            assert_eq!(edgec_session_forward(a as *mut _, [40].as_ptr(), 1, l.as_mut_ptr()), EDGEC_ERR_TOKEN_ID);
            c_str(edgec_last_error())
        });
        let m1 = t1.join().unwrap();
        assert_eq!(m1, "token id 40 at index 0 is out of range (vocab 37)");
        // A fresh thread has no message; session a keeps its own.
        let t2 = scope.spawn(|| {
            let fresh = c_str(edgec_last_error());
            assert_eq!(edgec_session_reset(b as *mut _), EDGEC_RT_OK);
            (fresh, c_str(edgec_session_last_error(a as *mut _)), c_str(edgec_session_last_error(b as *mut _)))
        });
        let (fresh, ma, mb) = t2.join().unwrap();
        assert_eq!((fresh.as_str(), ma.as_str(), mb.as_str()), ("", m1.as_str(), ""));
    });
    assert_eq!(edgec_session_free(a as *mut _), EDGEC_RT_OK);
    assert_eq!(edgec_session_free(b as *mut _), EDGEC_RT_OK);
}

#[test]
fn c_api_one_session_from_two_threads_is_serialized() {
    // Not a recommended use, but not undefined behaviour either: calls on one handle take
    // turns, so every one-token call lands at its own position.
    let dir = tempfile::tempdir().unwrap();
    let path = weights_path(dir.path());
    let s = new_session(&path, 2) as usize;
    std::thread::scope(|scope| {
        for t in 0..2 {
            scope.spawn(move || {
                let mut l = vec![0f32; VOCAB as usize];
                for i in 0..30 {
                    let id = [(t * 30 + i) % VOCAB as i32];
                    assert_eq!(
                        unsafe { edgec_session_forward(s as *mut _, id.as_ptr(), 1, l.as_mut_ptr()) },
                        EDGEC_RT_OK
                    );
                }
            });
        }
    });
    let mut pos = 0;
    assert_eq!(unsafe { edgec_session_position(s as *mut _, &mut pos) }, EDGEC_RT_OK);
    assert_eq!(pos, 60);
    assert_eq!(edgec_session_free(s as *mut _), EDGEC_RT_OK);
}
