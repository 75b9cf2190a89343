//! Mapping and validating a weights file.
//!
//! On unix the file is mapped read-only with `mmap` (declared here by hand; the runtime has no
//! dependencies). Elsewhere, or when mapping fails or is not wanted, the file is read into a
//! 64-byte aligned heap buffer. Either way the header is then checked against the model's
//! [`ModelInfo`] before any compiled code sees the bytes.

use crate::abi::{ABI_VERSION, ALIGN, ModelInfo, WEIGHTS_HEADER_SIZE, WEIGHTS_MAGIC, WeightsHeader};
use crate::error::Error;
use crate::mem::AlignedBuf;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// How to bring the weights file into memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadMode {
    /// `mmap` where available, reading into the heap otherwise or if mapping fails.
    #[default]
    Auto,
    /// `mmap` only: an error where it is unavailable or fails.
    Map,
    /// Always read into a 64-byte aligned heap buffer.
    Read,
}

#[cfg(all(unix, target_pointer_width = "64"))]
mod sys {
    use std::ffi::{c_int, c_void};
    pub const PROT_READ: c_int = 1;
    pub const MAP_PRIVATE: c_int = 2; // the same value on Linux, Android, macOS and iOS
    pub const MAP_FAILED: *mut c_void = !0usize as *mut c_void;
    unsafe extern "C" {
        // off_t is 64-bit on every 64-bit unix we target.
        pub fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: i64) -> *mut c_void;
        pub fn munmap(addr: *mut c_void, len: usize) -> c_int;
    }
}

enum Backing {
    #[cfg(all(unix, target_pointer_width = "64"))]
    Mapped {
        addr: *mut std::ffi::c_void,
        len: usize,
    },
    Heap(AlignedBuf),
    /// Borrowed for the whole program: weights embedded in the model object (`NAME_weights`).
    Static(&'static [u8]),
}

/// A validated weights file in memory: its base is 64-byte aligned and it is read-only.
pub struct Weights {
    backing: Backing,
    len: usize,
    path: PathBuf,
}

// SAFETY: the memory is never written after validation and is owned by this value.
unsafe impl Send for Weights {}
unsafe impl Sync for Weights {}

impl Weights {
    /// Maps (or reads) `path` and checks it against `info`.
    pub fn open(path: &Path, info: &ModelInfo) -> Result<Weights, Error> {
        Weights::open_with(path, info, LoadMode::Auto)
    }

    pub fn open_with(path: &Path, info: &ModelInfo, mode: LoadMode) -> Result<Weights, Error> {
        let io = |e: std::io::Error| Error::Io { path: path.to_owned(), message: e.to_string() };
        let mut file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size < WEIGHTS_HEADER_SIZE as u64 {
            return Err(weights_err(
                path,
                format!("file is {size} bytes, shorter than the {WEIGHTS_HEADER_SIZE}-byte header"),
            ));
        }
        let len = usize::try_from(size)
            .map_err(|_| weights_err(path, format!("file of {size} bytes does not fit in memory")))?;
        let backing = match mode {
            LoadMode::Read => read_heap(&mut file, len, path)?,
            LoadMode::Map => map(&file, len)
                .map_err(|e| Error::Io { path: path.to_owned(), message: format!("mmap failed: {e}") })?,
            LoadMode::Auto => match map(&file, len) {
                Ok(b) => b,
                Err(_) => read_heap(&mut file, len, path)?,
            },
        };
        let w = Weights { backing, len, path: path.to_owned() };
        debug_assert_eq!(w.as_ptr() as usize % ALIGN, 0);
        validate_weights(w.bytes(), info, path)?;
        Ok(w)
    }

    /// Weights already in memory for the whole program, normally the object's embedded
    /// `NAME_weights` image (`edgec compile --embed-weights`); checked against `info` like a
    /// file. `name` labels errors. Used in place when 64-byte aligned, copied otherwise.
    pub fn from_static(bytes: &'static [u8], info: &ModelInfo, name: &str) -> Result<Weights, Error> {
        let path = PathBuf::from(name);
        let backing = if (bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
            Backing::Static(bytes)
        } else {
            let mut buf = AlignedBuf::zeroed(bytes.len() as u64, "weights")?;
            buf.as_mut_slice().copy_from_slice(bytes);
            Backing::Heap(buf)
        };
        let w = Weights { backing, len: bytes.len(), path };
        validate_weights(w.bytes(), info, &w.path)?;
        Ok(w)
    }

    /// The start of the file (its header included), 64-byte aligned.
    pub fn as_ptr(&self) -> *const u8 {
        match &self.backing {
            #[cfg(all(unix, target_pointer_width = "64"))]
            Backing::Mapped { addr, .. } => *addr as *const u8,
            Backing::Heap(b) => b.as_ptr(),
            Backing::Static(b) => b.as_ptr(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes, alive as long as self.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if the file is memory-mapped rather than read into the heap or borrowed.
    pub fn is_mapped(&self) -> bool {
        !matches!(self.backing, Backing::Heap(_) | Backing::Static(_))
    }

    /// True if the weights are used in place from static memory ([`Weights::from_static`]).
    pub fn is_static(&self) -> bool {
        matches!(self.backing, Backing::Static(_))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Weights {
    fn drop(&mut self) {
        #[cfg(all(unix, target_pointer_width = "64"))]
        if let Backing::Mapped { addr, len } = self.backing {
            // SAFETY: mapped by `map` with this length, unmapped once.
            unsafe { sys::munmap(addr, len) };
        }
    }
}

#[cfg(all(unix, target_pointer_width = "64"))]
fn map(file: &File, len: usize) -> Result<Backing, std::io::Error> {
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh read-only private mapping of an open file; checked against MAP_FAILED.
    let addr = unsafe { sys::mmap(std::ptr::null_mut(), len, sys::PROT_READ, sys::MAP_PRIVATE, file.as_raw_fd(), 0) };
    if addr == sys::MAP_FAILED || addr.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    if !(addr as usize).is_multiple_of(ALIGN) {
        // SAFETY: just mapped.
        unsafe { sys::munmap(addr, len) };
        return Err(std::io::Error::other("mapping is not 64-byte aligned"));
    }
    Ok(Backing::Mapped { addr, len })
}

#[cfg(not(all(unix, target_pointer_width = "64")))]
fn map(_file: &File, _len: usize) -> Result<Backing, std::io::Error> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "mmap is not available on this target"))
}

fn read_heap(file: &mut File, len: usize, path: &Path) -> Result<Backing, Error> {
    let mut buf = AlignedBuf::zeroed(len as u64, "weights")?;
    let io = |e: std::io::Error| Error::Io { path: path.to_owned(), message: e.to_string() };
    file.read_exact(buf.as_mut_slice()).map_err(io)?;
    // The file may have grown since it was measured: its header check below compares the
    // header's size against `len`, so a file that changes under us is still caught if the
    // header disagrees; a longer read is not attempted.
    Ok(Backing::Heap(buf))
}

fn weights_err(path: &Path, problem: String) -> Error {
    Error::Weights { path: path.to_owned(), problem }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks the whole file image `bytes` (header included) against the model's `info`: size at
/// least the header, magic, ABI version, header size, the header's file size equal to the real
/// size and to `info.weights_size`, and the content hash equal to the model's.
pub fn validate_weights(bytes: &[u8], info: &ModelInfo, path: &Path) -> Result<(), Error> {
    let real = bytes.len() as u64;
    let Some(head) = bytes.first_chunk::<WEIGHTS_HEADER_SIZE>() else {
        return Err(weights_err(
            path,
            format!("file is {real} bytes, shorter than the {WEIGHTS_HEADER_SIZE}-byte header"),
        ));
    };
    let h = WeightsHeader::from_bytes(head);
    if h.magic != WEIGHTS_MAGIC {
        return Err(weights_err(
            path,
            format!(
                "bad magic \"{}\" (expected \"{}\"); not an edgec weights file",
                h.magic.escape_ascii(),
                WEIGHTS_MAGIC.escape_ascii()
            ),
        ));
    }
    if h.abi_version != ABI_VERSION {
        return Err(weights_err(
            path,
            format!("ABI version {} (this runtime implements {ABI_VERSION})", h.abi_version),
        ));
    }
    if h.header_size as usize != WEIGHTS_HEADER_SIZE {
        return Err(weights_err(path, format!("header size {} (expected {WEIGHTS_HEADER_SIZE})", h.header_size)));
    }
    if h.file_size != real {
        let how = if real < h.file_size { "truncated" } else { "padded" };
        return Err(weights_err(
            path,
            format!("{how}: header says {} bytes but the file is {real} bytes", h.file_size),
        ));
    }
    if h.file_size != info.weights_size {
        return Err(weights_err(
            path,
            format!("file is {real} bytes but the model was compiled with a {}-byte weights file", info.weights_size),
        ));
    }
    if h.content_hash != info.content_hash {
        return Err(weights_err(
            path,
            format!(
                "content hash {} does not match the model's {}; the weights belong to another build",
                hex(&h.content_hash),
                hex(&info.content_hash)
            ),
        ));
    }
    Ok(())
}
