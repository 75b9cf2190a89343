//! The runtime's `parallel_for` dispatch cost: a region whose kernel does nothing, so the time
//! is publishing the region, waking the workers and waiting for every chunk. Decode runs a few
//! hundred regions per token, so this bounds what small models can reach.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use edgec_runtime::pool::ThreadPool;
use std::hint::black_box;

unsafe extern "C" fn nothing(args: *const u8, begin: u64, end: u64) {
    black_box((args, begin, end));
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("parallel_for");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, 2, 4].into_iter().filter(|&t| t == 1 || t <= cores) {
        let pool = ThreadPool::new(threads).unwrap();
        for tasks in [1u64, 64] {
            group.bench_with_input(BenchmarkId::new(format!("{threads}_threads"), tasks), &tasks, |b, &tasks| {
                // SAFETY: `nothing` is safe on any range, from any thread.
                b.iter(|| unsafe { pool.parallel_for(nothing, std::ptr::null(), black_box(tasks)) })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
