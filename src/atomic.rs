//! Outputs that appear all at once or not at all.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// Files staged as temporaries in their destination directory and renamed into place by
/// [`AtomicFiles::commit`]. Dropping it without committing removes every temporary, so a failed
/// compile leaves no partial output behind.
#[derive(Default)]
pub struct AtomicFiles {
    staged: Vec<(NamedTempFile, PathBuf)>,
}

impl AtomicFiles {
    /// A temporary file that becomes `dest` on commit.
    pub fn create(&mut self, dest: &Path) -> Result<&mut NamedTempFile> {
        let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".edgec-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        self.staged.push((tmp, dest.to_path_buf()));
        Ok(&mut self.staged.last_mut().expect("just pushed").0)
    }

    pub fn write(&mut self, dest: &Path, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let f = self.create(dest)?;
        f.write_all(bytes).with_context(|| format!("cannot write {}", dest.display()))
    }

    /// Drops the most recently staged file: it is removed and never committed.
    pub fn discard_last(&mut self) {
        self.staged.pop();
    }

    /// Flushes every file to disk and renames them into place.
    pub fn commit(self) -> Result<()> {
        for (tmp, _) in &self.staged {
            tmp.as_file().sync_all().context("cannot flush an output file")?;
        }
        for (tmp, dest) in self.staged {
            tmp.persist(&dest).with_context(|| format!("cannot write {}", dest.display()))?;
        }
        Ok(())
    }
}
