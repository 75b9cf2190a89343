//! 64-byte aligned, zero-initialized heap buffers (arena, state, weights read fallback).

use crate::abi::ALIGN;
use crate::error::Error;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

/// An owned, zeroed, [`ALIGN`]-aligned byte buffer. A zero-length buffer still owns one
/// aligned block, so its pointer is valid and aligned.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: the buffer is uniquely owned plain memory.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes; `what` names the buffer in the error.
    pub fn zeroed(len: u64, what: &'static str) -> Result<AlignedBuf, Error> {
        let oom = Error::OutOfMemory { what, bytes: len };
        let n = usize::try_from(len).map_err(|_| oom.clone())?;
        let layout = Layout::from_size_align(n.max(ALIGN), ALIGN).map_err(|_| oom.clone())?;
        // SAFETY: the layout has a nonzero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or(oom)?;
        Ok(AlignedBuf { ptr, len: n, layout })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` initialized (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Sets every byte back to zero.
    pub fn zero(&mut self) {
        self.as_mut_slice().fill(0);
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
