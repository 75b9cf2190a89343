//! Outputs that appear all at once or not at all.

use anyhow::{Context, Result, anyhow};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// Files staged as temporaries in their destination directory and renamed into place by
/// [`AtomicFiles::commit`]. Dropping it without committing removes every temporary, so a failed
/// compile leaves no partial output behind.
#[derive(Default)]
pub struct AtomicFiles {
    staged: Vec<(NamedTempFile, PathBuf)>,
}

/// An I/O error without the temporary file's random name (which `tempfile` appends as
/// ` at path "..."`), so messages name the destination and stay the same from run to run.
pub fn io_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.split_once(" at path \"") {
        Some((message, _)) => message.to_string(),
        None => text,
    }
}

impl AtomicFiles {
    /// A temporary file that becomes `dest` on commit.
    pub fn create(&mut self, dest: &Path) -> Result<&mut NamedTempFile> {
        let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".edgec-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| anyhow!("cannot create a file in {}: {}", dir.display(), io_message(&e)))?;
        let index = self.staged.len();
        self.staged.push((tmp, dest.to_path_buf()));
        Ok(&mut self.staged[index].0)
    }

    pub fn write(&mut self, dest: &Path, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let f = self.create(dest)?;
        f.write_all(bytes).map_err(|e| anyhow!("cannot write {}: {}", dest.display(), io_message(&e)))
    }

    /// Drops the most recently staged file: it is removed and never committed.
    pub fn discard_last(&mut self) {
        self.staged.pop();
    }

    /// Flushes every file to disk and renames them into place. If a rename fails, the files
    /// already renamed by this commit are removed again.
    pub fn commit(self) -> Result<()> {
        for (tmp, dest) in &self.staged {
            tmp.as_file().sync_all().with_context(|| format!("cannot write {}", dest.display()))?;
        }
        let mut done: Vec<PathBuf> = Vec::new();
        for (tmp, dest) in self.staged {
            if let Err(e) = tmp.persist(&dest) {
                for d in &done {
                    let _ = std::fs::remove_file(d);
                }
                return Err(anyhow!("cannot write {}: {}", dest.display(), io_message(&e.error)));
            }
            done.push(dest);
        }
        Ok(())
    }
}

/// Makes a write past the file size limit (`ulimit -f`) fail with EFBIG, reported and cleaned
/// up like any other write error, instead of killing the process with SIGXFSZ mid-write (which
/// would leave the staged temporaries behind). Rust's runtime ignores SIGPIPE but not SIGXFSZ.
pub fn ignore_file_size_signal() {
    #[cfg(unix)]
    {
        use std::ffi::c_int;
        // Declared by hand, like the runtime's mmap: edgec does not depend on libc.
        unsafe extern "C" {
            fn signal(signum: c_int, handler: usize) -> usize;
        }
        // SIGXFSZ is 25 on Linux (x86_64, aarch64), Android, macOS and iOS; SIG_IGN is 1.
        const SIGXFSZ: c_int = 25;
        const SIG_IGN: usize = 1;
        // SAFETY: installs the ignore disposition for one signal; no handler code runs.
        unsafe {
            signal(SIGXFSZ, SIG_IGN);
        }
    }
}
