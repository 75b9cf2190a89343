//! A persistent thread pool behind the ABI's `parallel_for` callback.
//!
//! Decode runs hundreds of parallel regions per token, so dispatch must be cheap: a region is
//! published by bumping an epoch counter that idle workers spin on for a short while before
//! they block on a condition variable. `[0, n_tasks)` is split into `min(n_tasks, threads)`
//! contiguous chunks; the caller thread and the workers claim chunks from a shared counter
//! (so a worker that is slow to wake simply does nothing), and `parallel_for` returns once
//! every worker has checked in for the region. With one thread everything runs inline, with
//! no atomics or locks.
//!
//! Kernels are `extern "C"` functions: they cannot unwind into the pool (a Rust `extern "C"`
//! function that panics aborts the process), so a kernel failure can never leave the pool in a
//! half-finished state. A `parallel_for` issued while a region is already running on the same
//! pool (a kernel calling back in, or a second thread sharing the pool) runs inline on the
//! calling thread, so the pool is never re-entered.

use crate::abi::KernelFn;
use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Upper bound for `threads = 0` (the machine's available parallelism, capped here).
pub const MAX_AUTO_THREADS: usize = 8;
/// Iterations a waiting thread spins (with a CPU pause hint) before blocking.
const SPIN_ITERS: u32 = 1 << 14;

#[derive(Clone, Copy)]
struct Job {
    kernel: Option<KernelFn>,
    args: *const u8,
    n_tasks: u64,
    n_chunks: u64,
}

impl Job {
    /// Tasks of chunk `c`: an even contiguous split of `[0, n_tasks)`.
    fn bounds(&self, c: u64) -> (u64, u64) {
        let n = self.n_tasks as u128;
        let k = self.n_chunks as u128;
        let c = c as u128;
        ((c * n / k) as u64, ((c + 1) * n / k) as u64)
    }

    /// Claims and runs chunks until none are left.
    ///
    /// # Safety
    /// `kernel(args, b, e)` must be safe to call for every chunk, concurrently.
    unsafe fn run_chunks(&self, next: &AtomicU64) {
        let Some(kernel) = self.kernel else { return };
        loop {
            let c = next.fetch_add(1, Relaxed);
            if c >= self.n_chunks {
                return;
            }
            let (b, e) = self.bounds(c);
            if b < e {
                // SAFETY: forwarded from the caller of `parallel_for`.
                unsafe { kernel(self.args, b, e) };
            }
        }
    }
}

/// The state shared by the pool's owner, its workers and the `parallel_for` callback (which
/// receives a pointer to it as the context's `pool`).
pub struct PoolShared {
    n_workers: usize,
    /// Written only by the dispatcher, only while no worker reads it (all have checked in for
    /// the previous epoch), read by workers after they observe a new epoch.
    job: UnsafeCell<Job>,
    epoch: AtomicU64,
    next_chunk: AtomicU64,
    /// Workers that have not finished the current epoch.
    remaining: AtomicUsize,
    /// Set while a region is being dispatched; a second dispatcher runs inline instead.
    busy: AtomicBool,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    work_mx: Mutex<()>,
    work_cv: Condvar,
    caller_waiting: AtomicBool,
    done_mx: Mutex<()>,
    done_cv: Condvar,
}

// SAFETY: `job` is only accessed under the epoch protocol described on the field; everything
// else is atomics and locks.
unsafe impl Sync for PoolShared {}
unsafe impl Send for PoolShared {}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PoolShared {
    /// Runs `kernel(args, b, e)` over a partition of `[0, n_tasks)` and returns when all of it
    /// has run.
    ///
    /// # Safety
    /// `kernel` must be safe to call with `args` on any sub-range, from several threads at once.
    pub unsafe fn parallel_for(&self, kernel: KernelFn, args: *const u8, n_tasks: u64) {
        if n_tasks == 0 {
            return;
        }
        let n_chunks = n_tasks.min(self.n_workers as u64 + 1);
        if n_chunks <= 1 || self.busy.swap(true, Acquire) {
            // SAFETY: forwarded.
            unsafe { kernel(args, 0, n_tasks) };
            return;
        }
        let job = Job { kernel: Some(kernel), args, n_tasks, n_chunks };
        // SAFETY: `busy` makes us the only dispatcher and every worker has checked in for the
        // previous epoch (we waited for `remaining == 0`), so nobody reads `job` now.
        unsafe { *self.job.get() = job };
        self.next_chunk.store(0, Relaxed);
        self.remaining.store(self.n_workers, Relaxed);
        self.epoch.fetch_add(1, SeqCst); // publishes job, next_chunk and remaining
        if self.sleepers.load(SeqCst) > 0 {
            let _g = lock(&self.work_mx);
            self.work_cv.notify_all();
        }
        // SAFETY: forwarded.
        unsafe { job.run_chunks(&self.next_chunk) };
        self.wait_done();
        self.busy.store(false, Release);
    }

    fn wait_done(&self) {
        for _ in 0..SPIN_ITERS {
            if self.remaining.load(Acquire) == 0 {
                return;
            }
            std::hint::spin_loop();
        }
        let mut g = lock(&self.done_mx);
        self.caller_waiting.store(true, SeqCst);
        while self.remaining.load(SeqCst) != 0 {
            g = self.done_cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        self.caller_waiting.store(false, SeqCst);
    }

    fn worker_loop(&self) {
        // Workers start before any region is published, at epoch 0 (reading the epoch here
        // instead could skip a region published before this thread got to run).
        let mut seen = 0u64;
        loop {
            // Wait for a new epoch: spin, then block.
            let mut spins = 0;
            while self.epoch.load(Acquire) == seen && !self.shutdown.load(Relaxed) {
                spins += 1;
                if spins < SPIN_ITERS {
                    std::hint::spin_loop();
                    continue;
                }
                let mut g = lock(&self.work_mx);
                self.sleepers.fetch_add(1, SeqCst);
                while self.epoch.load(SeqCst) == seen && !self.shutdown.load(SeqCst) {
                    g = self.work_cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                self.sleepers.fetch_sub(1, SeqCst);
                break;
            }
            if self.epoch.load(Acquire) == seen {
                return; // shutdown
            }
            seen += 1;
            // SAFETY: we observed the new epoch (Acquire), so `job` is published and stays
            // unchanged until we decrement `remaining`.
            let job = unsafe { *self.job.get() };
            // SAFETY: the dispatcher's contract.
            unsafe { job.run_chunks(&self.next_chunk) };
            if self.remaining.fetch_sub(1, SeqCst) == 1 && self.caller_waiting.load(SeqCst) {
                let _g = lock(&self.done_mx);
                self.done_cv.notify_one();
            }
        }
    }
}

/// Owns the worker threads; joins them on drop.
pub struct ThreadPool {
    shared: Arc<PoolShared>,
    workers: Vec<JoinHandle<()>>,
}

impl ThreadPool {
    /// A pool of `threads` threads in total, the caller's included (`0` = the available
    /// parallelism, at most [`MAX_AUTO_THREADS`]). `threads = 1` starts no worker.
    pub fn new(threads: usize) -> std::io::Result<ThreadPool> {
        let threads = resolve_threads(threads);
        let shared = Arc::new(PoolShared {
            n_workers: threads - 1,
            job: UnsafeCell::new(Job { kernel: None, args: std::ptr::null(), n_tasks: 0, n_chunks: 0 }),
            epoch: AtomicU64::new(0),
            next_chunk: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            work_mx: Mutex::new(()),
            work_cv: Condvar::new(),
            caller_waiting: AtomicBool::new(false),
            done_mx: Mutex::new(()),
            done_cv: Condvar::new(),
        });
        let mut pool = ThreadPool { shared, workers: Vec::with_capacity(threads - 1) };
        for i in 1..threads {
            let s = Arc::clone(&pool.shared);
            let h = std::thread::Builder::new()
                .name(format!("edgec-worker-{i}"))
                .spawn(move || s.worker_loop())?; // on error, drop joins those already started
            pool.workers.push(h);
        }
        Ok(pool)
    }

    /// Threads taking part in a region, the caller's included.
    pub fn threads(&self) -> usize {
        self.shared.n_workers + 1
    }

    /// The value for `Context::pool`; valid while this pool lives.
    pub fn as_context_ptr(&self) -> *mut c_void {
        Arc::as_ptr(&self.shared) as *mut c_void
    }

    /// See [`PoolShared::parallel_for`].
    ///
    /// # Safety
    /// As there.
    pub unsafe fn parallel_for(&self, kernel: KernelFn, args: *const u8, n_tasks: u64) {
        // SAFETY: forwarded.
        unsafe { self.shared.parallel_for(kernel, args, n_tasks) }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        {
            let _g = lock(&self.shared.work_mx);
            self.shared.work_cv.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// `threads`, or the available parallelism capped at [`MAX_AUTO_THREADS`] when it is 0.
pub fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_AUTO_THREADS)
    } else {
        threads
    }
}

/// The ABI's `parallel_for` ([`crate::abi::ParallelForFn`]) over a [`ThreadPool`]: `pool` is
/// [`ThreadPool::as_context_ptr`]. A NULL `pool` runs the region serially.
///
/// # Safety
/// `pool` is NULL or comes from a live pool; `kernel` is safe to run concurrently on
/// sub-ranges of `[0, n_tasks)` with `args`.
pub unsafe extern "C" fn edgec_parallel_for(
    pool: *mut c_void,
    kernel: KernelFn,
    args: *const u8,
    n_tasks: u64,
) {
    if pool.is_null() {
        if n_tasks > 0 {
            // SAFETY: the caller's contract.
            unsafe { kernel(args, 0, n_tasks) };
        }
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { (*(pool as *const PoolShared)).parallel_for(kernel, args, n_tasks) }
}
