//! The binary contract between a compiled model object and the runtime that drives it.
//!
//! Defined once, here; the backend emits code against it, `include/edgec_abi.h` mirrors it for
//! C, and both sides check [`ABI_VERSION`]. Changing anything here means bumping the version.

use std::ffi::c_void;

/// Bumped on any change to the structs, the entry-point signature or the weights header.
pub const ABI_VERSION: u32 = 1;

/// A kernel: processes tasks `[begin, end)` of one op, with its operands described by `args`
/// (a block laid out by the backend for that kernel).
pub type KernelFn = unsafe extern "C" fn(args: *const u8, begin: u64, end: u64);

/// Runs `kernel(args, b, e)` over a partition of `[0, n_tasks)`, possibly on several threads,
/// and returns when all tasks are done.
pub type ParallelForFn = unsafe extern "C" fn(pool: *mut c_void, kernel: KernelFn, args: *const u8, n_tasks: u64);

/// Everything a compiled model needs from its host. The object imports no symbols: memory and
/// threads arrive here.
#[repr(C)]
pub struct Context {
    /// Base of the mapped weights file (its header included); 64-byte aligned.
    pub weights: *const u8,
    /// The activation arena: `ModelInfo::arena_size` bytes, 64-byte aligned.
    pub arena: *mut u8,
    /// The persistent state (KV cache): `ModelInfo::state_size` bytes, 64-byte aligned, zeroed
    /// at session start.
    pub state: *mut u8,
    /// Opaque thread pool handed back to `parallel_for`.
    pub pool: *mut c_void,
    pub parallel_for: ParallelForFn,
}

/// Static facts about a compiled model, exported by the object as the data symbol
/// `<name>_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub abi_version: u32,
    /// Vocabulary size: ids must be below it; each logits row has this many floats.
    pub vocab: u32,
    /// Most tokens one `forward` call accepts.
    pub max_tokens: u32,
    /// Most positions the KV cache holds: `pos + n_tokens` must not exceed it.
    pub max_context: u32,
    pub arena_size: u64,
    pub state_size: u64,
    /// Exact size of the weights file this object was compiled with.
    pub weights_size: u64,
    /// Content hash shared with the weights file header.
    pub content_hash: [u8; 32],
}

/// `int32_t <name>_forward(const Context *ctx, const int32_t *ids, uint32_t n_tokens,
/// uint32_t pos, float *logits)`: runs `n_tokens` tokens at positions `pos..pos + n_tokens`,
/// appends their keys and values to the state, and writes `n_tokens * vocab` logits.
/// Returns [`STATUS_OK`] or one of the `STATUS_*` codes, having done nothing.
pub type ForwardFn =
    unsafe extern "C" fn(ctx: *const Context, ids: *const i32, n_tokens: u32, pos: u32, logits: *mut f32) -> i32;

/// `int32_t <name>_run(const Context *ctx, const void *const *inputs, void *const *outputs,
/// const int64_t *dims)`: the entry point of a *general* graph (anything that is not the
/// decoder signature, e.g. an imported ONNX graph; such an object has no `_forward`).
/// `inputs`/`outputs` hold one pointer per graph input/output, in graph order, to row-major
/// data sized for the run-time dims; `dims` one value per graph symbol (at most one; NULL when
/// there is none). Its `ModelInfo` has `vocab == 0`, `max_context == 0` and `max_tokens` = the
/// symbol's bound. Returns [`STATUS_NULL_ARGUMENT`], [`STATUS_BAD_TOKEN_COUNT`] (a symbol value
/// outside `1..=max`) or [`STATUS_BAD_TOKEN_ID`] (an index a `gather` would read is out of
/// range) having done nothing, else [`STATUS_OK`]. The generated header lists the order.
pub type RunFn = unsafe extern "C" fn(
    ctx: *const Context,
    inputs: *const *const c_void,
    outputs: *const *mut c_void,
    dims: *const i64,
) -> i32;

pub const STATUS_OK: i32 = 0;
/// `n_tokens` is 0 or above `max_tokens`.
pub const STATUS_BAD_TOKEN_COUNT: i32 = 1;
/// `pos + n_tokens` is above `max_context`.
pub const STATUS_CONTEXT_OVERFLOW: i32 = 2;
/// An id is negative or not below `vocab`.
pub const STATUS_BAD_TOKEN_ID: i32 = 3;
/// A pointer argument is NULL.
pub const STATUS_NULL_ARGUMENT: i32 = 4;

/// The weights file starts with this header; tensor data follows at offsets (from the file
/// start) baked into the object, each 64-byte aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightsHeader {
    pub magic: [u8; 8],
    pub abi_version: u32,
    pub header_size: u32,
    pub content_hash: [u8; 32],
    /// Size of the whole file, header included.
    pub file_size: u64,
    pub reserved: u64,
}

pub const WEIGHTS_MAGIC: [u8; 8] = *b"EDGECWT\0";
pub const WEIGHTS_HEADER_SIZE: usize = 64;
/// Alignment of every tensor in the weights file, of the arena and of the state.
pub const ALIGN: usize = 64;

const _: () = assert!(std::mem::size_of::<WeightsHeader>() == WEIGHTS_HEADER_SIZE);
const _: () = assert!(std::mem::size_of::<ModelInfo>() == 72);
const _: () = assert!(std::mem::size_of::<Context>() == 40);

impl ModelInfo {
    /// The bytes of the `#[repr(C)]` layout, little-endian: what the object's `<name>_info`
    /// symbol holds.
    pub fn to_bytes(&self) -> [u8; 72] {
        let mut b = [0u8; 72];
        for (i, v) in [self.abi_version, self.vocab, self.max_tokens, self.max_context].into_iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        for (i, v) in [self.arena_size, self.state_size, self.weights_size].into_iter().enumerate() {
            b[16 + i * 8..24 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        b[40..72].copy_from_slice(&self.content_hash);
        b
    }
}

impl WeightsHeader {
    /// Serializes little-endian (the only byte order edgec targets).
    pub fn to_bytes(&self) -> [u8; WEIGHTS_HEADER_SIZE] {
        let mut b = [0u8; WEIGHTS_HEADER_SIZE];
        b[0..8].copy_from_slice(&self.magic);
        b[8..12].copy_from_slice(&self.abi_version.to_le_bytes());
        b[12..16].copy_from_slice(&self.header_size.to_le_bytes());
        b[16..48].copy_from_slice(&self.content_hash);
        b[48..56].copy_from_slice(&self.file_size.to_le_bytes());
        b[56..64].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; WEIGHTS_HEADER_SIZE]) -> WeightsHeader {
        // Fixed ranges of a fixed-size array: `at` cannot fail.
        fn at<const N: usize>(b: &[u8], i: usize) -> [u8; N] {
            let mut a = [0u8; N];
            a.copy_from_slice(&b[i..i + N]);
            a
        }
        let u32_at = |i: usize| u32::from_le_bytes(at(b, i));
        let u64_at = |i: usize| u64::from_le_bytes(at(b, i));
        WeightsHeader {
            magic: at(b, 0),
            abi_version: u32_at(8),
            header_size: u32_at(12),
            content_hash: at(b, 16),
            file_size: u64_at(48),
            reserved: u64_at(56),
        }
    }
}

/// `edgec_abi.h`: this module's C mirror, embedded into every generated model header.
pub const ABI_C_HEADER: &str = include_str!("../include/edgec_abi.h");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_info_bytes_are_its_memory_layout() {
        let info = ModelInfo {
            abi_version: ABI_VERSION,
            vocab: 0x0102_0304,
            max_tokens: 7,
            max_context: 0xdead_beef,
            arena_size: 0x1122_3344_5566_7788,
            state_size: 9,
            weights_size: u64::MAX - 1,
            content_hash: std::array::from_fn(|i| i as u8 * 3),
        };
        // SAFETY: ModelInfo is repr(C) with no padding (its size is asserted above).
        let raw = unsafe {
            std::slice::from_raw_parts(&info as *const ModelInfo as *const u8, std::mem::size_of::<ModelInfo>())
        };
        assert_eq!(&info.to_bytes()[..], raw);
    }

    #[test]
    fn weights_header_round_trips() {
        let h = WeightsHeader {
            magic: WEIGHTS_MAGIC,
            abi_version: ABI_VERSION,
            header_size: WEIGHTS_HEADER_SIZE as u32,
            content_hash: [7; 32],
            file_size: 12345,
            reserved: 0,
        };
        assert_eq!(WeightsHeader::from_bytes(&h.to_bytes()), h);
    }
}
