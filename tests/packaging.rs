//! `edgec compile` for every target: all four artifacts, byte-identical when compiled twice;
//! `--embed-weights`; `edgec targets`; the commands of docs/android.md and docs/ios.md that can
//! run here (header syntax, bridging header, the JNI shim with a cross gcc); and one-line errors
//! for bad targets, bad --emit lists and unwritable output directories.

mod common;
use common::*;
use object::read::archive::ArchiveFile;
use std::path::Path;
use std::process::Command;

const TARGETS: &[(&str, &str)] = &[
    // (spelling, symbol prefix)
    ("aarch64-linux-android24", ""),
    ("x86_64-linux-android", ""),
    ("aarch64-apple-ios15.0", "_"),
    ("aarch64-apple-ios-sim", "_"),
    ("aarch64-apple-darwin", "_"),
    ("x86_64-apple-darwin", "_"),
    ("aarch64-unknown-linux-gnu", ""),
    ("x86_64-unknown-linux-gnu", ""),
];

fn compile_ok(out: &Path, target: &str, extra: &[&str]) {
    let model = fixture("llama");
    let mut args = vec!["compile", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--target", target];
    args.extend_from_slice(&["--name", "tiny", "--max-context", "32"]);
    args.extend_from_slice(extra);
    let o = edgec(&args);
    assert!(o.status.success(), "{target}: {}", String::from_utf8_lossy(&o.stderr));
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn every_target_every_artifact_reproducible() {
    for &(target, prefix) in TARGETS {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        compile_ok(&a, target, &["--emit", "obj,staticlib,header,weights"]);
        compile_ok(&b, target, &["--emit", "obj,staticlib,header,weights"]);
        let (fa, fb) = (files(&a), files(&b));
        let names: Vec<&str> = fa.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["edgec.json", "libtiny.a", "tiny.h", "tiny.o", "tiny.weights"], "{target}");
        for ((n, x), (_, y)) in fa.iter().zip(&fb) {
            assert!(x == y, "{target}: {n} differs between two identical compiles");
        }
        let lib = std::fs::read(a.join("libtiny.a")).unwrap();
        let ar = ArchiveFile::parse(&lib[..]).unwrap();
        let index: Vec<String> =
            ar.symbols().unwrap().unwrap().map(|s| String::from_utf8_lossy(s.unwrap().name()).into_owned()).collect();
        assert!(index.contains(&format!("{prefix}tiny_forward")), "{target}: {index:?}");
        let member = ar.members().next().unwrap().unwrap();
        assert_eq!(member.data(&lib[..]).unwrap(), &std::fs::read(a.join("tiny.o")).unwrap()[..], "{target}");
    }
}

#[test]
fn embed_weights_default_outputs_and_reproducible() {
    for target in ["aarch64-apple-ios15.0", "aarch64-linux-android24"] {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        compile_ok(&a, target, &["--embed-weights"]);
        compile_ok(&b, target, &["--embed-weights"]);
        let fa = files(&a);
        let names: Vec<&str> = fa.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["edgec.json", "tiny.h", "tiny.o"], "{target}: no weights file");
        assert!(fa == files(&b), "{target}: embedded compiles differ");
        let h = std::fs::read_to_string(a.join("tiny.h")).unwrap();
        assert!(h.contains("extern const uint8_t tiny_weights[];"), "{h}");
    }
}

#[test]
fn targets_listing() {
    let o = edgec(&["targets"]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    for (t, _) in TARGETS {
        let family = t.trim_end_matches("24").replace("ios15.0", "ios");
        assert!(s.lines().any(|l| l == family), "{family} missing from:\n{s}");
    }
    assert!(s.contains("Mach-O") && s.contains("ELF") && s.contains("default iOS 10.0"), "{s}");
    assert!(s.contains("variant dotprod    emitted") && s.contains("NAME_forward_dotprod"), "{s}");
    assert!(s.contains("variant i8mm       planned"), "{s}");
}

/// Runs a documented command; it must succeed.
fn run_ok(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn documented_commands_that_run_here() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let (file_w, embed) = (tmp.path().join("file"), tmp.path().join("embed"));
    // docs/android.md and docs/ios.md: the compile commands.
    compile_ok(&file_w, "aarch64-linux-android24", &["--emit", "staticlib,header,weights"]);
    compile_ok(&embed, "aarch64-apple-ios15.0", &["--emit", "staticlib,header", "--embed-weights"]);
    let rt = root.join("runtime/include");
    // The generated header, alone and with the runtime's, in C and C++.
    for dir in [&file_w, &embed] {
        run_ok(Command::new("cc").args(["-fsyntax-only", "-Wall", "-Werror", "-x", "c"]).arg(dir.join("tiny.h")));
        run_ok(Command::new("c++").args(["-fsyntax-only", "-Wall", "-Werror", "-x", "c++"]).arg(dir.join("tiny.h")));
        // The Swift bridging header of docs/ios.md.
        run_ok(
            Command::new("cc")
                .args(["-fsyntax-only", "-Wall", "-Werror", "-x", "c", "-I"])
                .arg(dir)
                .arg("-I")
                .arg(&rt)
                .arg(root.join("docs/ios/Edgec-Bridging-Header.h")),
        );
    }
    // The JNI shim of docs/android.md, against a stub jni.h, for the phone's ISA; both with a
    // weights file and with embedded weights.
    require_aarch64_tools();
    for (dir, defs) in [(&file_w, vec![]), (&embed, vec!["-DEDGEC_EMBEDDED_WEIGHTS"])] {
        let obj = tmp.path().join("edgec_jni.o");
        run_ok(
            Command::new("aarch64-linux-gnu-gcc")
                .args(["-c", "-std=c11", "-fPIC", "-Wall", "-Wextra", "-Werror", "-DEDGEC_MODEL=tiny"])
                .args(defs)
                .arg("-I")
                .arg(root.join("tests/jni"))
                .arg("-I")
                .arg(&rt)
                .arg("-I")
                .arg(dir)
                .arg(root.join("docs/android/edgec_jni.c"))
                .arg("-o")
                .arg(&obj),
        );
        assert!(obj.is_file());
    }
}

fn expect_one_line_error(args: &[&str], out: &Path) -> String {
    let o = edgec(args);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "expected one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    if out.is_dir() {
        assert_eq!(std::fs::read_dir(out).unwrap().count(), 0, "partial output in {}", out.display());
    }
    stderr
}

#[test]
fn packaging_errors_are_one_line() {
    let model = fixture("llama");
    let m = model.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--target", "foo-bar-baz"], &["foo-bar-baz", "not a target triple"]),
        (&["--target", "riscv64gc-unknown-linux-gnu"], &["unsupported target", "aarch64-linux-android"]),
        (&["--target", "x86_64-pc-windows-msvc"], &["unsupported target"]),
        (&["--target", "aarch64-linux-android16"], &["API level 16"]),
        (&["--target", "aarch64-apple-darwin21.0"], &["aarch64-apple-macosx11.0"]),
        (&["--emit", "obj,exe"], &["--emit", "'exe'", "staticlib"]),
        (&["--embed-weights", "--emit", "obj,weights"], &["--embed-weights"]),
    ];
    for (extra, says) in cases {
        let mut args = vec!["compile", m, "-o", o, "--max-context", "32"];
        args.extend_from_slice(extra);
        let e = expect_one_line_error(&args, &out);
        for s in *says {
            assert!(e.contains(s), "{extra:?}: {e}");
        }
    }
    // `edgec run --target` goes through the same check.
    let e = expect_one_line_error(&["run", m, "--ids", "1", "--target", "nope-nope"], &out);
    assert!(e.contains("not a target triple"), "{e}");

    // Unwritable output directories: under a regular file, and a read-only directory (as
    // root, permissions do not stop writes, so that case is checked only for other users).
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("out");
    let e = expect_one_line_error(
        &["compile", m, "-o", under_file.to_str().unwrap(), "--max-context", "32", "--emit", "staticlib,header"],
        &under_file,
    );
    assert!(e.contains("cannot create output directory") && e.contains("plain-file"), "{e}");
}
