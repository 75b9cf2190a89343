//! Memory-safety evidence: every fixture's host end-to-end run passes under
//! `valgrind --error-exitcode=1` (memcheck: no invalid read or write, no use of uninitialised
//! values, no bad free), generated code and runtime together, and still matches PyTorch
//! (logits within 1e-3, exactly its 8 greedy ids). Two runs per fixture:
//!
//! - `edgec run DIR` on the compiled directory (the compile itself runs outside valgrind): the
//!   Rust runtime (weights mapped, arena, KV state, a two-thread pool, sampler) calling the
//!   object through a shared library, the prompt fed as one prefill in chunks of 8;
//! - the object linked natively with the C driver (`runtime/c/edgec_driver.c`), token by
//!   token.
//!
//! The x86_64 objects use SSE4.2, AVX, AVX2 and FMA and no AVX-512 (`backend/src/object.rs`,
//! `make_isa_with`), which valgrind 3.19 decodes; an AVX-512 instruction would stop the run
//! with SIGILL (valgrind does not implement it), failing the test rather than passing
//! silently. The C driver is built with `cc`'s default (baseline x86-64) flags.
//!
//! `valgrind_catches_a_bad_read` first shows the harness can fail: a one-byte heap overread
//! must exit 1 with memcheck's "Invalid read".

mod common;
mod compiled;

use common::*;
use compiled::*;
use edgec_runtime::driver_output::parse_driver_output;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn require_valgrind() {
    let found = Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "valgrind is missing: run ./scripts/test, which installs it");
}

/// `valgrind --error-exitcode=1 PROG ARGS`; returns the output after checking memcheck saw
/// no error and the program succeeded.
fn valgrind(what: &str, prog: &Path, args: &[&str]) -> Output {
    let o = Command::new("valgrind")
        .args(["--error-exitcode=1", "--track-origins=yes"])
        .arg(prog)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{what} under valgrind failed ({}):\n{err}", o.status);
    assert!(err.contains("ERROR SUMMARY: 0 errors from 0 contexts"), "{what}: memcheck reported errors:\n{err}");
    o
}

#[test]
fn valgrind_catches_a_bad_read() {
    require_valgrind();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bad.c");
    std::fs::write(
        &src,
        "#include <stdlib.h>\nint main(void) { volatile char *p = malloc(16); int r = p[16]; free((void *)p); return r & 0; }\n",
    )
    .unwrap();
    let exe = dir.path().join("bad");
    let o = Command::new("cc").arg("-O0").arg("-g").arg(&src).arg("-o").arg(&exe).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new("valgrind").args(["--error-exitcode=1", "--track-origins=yes"]).arg(&exe).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Invalid read of size 1"), "{err}");
}

/// The C driver linked with the compiled object (`NAME.o`), natively.
fn build_driver(out: &Path, name: &str) -> PathBuf {
    let rt = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime");
    let exe = out.join("driver");
    let o = Command::new("cc")
        .args(["-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-DEDGEC_MODEL={name}"))
        .arg("-I")
        .arg(rt.join("include"))
        .arg(rt.join("c/edgec_driver.c"))
        .arg(out.join(format!("{name}.o")))
        .arg("-o")
        .arg(&exe)
        .arg("-lm")
        .output()
        .unwrap();
    assert!(o.status.success(), "building the C driver: {}", String::from_utf8_lossy(&o.stderr));
    exe
}

fn fixture_under_valgrind(name: &str) {
    require_valgrind();
    let dir = tempfile::tempdir().unwrap();
    let out = compile_fixture(name, dir.path());
    let r = reference(name);
    let ids: Vec<String> = r.input_ids.iter().map(i64::to_string).collect();
    let ids = ids.join(",");

    // The Rust runtime, in the edgec binary.
    let result = dir.path().join("run.safetensors");
    let edgec = Path::new(env!("CARGO_BIN_EXE_edgec"));
    let args = ["run", out.to_str().unwrap(), "--ids", &ids, "--max-new-tokens", "8", "--threads", "2"];
    valgrind(&format!("{name}: edgec run"), edgec, &[&args[..], &["--output", result.to_str().unwrap()]].concat());
    let got = read_run_output(&result);
    assert_eq!(got.logits_shape, vec![r.input_ids.len(), r.vocab]);
    assert_logits_close(&format!("{name}: edgec run under valgrind"), &got.logits, &r.logits);
    assert_eq!(got.generated_ids, r.greedy_ids, "{name}: edgec run under valgrind: greedy ids differ from PyTorch");

    // The C driver, token by token.
    let exe = build_driver(&out, name);
    let bin = dir.path().join("driver.bin");
    let w = weights_path(&out);
    valgrind(&format!("{name}: C driver"), &exe, &[w.to_str().unwrap(), &ids, "8", "stepwise", bin.to_str().unwrap()]);
    let d = parse_driver_output(&std::fs::read(&bin).unwrap()).unwrap();
    assert_eq!((d.n_prompt as usize, d.vocab as usize), (r.input_ids.len(), r.vocab));
    assert_logits_close(&format!("{name}: C driver under valgrind"), &d.logits, &r.logits);
    let generated: Vec<i64> = d.generated.iter().map(|&t| i64::from(t)).collect();
    assert_eq!(generated, r.greedy_ids, "{name}: C driver under valgrind: greedy ids differ from PyTorch");
}

macro_rules! valgrind_tests {
    ($($name:ident => $fixture:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                fixture_under_valgrind($fixture);
            }
        )*
    };
}

valgrind_tests! {
    llama => "llama",
    llama3 => "llama3",
    qwen2 => "qwen2",
    phi2 => "phi",
    phi3 => "phi3",
    mistral => "mistral",
    qwen3 => "qwen3",
}
