//! A persistent thread pool behind the ABI's `parallel_for` callback.
//!
//! Decode runs hundreds of parallel regions per token, so dispatch must be cheap: a region is
//! published by bumping an epoch counter that idle workers spin on for a short while (then
//! yield, then block on a condition variable). `[0, n_tasks)` is split into
//! `min(n_tasks, threads)` contiguous chunks; the caller thread and the workers claim chunks
//! from a shared, epoch-tagged counter (so a worker that is slow to wake simply does nothing
//! and is not waited for), and `parallel_for` returns once every chunk has run. With one
//! thread everything runs inline, with no atomics or locks.
//!
//! Kernels are `extern "C"` functions: they cannot unwind into the pool (a Rust `extern "C"`
//! function that panics aborts the process), so a kernel failure can never leave the pool in a
//! half-finished state. A `parallel_for` issued while a region is already running on the same
//! pool (a kernel calling back in, or a second thread sharing the pool) runs inline on the
//! calling thread, so the pool is never re-entered.

use crate::abi::KernelFn;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Upper bound for `threads = 0` (see [`default_threads`]).
pub const MAX_AUTO_THREADS: usize = 8;
/// Upper bound for an explicit thread count.
pub const MAX_THREADS: usize = 1024;
/// Pure spin iterations (CPU pause hint) before a waiting thread starts yielding.
const SPIN_ITERS: u32 = 1 << 11;
/// `yield_now` rounds after spinning before a waiting worker blocks.
const YIELD_ITERS: u32 = 64;
/// `next` packs (epoch << CHUNK_BITS) | next chunk index.
const CHUNK_BITS: u32 = 20;
const CHUNK_MASK: u64 = (1 << CHUNK_BITS) - 1;

/// A region as one thread saw it.
#[derive(Clone, Copy)]
struct Job {
    kernel: KernelFn,
    args: *const u8,
    n_tasks: u64,
    n_chunks: u64,
    epoch: u64,
}

impl Job {
    /// Tasks of chunk `c`: an even contiguous split of `[0, n_tasks)`.
    fn bounds(&self, c: u64) -> (u64, u64) {
        let n = self.n_tasks as u128;
        let k = self.n_chunks as u128;
        let c = c as u128;
        ((c * n / k) as u64, ((c + 1) * n / k) as u64)
    }
}

/// The state shared by the pool's owner, its workers and the `parallel_for` callback (which
/// receives a pointer to it as the context's `pool`).
///
/// Protocol: the dispatcher (one at a time, see `busy`) closes `next` with the new epoch's
/// tag, writes the job fields, opens `next` at chunk 0 and bumps `epoch`. A thread claims a
/// chunk by a compare-and-swap on `next` that requires the tag of the epoch whose fields it
/// read; a thread that read fields of another epoch (or a mix) fails its CAS, because the
/// fields of epoch E+1 are only written after `next` carries E+1's tag (all operations are
/// SeqCst). The dispatcher returns when `done` counts every chunk, so it never waits for a
/// worker that did not take part.
pub struct PoolShared {
    n_workers: usize,
    kernel: AtomicUsize,
    args: AtomicPtr<u8>,
    n_tasks: AtomicU64,
    n_chunks: AtomicU64,
    epoch: AtomicU64,
    next: AtomicU64,
    /// Chunks of the current epoch finished.
    done: AtomicU64,
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
        let epoch = self.epoch.load(Relaxed) + 1;
        let tag = epoch << CHUNK_BITS;
        self.next.store(tag | CHUNK_MASK, SeqCst); // closed: no chunk of `epoch` yet
        self.kernel.store(kernel as usize, SeqCst);
        self.args.store(args as *mut u8, SeqCst);
        self.n_tasks.store(n_tasks, SeqCst);
        self.n_chunks.store(n_chunks, SeqCst);
        self.done.store(0, SeqCst);
        self.next.store(tag, SeqCst); // open
        self.epoch.store(epoch, SeqCst);
        if self.sleepers.load(SeqCst) > 0 {
            let _g = lock(&self.work_mx);
            self.work_cv.notify_all();
        }
        let job = Job { kernel, args, n_tasks, n_chunks, epoch };
        // SAFETY: forwarded.
        unsafe { self.run_chunks(&job) };
        self.wait_done(n_chunks);
        self.busy.store(false, Release);
    }

    /// Reads the current job's fields as of `epoch` (they may be a mix if a newer epoch is
    /// being written; `run_chunks` then claims nothing).
    fn snapshot(&self, epoch: u64) -> Option<Job> {
        let k = self.kernel.load(SeqCst);
        if k == 0 {
            return None;
        }
        // SAFETY: `kernel` only ever holds 0 or a `KernelFn` stored by `parallel_for`.
        let kernel: KernelFn = unsafe { std::mem::transmute::<usize, KernelFn>(k) };
        Some(Job {
            kernel,
            args: self.args.load(SeqCst),
            n_tasks: self.n_tasks.load(SeqCst),
            n_chunks: self.n_chunks.load(SeqCst),
            epoch,
        })
    }

    /// Claims and runs chunks of `job.epoch` until none are left.
    ///
    /// # Safety
    /// The dispatcher's contract on the kernel.
    unsafe fn run_chunks(&self, job: &Job) {
        let tag = job.epoch << CHUNK_BITS;
        let mut cur = self.next.load(SeqCst);
        loop {
            if cur & !CHUNK_MASK != tag || (cur & CHUNK_MASK) >= job.n_chunks {
                return;
            }
            match self.next.compare_exchange_weak(cur, cur + 1, SeqCst, SeqCst) {
                Ok(_) => {
                    // The claim proves `job` holds this epoch's fields (see PoolShared).
                    let (b, e) = job.bounds(cur & CHUNK_MASK);
                    if b < e {
                        // SAFETY: forwarded.
                        unsafe { (job.kernel)(job.args, b, e) };
                    }
                    if self.done.fetch_add(1, SeqCst) + 1 == job.n_chunks && self.caller_waiting.load(SeqCst) {
                        let _g = lock(&self.done_mx);
                        self.done_cv.notify_one();
                    }
                    cur = self.next.load(SeqCst);
                }
                Err(now) => cur = now,
            }
        }
    }

    fn wait_done(&self, n_chunks: u64) {
        for i in 0..SPIN_ITERS {
            if self.done.load(Acquire) == n_chunks {
                return;
            }
            if i >= 256 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        let mut g = lock(&self.done_mx);
        self.caller_waiting.store(true, SeqCst);
        while self.done.load(SeqCst) != n_chunks {
            g = self.done_cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        self.caller_waiting.store(false, SeqCst);
    }

    fn worker_loop(&self) {
        let mut seen = 0u64;
        loop {
            // Wait for a new epoch: spin, yield, then block.
            let mut spins = 0u32;
            let mut epoch = self.epoch.load(SeqCst);
            while epoch == seen && !self.shutdown.load(Relaxed) {
                spins += 1;
                if spins < SPIN_ITERS {
                    std::hint::spin_loop();
                } else if spins < SPIN_ITERS + YIELD_ITERS {
                    std::thread::yield_now();
                } else {
                    let mut g = lock(&self.work_mx);
                    self.sleepers.fetch_add(1, SeqCst);
                    while self.epoch.load(SeqCst) == seen && !self.shutdown.load(SeqCst) {
                        g = self.work_cv.wait(g).unwrap_or_else(|e| e.into_inner());
                    }
                    self.sleepers.fetch_sub(1, SeqCst);
                    spins = 0;
                }
                epoch = self.epoch.load(SeqCst);
            }
            if epoch == seen {
                return; // shutdown
            }
            seen = epoch;
            if let Some(job) = self.snapshot(epoch) {
                // SAFETY: the dispatcher's contract; a stale snapshot claims nothing.
                unsafe { self.run_chunks(&job) };
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
    ///
    /// With `threads = 0` on Linux/Android, when the machine has slower cores (big.LITTLE), the
    /// workers are also pinned to the faster cores (see [`default_threads`]); the caller's own
    /// thread is the app's and is left alone.
    ///
    /// More than [`MAX_THREADS`] is refused (`InvalidInput`, the message from
    /// [`check_threads`]) rather than silently capped.
    pub fn new(threads: usize) -> std::io::Result<ThreadPool> {
        check_threads(threads).map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
        let pin = if threads == 0 { affinity::fast_subset() } else { None };
        let threads = resolve_threads(threads).min(MAX_THREADS);
        let shared = Arc::new(PoolShared {
            n_workers: threads - 1,
            kernel: AtomicUsize::new(0),
            args: AtomicPtr::new(std::ptr::null_mut()),
            n_tasks: AtomicU64::new(0),
            n_chunks: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            next: AtomicU64::new(0),
            done: AtomicU64::new(0),
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
            let pin = pin.clone();
            let h = std::thread::Builder::new().name(format!("edgec-worker-{i}")).spawn(move || {
                if let Some(cpus) = pin {
                    affinity::pin_current_thread(&cpus); // best effort: the OS may refuse
                }
                s.worker_loop()
            })?; // on error, drop joins those already started
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

/// Refuses an explicit thread count above [`MAX_THREADS`] (a caller's mistake, such as a
/// negative count cast to unsigned), with a message naming the value and the limit. 0 means
/// [`default_threads`]; every other value up to the limit is taken as asked.
pub fn check_threads(threads: usize) -> Result<(), String> {
    if threads > MAX_THREADS {
        return Err(format!(
            "{threads} threads is more than the limit of {MAX_THREADS} (0 = the default: the fast cores, at most {MAX_AUTO_THREADS})"
        ));
    }
    Ok(())
}

/// `threads`, or [`default_threads`] when it is 0.
pub fn resolve_threads(threads: usize) -> usize {
    if threads == 0 { default_threads() } else { threads }
}

/// The thread count for `threads = 0`: the number of fast cores, at most the available
/// parallelism (which honours the process's affinity mask and cgroup quota) and at most
/// [`MAX_AUTO_THREADS`].
///
/// Why not every core: phones are big.LITTLE (e.g. 1 prime + 3 big + 4 little cores). A
/// parallel region ends when its slowest chunk does, and chunks are split evenly, so a little
/// core running a chunk at a third of the speed makes the whole region wait for it; decode is
/// memory-bound and the big cores alone already saturate the memory bus. So the default is the
/// cores that are not in the slowest cluster.
///
/// How: on Linux and Android, [`fast_cpus`] reads `/sys/devices/system/cpu/cpuN/cpufreq/
/// cpuinfo_max_freq` for every online CPU. If all report the same maximum frequency (a
/// desktop, a server, a VM) every CPU counts; otherwise the CPUs whose maximum is above the
/// lowest maximum count (1+3+4 → 4, 2+6 → 2, 4+4 → 4). When sysfs does not tell (another OS, a
/// CPU without cpufreq, a sandbox), the available parallelism is used. With this default the
/// pool's workers are pinned to those fast CPUs with `sched_setaffinity` where the OS allows it
/// (Android and Linux do for a thread's own mask; a failure is ignored). An explicit thread
/// count never pins.
pub fn default_threads() -> usize {
    let avail = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fast = affinity::system_fast_cpus().map_or(avail, |c| c.len().max(1));
    fast.min(avail).min(MAX_AUTO_THREADS)
}

/// The fast CPUs (see [`default_threads`]) of a sysfs CPU tree such as
/// `/sys/devices/system/cpu`, ascending; `None` when it does not tell.
pub fn fast_cpus(root: &std::path::Path) -> Option<Vec<usize>> {
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();
    let online: Vec<usize> = match read(root.join("online")) {
        Some(list) => parse_cpu_list(&list)?,
        None => {
            let mut cpus: Vec<usize> = std::fs::read_dir(root)
                .ok()?
                .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("cpu")?.parse().ok())
                .collect();
            cpus.sort_unstable();
            cpus
        }
    };
    if online.is_empty() {
        return None;
    }
    let mut freqs = Vec::with_capacity(online.len());
    for &cpu in &online {
        let text = read(root.join(format!("cpu{cpu}/cpufreq/cpuinfo_max_freq")))?;
        freqs.push(text.trim().parse::<u64>().ok()?);
    }
    let slowest = *freqs.iter().min()?;
    let fastest = *freqs.iter().max()?;
    if slowest == fastest {
        return Some(online);
    }
    Some(online.iter().zip(&freqs).filter(|&(_, &f)| f > slowest).map(|(&c, _)| c).collect())
}

/// Parses a sysfs CPU list such as `0-3,6,8-9`.
pub fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

/// CPU affinity by hand (`sched_setaffinity` is in every Linux and Android libc; the runtime
/// links no crate for it).
mod affinity {
    /// The fast CPUs of this machine, on Linux/Android.
    pub fn system_fast_cpus() -> Option<Vec<usize>> {
        if cfg!(any(target_os = "linux", target_os = "android")) {
            super::fast_cpus(std::path::Path::new("/sys/devices/system/cpu"))
        } else {
            None
        }
    }

    /// The fast CPUs when they are a proper subset of the online ones (worth pinning to).
    pub fn fast_subset() -> Option<Vec<usize>> {
        let root = std::path::Path::new("/sys/devices/system/cpu");
        let fast = system_fast_cpus()?;
        let online = std::fs::read_to_string(root.join("online")).ok().and_then(|l| super::parse_cpu_list(&l))?;
        (fast.len() < online.len()).then_some(fast)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn pin_current_thread(cpus: &[usize]) -> bool {
        unsafe extern "C" {
            /// `int sched_setaffinity(pid_t pid, size_t cpusetsize, const cpu_set_t *mask)`.
            fn sched_setaffinity(pid: i32, cpusetsize: usize, mask: *const u64) -> i32;
        }
        // A cpu_set_t: 1024 bits.
        let mut mask = [0u64; 16];
        for &c in cpus.iter().filter(|&&c| c < 1024) {
            mask[c / 64] |= 1 << (c % 64);
        }
        // SAFETY: pid 0 is the calling thread; the mask is a valid 128-byte cpu_set_t.
        unsafe { sched_setaffinity(0, std::mem::size_of_val(&mask), mask.as_ptr()) == 0 }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub fn pin_current_thread(_cpus: &[usize]) -> bool {
        false
    }
}

/// The ABI's `parallel_for` ([`crate::abi::ParallelForFn`]) over a [`ThreadPool`]: `pool` is
/// [`ThreadPool::as_context_ptr`]. A NULL `pool` runs the region serially.
///
/// # Safety
/// `pool` is NULL or comes from a live pool; `kernel` is safe to run concurrently on
/// sub-ranges of `[0, n_tasks)` with `args`.
pub unsafe extern "C" fn edgec_parallel_for(pool: *mut c_void, kernel: KernelFn, args: *const u8, n_tasks: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A fake `/sys/devices/system/cpu` with these max frequencies (`None`: no cpufreq).
    fn sysfs(name: &str, online: Option<&str>, freqs: &[Option<u64>]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("edgec-sysfs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (i, f) in freqs.iter().enumerate() {
            let dir = root.join(format!("cpu{i}/cpufreq"));
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(f) = f {
                std::fs::write(dir.join("cpuinfo_max_freq"), format!("{f}\n")).unwrap();
            }
        }
        std::fs::create_dir_all(root.join("cpufreq")).unwrap(); // not a cpuN directory
        if let Some(o) = online {
            std::fs::write(root.join("online"), format!("{o}\n")).unwrap();
        }
        root
    }

    fn check(name: &str, online: Option<&str>, freqs: &[Option<u64>], expected: Option<Vec<usize>>) {
        let root = sysfs(name, online, freqs);
        assert_eq!(fast_cpus(&root), expected, "{name}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn fast_cores_from_sysfs() {
        let k = |f: u64| Some(f * 1000);
        // Snapdragon 8 Gen 2 style: 1 prime, 4 big (two speeds), 3 little.
        let sd8 = [k(2016), k(2016), k(2016), k(2803), k(2803), k(2803), k(2803), k(3187)];
        check("1+4+3", Some("0-7"), &sd8, Some(vec![3, 4, 5, 6, 7]));
        // 2 big + 6 little, big cores numbered last.
        let a = [k(1800), k(1800), k(1800), k(1800), k(1800), k(1800), k(2400), k(2400)];
        check("2+6", Some("0-7"), &a, Some(vec![6, 7]));
        // Homogeneous: every core.
        check("4 equal", Some("0-3"), &[k(3000); 4], Some(vec![0, 1, 2, 3]));
        // Offline cores are not counted; no `online` file means every cpuN directory.
        check("offline", Some("0-1,3"), &[k(1000), k(2000), k(2000), k(2000)], Some(vec![1, 3]));
        check("no online file", None, &[k(1000), k(2000)], Some(vec![1]));
        // Missing or garbled cpufreq: sysfs does not tell.
        check("no cpufreq", Some("0-1"), &[k(1000), None], None);
        check("empty", Some(""), &[], None);
        assert_eq!(fast_cpus(Path::new("/nonexistent/edgec/cpu")), None);
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-3,6,8-9\n"), Some(vec![0, 1, 2, 3, 6, 8, 9]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn default_is_within_bounds() {
        let n = default_threads();
        assert!((1..=MAX_AUTO_THREADS).contains(&n));
        assert_eq!(resolve_threads(3), 3);
    }
}
