//! Tests that need a C compiler: the C header mirrors abi.rs, and the C driver runs the C fake
//! model (host `cc`, and aarch64 under qemu when available) with the same results as the Rust
//! runtime on the Rust fake.
mod common;

use common::*;
use edgec_runtime::abi::{self, Context, ModelInfo, WeightsHeader};
use edgec_runtime::driver_output::{DriverOutput, parse_driver_output};
use edgec_runtime::{Sampler, Session, SessionOptions};
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn c_header_matches_abi_rs() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = String::from("#include <stddef.h>\n#include \"edgec_runtime.h\"\n");
    let mut check = |expr: String| {
        c += &format!("_Static_assert({expr}, \"{}\");\n", expr.replace('"', "'"));
    };
    macro_rules! fields {
        ($rs:ty, $c:literal, [$($f:ident),*]) => {
            check(format!("sizeof({}) == {}", $c, size_of::<$rs>()));
            check(format!("_Alignof({}) == {}", $c, std::mem::align_of::<$rs>()));
            $( check(format!("offsetof({}, {}) == {}", $c, stringify!($f), offset_of!($rs, $f)));
               check(format!("sizeof((({}*)0)->{}) == {}", $c, stringify!($f), {
                   fn sz<T, F>(_: impl Fn(&T) -> &F) -> usize { size_of::<F>() }
                   sz(|x: &$rs| &x.$f)
               })); )*
        };
    }
    fields!(Context, "edgec_context", [weights, arena, state, pool, parallel_for]);
    fields!(
        ModelInfo,
        "edgec_model_info",
        [abi_version, vocab, max_tokens, max_context, arena_size, state_size, weights_size, content_hash]
    );
    fields!(
        WeightsHeader,
        "edgec_weights_header",
        [magic, abi_version, header_size, content_hash, file_size, reserved]
    );
    fields!(
        edgec_runtime::capi::edgec_sampler_params,
        "edgec_sampler_params",
        [temperature, top_k, top_p, reserved, seed]
    );
    check(format!("EDGEC_ABI_VERSION == {}", abi::ABI_VERSION));
    check(format!("EDGEC_ALIGN == {}", abi::ALIGN));
    check(format!("EDGEC_WEIGHTS_HEADER_SIZE == {}", abi::WEIGHTS_HEADER_SIZE));
    check(format!("sizeof(EDGEC_WEIGHTS_MAGIC) == {}", abi::WEIGHTS_MAGIC.len()));
    for (name, v) in [
        ("EDGEC_STATUS_OK", abi::STATUS_OK),
        ("EDGEC_STATUS_BAD_TOKEN_COUNT", abi::STATUS_BAD_TOKEN_COUNT),
        ("EDGEC_STATUS_CONTEXT_OVERFLOW", abi::STATUS_CONTEXT_OVERFLOW),
        ("EDGEC_STATUS_BAD_TOKEN_ID", abi::STATUS_BAD_TOKEN_ID),
        ("EDGEC_STATUS_NULL_ARGUMENT", abi::STATUS_NULL_ARGUMENT),
    ] {
        check(format!("{name} == {v}"));
    }
    use edgec_runtime::capi::*;
    for (name, v) in [
        ("EDGEC_RT_OK", EDGEC_RT_OK),
        ("EDGEC_ERR_NULL_ARGUMENT", EDGEC_ERR_NULL_ARGUMENT),
        ("EDGEC_ERR_INVALID_ARGUMENT", EDGEC_ERR_INVALID_ARGUMENT),
        ("EDGEC_ERR_IO", EDGEC_ERR_IO),
        ("EDGEC_ERR_WEIGHTS", EDGEC_ERR_WEIGHTS),
        ("EDGEC_ERR_MODEL_INFO", EDGEC_ERR_MODEL_INFO),
        ("EDGEC_ERR_TOKEN_ID", EDGEC_ERR_TOKEN_ID),
        ("EDGEC_ERR_CONTEXT_OVERFLOW", EDGEC_ERR_CONTEXT_OVERFLOW),
        ("EDGEC_ERR_MODEL_STATUS", EDGEC_ERR_MODEL_STATUS),
        ("EDGEC_ERR_OUT_OF_MEMORY", EDGEC_ERR_OUT_OF_MEMORY),
        ("EDGEC_ERR_PANIC", EDGEC_ERR_PANIC),
        ("EDGEC_ERR_INVALID_HANDLE", EDGEC_ERR_INVALID_HANDLE),
    ] {
        check(format!("{name} == {v}"));
    }
    // The forward and kernel typedefs have the ABI's shapes (a mismatch is a compile error).
    c += "static int32_t f(const edgec_context *c, const int32_t *i, uint32_t n, uint32_t p, float *l)\n\
          { (void)c; (void)i; (void)n; (void)p; (void)l; return 0; }\n\
          edgec_forward_fn check_forward = f;\n";
    // The C API's prototypes agree with capi.rs' symbols' shapes as far as C can tell.
    c += "int32_t (*check_new)(const edgec_model_info *, edgec_forward_fn, const char *, uint32_t, edgec_session **) = edgec_session_new;\n";
    let src = dir.path().join("abi_check.c");
    std::fs::write(&src, &c).unwrap();
    let inc = root().join("include");
    for std in ["-std=c11", "-std=c++11"] {
        let mut cmd = Command::new("cc");
        if std == "-std=c++11" {
            // C++ as well: the header's extern "C" guards; _Static_assert is static_assert there.
            let cpp = dir.path().join("abi_check.cpp");
            std::fs::write(&cpp, c.replace("_Static_assert", "static_assert").replace("_Alignof", "alignof")).unwrap();
            if !on_path("c++") {
                println!("note: no c++ on PATH, skipping the C++ header check");
                continue;
            }
            cmd = Command::new("c++");
            cmd.arg(std).arg("-I").arg(&inc).args(["-Wall", "-Wextra", "-Werror", "-c", "-o"]);
            cmd.arg(dir.path().join("abi_cpp.o")).arg(&cpp);
        } else {
            cmd.arg(std).arg("-I").arg(&inc).args(["-Wall", "-Wextra", "-pedantic", "-Werror", "-c", "-o"]);
            cmd.arg(dir.path().join("abi.o")).arg(&src);
        }
        run_ok(&mut cmd);
    }
}

/// Weights, the Rust runtime's answer (prompt logits, greedy tokens) for the same fake model.
fn rust_reference(prompt: &[u32], n: usize, dir: &Path) -> DriverOutput {
    let p = write_file(dir, "ref.weights", &weights_bytes());
    let mut s = Session::new(model(), &p, SessionOptions { threads: 2, ..Default::default() }).unwrap();
    let g = s.generate(prompt, n, &mut Sampler::greedy(), |_| true).unwrap();
    DriverOutput {
        n_prompt: prompt.len() as u32,
        vocab: VOCAB,
        logits: g.prompt_logits,
        generated: g.tokens.iter().map(|&t| t as i32).collect(),
        variant: 0,
    }
}

fn build_driver(cc: &str, extra: &[&str], dir: &Path) -> PathBuf {
    let inc = root().join("include");
    let obj = dir.join("fake_model.o");
    // The model is a separate object, as a compiled model would be.
    run_ok(
        Command::new(cc)
            .args(["-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror", "-c"])
            .arg("-I")
            .arg(&inc)
            .arg(root().join("c/tests/fake_model.c"))
            .arg("-o")
            .arg(&obj),
    );
    let exe = dir.join("prog");
    run_ok(
        Command::new(cc)
            .args(["-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror"])
            .args(extra)
            .arg("-DEDGEC_MODEL=fake")
            .arg("-I")
            .arg(&inc)
            .arg(root().join("c/edgec_driver.c"))
            .arg(&obj)
            .arg("-o")
            .arg(&exe)
            .arg("-lm"),
    );
    exe
}

fn check_driver(runner: &[&str], exe: &Path, dir: &Path) {
    let run = |args: &[&str]| {
        let mut cmd = Command::new(runner.first().copied().unwrap_or(exe.to_str().unwrap()));
        if !runner.is_empty() {
            cmd.args(&runner[1..]).arg(exe);
        }
        cmd.args(args).output().unwrap()
    };
    let w = write_file(dir, "fake.weights", &weights_bytes());
    let w = w.to_str().unwrap();
    let prompt = [3u32, 1, 4, 1, 5, 9, 2, 6, 5, 3];
    let ids = prompt.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let want = rust_reference(&prompt, 12, dir);
    assert_eq!(want.generated.iter().map(|&t| t as u32).collect::<Vec<_>>(), expected_greedy(&prompt, 12));
    for mode in ["prefill", "stepwise"] {
        let out = dir.join(format!("out-{mode}.bin"));
        let o = run(&[w, &ids, "12", mode, out.to_str().unwrap()]);
        assert!(o.status.success(), "{mode}: {}", String::from_utf8_lossy(&o.stderr));
        let got = parse_driver_output(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(got, want, "{mode}");
        assert!(!dir.join(format!("out-{mode}.bin.tmp")).exists());
    }
    // Zero new tokens: the prompt's logits only.
    let out = dir.join("out0.bin");
    let o = run(&[w, "7", "0", "prefill", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = parse_driver_output(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!((got.n_prompt, got.generated.len()), (1, 0));
    assert_eq!(got.logits, expected_logits(&[7]));

    // Failures: exit 1, a message, no output file.
    let mut bad_hash = weights_bytes();
    bad_hash[40] ^= 1;
    let bh = write_file(dir, "badhash.weights", &bad_hash);
    let mut bad_magic = weights_bytes();
    bad_magic[1] = b'x';
    let bm = write_file(dir, "badmagic.weights", &bad_magic);
    let tr = write_file(dir, "trunc.weights", &weights_bytes()[..100]);
    let mut padded = weights_bytes();
    padded.push(0);
    let pd = write_file(dir, "pad.weights", &padded);
    let mut badver = weights_bytes();
    badver[8] = 9;
    let bv = write_file(dir, "badver.weights", &badver);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![bh.display().to_string(), "1,2".into(), "3".into(), "prefill".into()], "content hash"),
        (vec![bm.display().to_string(), "1,2".into(), "3".into(), "prefill".into()], "bad magic"),
        (vec![tr.display().to_string(), "1,2".into(), "3".into(), "prefill".into()], "truncated"),
        (vec![pd.display().to_string(), "1,2".into(), "3".into(), "prefill".into()], "padded"),
        (vec![bv.display().to_string(), "1,2".into(), "3".into(), "prefill".into()], "ABI version 9"),
        (
            vec![w.into(), "1,900,2".into(), "3".into(), "prefill".into()],
            "token id 900 at index 1 is out of range (vocab 37)",
        ),
        (vec![w.into(), "1,-2".into(), "3".into(), "prefill".into()], "out of range"),
        (vec![w.into(), "1,,2".into(), "3".into(), "prefill".into()], "index 1"),
        (vec![w.into(), "".into(), "3".into(), "prefill".into()], "IDS"),
        (vec![w.into(), "1,2".into(), "64".into(), "prefill".into()], "context overflow"),
        (vec![w.into(), "1,2".into(), "x".into(), "prefill".into()], "MAX_NEW_TOKENS"),
        (vec![w.into(), "1,2".into(), "3".into(), "sideways".into()], "MODE"),
        (vec![dir.join("nope").display().to_string(), "1".into(), "3".into(), "prefill".into()], "cannot open"),
    ];
    for (args, msg) in cases {
        let out = dir.join("fail.bin");
        let mut a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o_s = out.display().to_string();
        a.push(&o_s);
        let o = run(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{a:?}: {err}");
        assert!(err.contains(msg), "{a:?}: expected {msg:?} in {err:?}");
        assert!(!out.exists() && !dir.join("fail.bin.tmp").exists());
    }
    // The 63 prompt + 1 new token fits exactly.
    let ids63 = vec!["1"; 63].join(",");
    let o = run(&[w, &ids63, "2", "prefill", dir.join("edge.bin").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Wrong usage.
    let o = run(&[w]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("usage"));
}

#[test]
fn c_driver_host() {
    if !on_path("cc") {
        println!("note: no cc on PATH, skipping the C driver test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_driver("cc", &[], dir.path());
    check_driver(&[], &exe, dir.path());
}

#[test]
fn c_driver_aarch64_qemu() {
    let (cc, qemu) = ("aarch64-linux-gnu-gcc", "qemu-aarch64");
    if !on_path(cc) || !on_path(qemu) {
        println!("note: {cc} or {qemu} not on PATH, skipping the aarch64 driver test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_driver(cc, &["-static"], dir.path());
    check_driver(&[qemu], &exe, dir.path());
}
