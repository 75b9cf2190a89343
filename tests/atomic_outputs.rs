//! Atomic outputs (issue 9): a compile that cannot write its outputs fails with one clear line
//! and leaves no partial object, weights or header behind, not even a staged temporary.
//!
//! What each case proves:
//! - `output_path_under_a_regular_file`: the output directory cannot be created (its parent is
//!   a file); works for any user.
//! - `unwritable_output_directory`: the directory exists but refuses new files. As a normal
//!   user that is `chmod 555`; root ignores permission bits, so as root the directory is a
//!   read-only tmpfs mount instead (skipped, saying why, if mounting is not permitted).
//! - `full_disk_*`: a 256 KiB tmpfs fills while the 628 KB weights file is written; a 632 KiB
//!   one holds the weights but fills while the object is written (so a complete weights file
//!   and a partial object are both staged when the write fails). Root only (mount), skipped
//!   otherwise.
//! - `file_size_limit`: `ulimit -f` makes the weights write fail with EFBIG (edgec ignores
//!   SIGXFSZ, which would otherwise kill it mid-write and leave the temporary behind); works
//!   for any user.
//!
//! In every case the output directory is empty afterwards and the message is exact.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn compile_args(out: &Path) -> Vec<String> {
    let model = fixture("llama");
    ["compile", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--max-context", "32", "--name", "llama"]
        .map(String::from)
        .to_vec()
}

/// Checks a clean failure: nonzero exit (not a signal), one `error:` line equal to `expected`
/// (with `$DIR` for `dir`), no panic, and `out` absent or empty.
fn check_failure(o: &Output, dir: &Path, out: &Path, expected: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr).trim_end().replace(dir.to_str().unwrap(), "$DIR");
    assert!(o.status.code().is_some_and(|c| c != 0), "expected an error exit, got {}; stderr: {stderr}", o.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr, expected);
    if out.exists() {
        let left: Vec<_> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "partial output left behind: {left:?}");
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|u| u.split_whitespace().next() == Some("0")))
        .unwrap_or(false)
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs with `options` at `dir`, or says why it cannot.
    fn tmpfs(dir: &Path, options: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !o.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
        }
        Ok(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn output_path_under_a_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    std::fs::write(dir.join("file"), "not a directory").unwrap();
    let out = dir.join("file/out");
    let o = edgec(&compile_args(&out).iter().map(String::as_str).collect::<Vec<_>>());
    check_failure(&o, &dir, &out, "error: cannot create output directory $DIR/file/out: Not a directory (os error 20)");
    assert_eq!(std::fs::read_to_string(dir.join("file")).unwrap(), "not a directory");
}

#[test]
fn unwritable_output_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let out = dir.join("ro");
    let (_mount, expected) = if is_root() {
        match Mount::tmpfs(&out, "ro,size=1m") {
            Ok(m) => (Some(m), "error: cannot create a file in $DIR/ro: Read-only file system (os error 30)"),
            Err(why) => {
                eprintln!("skipped: root ignores chmod, and a read-only tmpfs is not available: {why}");
                return;
            }
        }
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
        (None, "error: cannot create a file in $DIR/ro: Permission denied (os error 13)")
    };
    let o = edgec(&compile_args(&out).iter().map(String::as_str).collect::<Vec<_>>());
    check_failure(&o, &dir, &out, expected);
}

/// Compiles into a tmpfs of `size`; `None` when it cannot be mounted (the test is skipped).
fn compile_on_full_disk(size: &str) -> Option<(PathBuf, Output, tempfile::TempDir, Mount)> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let out = dir.join("full");
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return None;
    }
    let mount = match Mount::tmpfs(&out, &format!("size={size}")) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: {why}");
            return None;
        }
    };
    let o = edgec(&compile_args(&out).iter().map(String::as_str).collect::<Vec<_>>());
    Some((dir, o, tmp, mount))
}

#[test]
fn full_disk_while_writing_the_weights() {
    let Some((dir, o, _tmp, _mount)) = compile_on_full_disk("256k") else { return };
    let expected = "error: $DIR/full/llama.weights: writing the weights file: No space left on device (os error 28)";
    check_failure(&o, &dir, &dir.join("full"), expected);
}

#[test]
fn full_disk_while_writing_the_object() {
    // 628,032 bytes of weights take 154 pages of 4 KiB; 632 KiB is 158 pages, and the 18 KB
    // object needs 5 more.
    let Some((dir, o, _tmp, _mount)) = compile_on_full_disk("632k") else { return };
    let expected = "error: cannot write $DIR/full/llama.o: No space left on device (os error 28)";
    check_failure(&o, &dir, &dir.join("full"), expected);
}

#[test]
fn file_size_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let out = dir.join("out");
    let script = "ulimit -f 64 && exec \"$0\" \"$@\"";
    let o = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_edgec"))
        .args(compile_args(&out))
        .output()
        .unwrap();
    let expected = "error: $DIR/out/llama.weights: writing the weights file: File too large (os error 27)";
    check_failure(&o, &dir, &out, expected);
}
