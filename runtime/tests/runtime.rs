mod common;

use common::*;
use edgec_runtime::abi::ABI_VERSION;
use edgec_runtime::capi::*;
use edgec_runtime::pool::ThreadPool;
use edgec_runtime::sample::argmax;
use edgec_runtime::*;
use std::ffi::CString;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

fn open_err(bytes: &[u8], mode: LoadMode) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "w.bin", bytes);
    let e = Session::new(model(), &p, SessionOptions { threads: 1, load: mode }).err().expect("must fail");
    let msg = e.to_string();
    assert!(matches!(e, Error::Weights { .. }), "{e:?}");
    assert!(msg.contains("w.bin"), "message names the path: {msg}");
    msg
}

#[test]
fn weights_header_validation() {
    for mode in [LoadMode::Auto, LoadMode::Read] {
        let good = weights_bytes();
        let mut b = good.clone();
        b[0] = b'X';
        assert!(open_err(&b, mode).contains("bad magic"));
        let mut b = good.clone();
        b[8..12].copy_from_slice(&(ABI_VERSION + 1).to_le_bytes());
        assert!(open_err(&b, mode).contains("ABI version 2"));
        let mut b = good.clone();
        b[12..16].copy_from_slice(&128u32.to_le_bytes());
        assert!(open_err(&b, mode).contains("header size 128"));
        let mut b = good.clone();
        b[20] ^= 0xFF;
        assert!(open_err(&b, mode).contains("content hash"));
        let b = &good[..100];
        assert!(open_err(b, mode).contains("truncated: header says 128 bytes but the file is 100 bytes"));
        let mut b = good.clone();
        b.extend([0u8; 8]);
        assert!(open_err(&b, mode).contains("padded"));
        assert!(open_err(&good[..10], mode).contains("shorter than the 64-byte header"));
        assert!(open_err(&[], mode).contains("0 bytes"));
        // A consistent file of the wrong size for the model.
        let mut b = good.clone();
        b.extend([0u8; 64]);
        b[48..56].copy_from_slice(&192u64.to_le_bytes());
        assert!(open_err(&b, mode).contains("compiled with a 128-byte weights file"));
    }
    let e = Session::new(model(), std::path::Path::new("/nonexistent/x.weights"), Default::default()).err().unwrap();
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("/nonexistent/x.weights"), "{e}");
}

#[test]
fn weights_mapped_and_read_agree() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "w", &weights_bytes());
    let m = Weights::open_with(&p, &INFO, LoadMode::Map).unwrap();
    let r = Weights::open_with(&p, &INFO, LoadMode::Read).unwrap();
    assert!(m.is_mapped() && !r.is_mapped());
    assert_eq!(m.bytes(), r.bytes());
    assert_eq!(m.as_ptr() as usize % 64, 0);
    assert_eq!(r.as_ptr() as usize % 64, 0);
}

#[test]
fn abi_version_and_info_checked() {
    static BAD: edgec_runtime::abi::ModelInfo = edgec_runtime::abi::ModelInfo { abi_version: 99, ..INFO };
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "w", &weights_bytes());
    let e = Session::new(Model { info: &BAD, forward: fake_forward }, &p, Default::default()).err().unwrap();
    assert_eq!(e, Error::AbiVersion { found: 99, expected: ABI_VERSION });
}

#[test]
fn forward_matches_formula_and_chunks() {
    let dir = tempfile::tempdir().unwrap();
    for threads in [1, 2, 3] {
        let mut s = session(dir.path(), threads);
        take_calls();
        let ids: Vec<u32> = (0..10).map(|i| (i * 5 + 1) % VOCAB).collect();
        let mut logits = vec![1.0; 3];
        s.forward(&ids, &mut logits).unwrap();
        assert_eq!(logits, expected_logits(&ids));
        assert_eq!(take_calls(), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(s.position(), 10);
        // Continuing through the cache equals one long prefill.
        let more = [3, 4, 5, 6, 7];
        s.forward(&more, &mut logits).unwrap();
        assert_eq!(take_calls(), vec![(10, 4), (14, 1)]);
        let all: Vec<u32> = ids.iter().chain(&more).copied().collect();
        assert_eq!(logits, expected_logits(&all)[10 * VOCAB as usize..]);
        // Empty input: nothing happens.
        s.forward(&[], &mut logits).unwrap();
        assert!(logits.is_empty() && take_calls().is_empty() && s.position() == 15);
        // Reset zeroes state.
        s.reset();
        assert_eq!(s.position(), 0);
        s.forward(&ids, &mut logits).unwrap();
        assert_eq!(logits, expected_logits(&ids));
    }
}

#[test]
fn bad_ids_and_overflow_rejected_before_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = session(dir.path(), 1);
    take_calls();
    let mut logits = Vec::new();
    let e = s.forward(&[1, 2, 3, 900, 4], &mut logits).unwrap_err();
    assert_eq!(e.to_string(), "token id 900 at index 3 is out of range (vocab 37)");
    let e = s.forward(&[VOCAB], &mut logits).unwrap_err();
    assert!(matches!(e, Error::TokenOutOfRange { id: 37, index: 0, vocab: 37 }));
    assert!(take_calls().is_empty());
    assert_eq!(s.position(), 0);
    s.forward(&[1; 60], &mut logits).unwrap();
    take_calls();
    let e = s.forward(&[1; 8], &mut logits).unwrap_err();
    assert_eq!(e.to_string(), "context overflow: position 60 + 8 tokens > max context 64");
    assert!(take_calls().is_empty());
    s.forward(&[1; 4], &mut logits).unwrap();
    assert_eq!(s.position(), 64);
    assert!(matches!(s.forward(&[1], &mut logits), Err(Error::ContextOverflow { .. })));
}

#[test]
fn model_status_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "w", &weights_bytes());
    let mut s = Session::new(Model { info: &INFO, forward: failing_forward }, &p, Default::default()).unwrap();
    let e = s.forward(&[1, 2], &mut Vec::new()).unwrap_err();
    assert_eq!(e, Error::ModelStatus { status: 7, position: 0, tokens: 2 });
    assert!(e.to_string().contains("status 7"));
    assert_eq!(s.position(), 0);
}

#[test]
fn generate_greedy_steps_through_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = session(dir.path(), 2);
    take_calls();
    let prompt = [3, 1, 4, 1, 5, 9];
    let mut seen = Vec::new();
    let g = s
        .generate(&prompt, 8, &mut Sampler::greedy(), |t| {
            seen.push(t);
            true
        })
        .unwrap();
    assert_eq!(g.tokens, expected_greedy(&prompt, 8));
    assert_eq!(seen, g.tokens);
    assert_eq!(g.stop, StopReason::MaxTokens);
    assert_eq!(g.prompt_logits, expected_logits(&prompt));
    let calls = take_calls();
    let mut want = vec![(0, 4), (4, 2)];
    want.extend((6..13).map(|p| (p, 1)));
    assert_eq!(calls, want);
    assert_eq!(s.position(), 13);

    // The callback stops it.
    s.reset();
    let g = s.generate(&prompt, 8, &mut Sampler::greedy(), |_| false).unwrap();
    assert_eq!((g.tokens.len(), g.stop), (1, StopReason::Callback));

    // Context fills up: 60 prompt tokens leave room to feed 4 tokens, so 5 are generated.
    s.reset();
    let long: Vec<u32> = (0..60).map(|i| i % 5).collect();
    let g = s.generate(&long, 100, &mut Sampler::greedy(), |_| true).unwrap();
    assert_eq!(g.stop, StopReason::ContextFull);
    assert_eq!(g.tokens, expected_greedy(&long, 5));
    assert_eq!(s.position(), 64);

    s.reset();
    assert_eq!(s.generate(&[], 3, &mut Sampler::greedy(), |_| true).unwrap_err(), Error::EmptyPrompt);
    assert!(s.generate(&[1; 65], 1, &mut Sampler::greedy(), |_| true).is_err());
}

// ---------- pool ----------

struct SumArgs {
    sum: AtomicU64,
    calls: AtomicU64,
}

unsafe extern "C" fn sum_kernel(args: *const u8, b: u64, e: u64) {
    let a = unsafe { &*(args as *const SumArgs) };
    a.sum.fetch_add((b..e).sum::<u64>(), Ordering::Relaxed);
    a.calls.fetch_add(1, Ordering::Relaxed);
}

struct MarkArgs<'a>(&'a [AtomicU8]);

unsafe extern "C" fn mark_kernel(args: *const u8, b: u64, e: u64) {
    let a = unsafe { &*(args as *const MarkArgs) };
    for i in b..e {
        a.0[i as usize].fetch_add(1, Ordering::Relaxed);
    }
}

fn run(pool: &ThreadPool, k: edgec_runtime::abi::KernelFn, args: *const u8, n: u64) {
    unsafe { edgec_runtime::pool::edgec_parallel_for(pool.as_context_ptr(), k, args, n) }
}

#[test]
fn pool_sums_match_serial() {
    let n = 1_000_000u64;
    for threads in [1, 2, 4] {
        let pool = ThreadPool::new(threads).unwrap();
        assert_eq!(pool.threads(), threads);
        let a = SumArgs { sum: AtomicU64::new(0), calls: AtomicU64::new(0) };
        run(&pool, sum_kernel, &a as *const _ as *const u8, n);
        assert_eq!(a.sum.load(Ordering::Relaxed), n * (n - 1) / 2);
        assert!(a.calls.load(Ordering::Relaxed) <= threads as u64);
        // n_tasks 0 and 1
        let a = SumArgs { sum: AtomicU64::new(0), calls: AtomicU64::new(0) };
        run(&pool, sum_kernel, &a as *const _ as *const u8, 0);
        assert_eq!(a.calls.load(Ordering::Relaxed), 0);
        run(&pool, sum_kernel, &a as *const _ as *const u8, 1);
        assert_eq!(a.calls.load(Ordering::Relaxed), 1);
        // Every task exactly once, for sizes around the thread count.
        for n in [2u64, 3, 4, 5, 7, 100, 1001] {
            let marks: Vec<AtomicU8> = (0..n).map(|_| AtomicU8::new(0)).collect();
            let m = MarkArgs(&marks);
            run(&pool, mark_kernel, &m as *const _ as *const u8, n);
            assert!(marks.iter().all(|x| x.load(Ordering::Relaxed) == 1), "n={n}");
        }
    }
}

#[test]
fn pool_many_tiny_regions() {
    for threads in [2, 4] {
        let pool = ThreadPool::new(threads).unwrap();
        let a = SumArgs { sum: AtomicU64::new(0), calls: AtomicU64::new(0) };
        let regions = 20_000u64;
        for i in 0..regions {
            run(&pool, sum_kernel, &a as *const _ as *const u8, 8 + i % 3);
        }
        let want: u64 = (0..regions)
            .map(|i| {
                let n = 8 + i % 3;
                n * (n - 1) / 2
            })
            .sum();
        assert_eq!(a.sum.load(Ordering::Relaxed), want);
        // Workers park after spinning; regions after a pause still complete.
        std::thread::sleep(std::time::Duration::from_millis(50));
        run(&pool, sum_kernel, &a as *const _ as *const u8, 10);
        assert_eq!(a.sum.load(Ordering::Relaxed), want + 45);
    }
}

static NESTED_POOL: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn nested_kernel(args: *const u8, b: u64, e: u64) {
    let pool = NESTED_POOL.load(Ordering::SeqCst) as usize as *mut std::ffi::c_void;
    for _ in b..e {
        unsafe { edgec_runtime::pool::edgec_parallel_for(pool, sum_kernel, args, 10) };
    }
}

#[test]
fn pool_nested_regions_run_inline() {
    let pool = ThreadPool::new(2).unwrap();
    NESTED_POOL.store(pool.as_context_ptr() as usize as u64, Ordering::SeqCst);
    let a = SumArgs { sum: AtomicU64::new(0), calls: AtomicU64::new(0) };
    run(&pool, nested_kernel, &a as *const _ as *const u8, 6);
    assert_eq!(a.sum.load(Ordering::Relaxed), 6 * 45);
}

// ---------- sampler ----------

#[test]
fn argmax_first_on_ties() {
    assert_eq!(argmax(&[1.0, 3.0, 2.0, 3.0]), 1);
    assert_eq!(argmax(&[-5.0, -5.0]), 0);
    assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY, -1.0]), 2);
    assert_eq!(argmax(&[0.0, f32::NAN, 9.0]), 1);
}

fn sampler(t: f32, k: usize, p: f32, seed: u64) -> Sampler {
    Sampler::new(SamplerConfig { temperature: t, top_k: k, top_p: p, seed }).unwrap()
}

#[test]
fn sampler_is_deterministic_and_restricted() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 50) as f32 / 10.0).collect();
    let draw = |mut s: Sampler| (0..200).map(|_| s.sample(&logits)).collect::<Vec<_>>();
    let a = draw(sampler(1.0, 0, 1.0, 42));
    assert_eq!(a, draw(sampler(1.0, 0, 1.0, 42)));
    assert_ne!(a, draw(sampler(1.0, 0, 1.0, 43)));
    assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 5, "varied: {a:?}");
    // top_k = 1 is greedy.
    let g = argmax(&logits);
    assert!(draw(sampler(1.5, 1, 1.0, 7)).iter().all(|&t| t == g));
    // top_k = 3 only returns the 3 largest.
    let mut order: Vec<u32> = (0..50).collect();
    order.sort_by(|&x, &y| logits[y as usize].total_cmp(&logits[x as usize]));
    let top3 = &order[..3];
    let d = draw(sampler(5.0, 3, 1.0, 9));
    assert!(d.iter().all(|t| top3.contains(t)));
    assert_eq!(d.iter().collect::<std::collections::HashSet<_>>().len(), 3);
    // top_p: a very peaked distribution with p = 0.5 keeps only the top token.
    let mut peaked = vec![0.0f32; 20];
    peaked[13] = 10.0;
    let mut s = sampler(1.0, 0, 0.5, 1);
    assert!((0..100).all(|_| s.sample(&peaked) == 13));
    // top_p restricts to the smallest prefix reaching the mass: two equal tops at p = 0.6.
    let mut two = vec![-30.0f32; 10];
    two[2] = 5.0;
    two[7] = 5.0;
    let mut s = sampler(1.0, 0, 0.6, 3);
    let d: Vec<u32> = (0..200).map(|_| s.sample(&two)).collect();
    assert!(d.iter().all(|&t| t == 2 || t == 7));
    assert!(d.contains(&2) && d.contains(&7));
    // temperature 0: greedy.
    let mut s = sampler(0.0, 0, 1.0, 3);
    assert_eq!(s.sample(&logits), g);
    // Invalid settings.
    assert!(Sampler::new(SamplerConfig { top_p: 0.0, ..Default::default() }).is_err());
    assert!(Sampler::new(SamplerConfig { temperature: f32::NAN, ..Default::default() }).is_err());
}

#[test]
fn generate_with_sampling_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = session(dir.path(), 1);
    let a = s.generate(&[1, 2], 10, &mut sampler(2.0, 5, 0.9, 11), |_| true).unwrap();
    s.reset();
    let b = s.generate(&[1, 2], 10, &mut sampler(2.0, 5, 0.9, 11), |_| true).unwrap();
    assert_eq!(a, b);
    assert!(a.tokens.iter().all(|&t| t < VOCAB));
}

// ---------- C API ----------

#[test]
fn c_api_rejects_nulls_and_works() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(dir.path(), "w", &weights_bytes());
    let path = CString::new(p.to_str().unwrap()).unwrap();
    let f: edgec_runtime::abi::ForwardFn = fake_forward;
    unsafe {
        let mut s: *mut edgec_session = std::ptr::null_mut();
        assert_eq!(edgec_session_new(&INFO, Some(f), path.as_ptr(), 1, std::ptr::null_mut()), EDGEC_ERR_NULL_ARGUMENT);
        assert_eq!(edgec_session_new(std::ptr::null(), Some(f), path.as_ptr(), 1, &mut s), EDGEC_ERR_NULL_ARGUMENT);
        assert!(c_str(edgec_last_error()).contains("info is NULL"));
        assert_eq!(edgec_session_new(&INFO, None, path.as_ptr(), 1, &mut s), EDGEC_ERR_NULL_ARGUMENT);
        assert_eq!(edgec_session_new(&INFO, Some(f), std::ptr::null(), 1, &mut s), EDGEC_ERR_NULL_ARGUMENT);
        assert!(s.is_null());
        let bad = CString::new(dir.path().join("missing").to_str().unwrap()).unwrap();
        assert_eq!(edgec_session_new(&INFO, Some(f), bad.as_ptr(), 1, &mut s), EDGEC_ERR_IO);
        assert!(c_str(edgec_last_error()).contains("missing"));
        let mut b = weights_bytes();
        b[30] ^= 1;
        let badw = write_file(dir.path(), "bad", &b);
        let badw = CString::new(badw.to_str().unwrap()).unwrap();
        assert_eq!(edgec_session_new(&INFO, Some(f), badw.as_ptr(), 1, &mut s), EDGEC_ERR_WEIGHTS);
        assert!(c_str(edgec_last_error()).contains("content hash"));

        // NULL sessions.
        let mut pos = 0u32;
        let mut logits = vec![0f32; 3 * VOCAB as usize];
        let ids = [1i32, 2, 3];
        assert_eq!(
            edgec_session_forward(std::ptr::null_mut(), ids.as_ptr(), 3, logits.as_mut_ptr()),
            EDGEC_ERR_NULL_ARGUMENT
        );
        assert_eq!(edgec_session_reset(std::ptr::null_mut()), EDGEC_ERR_NULL_ARGUMENT);
        assert_eq!(edgec_session_position(std::ptr::null(), &mut pos), EDGEC_ERR_NULL_ARGUMENT);
        assert_eq!(edgec_session_free(std::ptr::null_mut()), EDGEC_RT_OK);
        assert!(c_str(edgec_session_last_error(std::ptr::null())).contains("session is NULL"));

        assert_eq!(edgec_session_new(&INFO, Some(f), path.as_ptr(), 2, &mut s), EDGEC_RT_OK);
        assert!(!s.is_null());
        assert_eq!(c_str(edgec_session_last_error(s)), "");
        assert_eq!(edgec_session_forward(s, std::ptr::null(), 3, logits.as_mut_ptr()), EDGEC_ERR_NULL_ARGUMENT);
        assert_eq!(edgec_session_forward(s, ids.as_ptr(), 3, std::ptr::null_mut()), EDGEC_ERR_NULL_ARGUMENT);
        assert!(c_str(edgec_session_last_error(s)).contains("logits is NULL"));
        assert_eq!(edgec_session_position(s, std::ptr::null_mut()), EDGEC_ERR_NULL_ARGUMENT);
        assert_eq!(edgec_session_forward(s, ids.as_ptr(), 3, logits.as_mut_ptr()), EDGEC_RT_OK);
        assert_eq!(logits, expected_logits(&[1, 2, 3]));
        assert_eq!(edgec_session_position(s, &mut pos), EDGEC_RT_OK);
        assert_eq!(pos, 3);
        let neg = [-1i32];
        assert_eq!(edgec_session_forward(s, neg.as_ptr(), 1, logits.as_mut_ptr()), EDGEC_ERR_TOKEN_ID);
        let big = [900i32];
        assert_eq!(edgec_session_forward(s, big.as_ptr(), 1, logits.as_mut_ptr()), EDGEC_ERR_TOKEN_ID);
        assert_eq!(c_str(edgec_session_last_error(s)), "token id 900 at index 0 is out of range (vocab 37)");
        let many = [1i32; 62];
        let mut ml = vec![0f32; 62 * VOCAB as usize];
        assert_eq!(edgec_session_forward(s, many.as_ptr(), 62, ml.as_mut_ptr()), EDGEC_ERR_CONTEXT_OVERFLOW);
        assert_eq!(edgec_session_reset(s), EDGEC_RT_OK);
        assert_eq!(edgec_session_position(s, &mut pos), EDGEC_RT_OK);
        assert_eq!(pos, 0);

        // Generate, greedy.
        let prompt = [3i32, 1, 4, 1, 5, 9];
        let mut out = [0i32; 8];
        let mut n = 0u32;
        let mut pl = vec![0f32; 6 * VOCAB as usize];
        assert_eq!(
            edgec_session_generate(
                s,
                prompt.as_ptr(),
                6,
                8,
                std::ptr::null(),
                std::ptr::null_mut(),
                &mut n,
                pl.as_mut_ptr()
            ),
            EDGEC_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            edgec_session_generate(
                s,
                prompt.as_ptr(),
                6,
                8,
                std::ptr::null(),
                out.as_mut_ptr(),
                std::ptr::null_mut(),
                pl.as_mut_ptr()
            ),
            EDGEC_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            edgec_session_generate(
                s,
                prompt.as_ptr(),
                6,
                8,
                std::ptr::null(),
                out.as_mut_ptr(),
                &mut n,
                pl.as_mut_ptr()
            ),
            EDGEC_RT_OK
        );
        assert_eq!(n, 8);
        let want: Vec<i32> = expected_greedy(&[3, 1, 4, 1, 5, 9], 8).iter().map(|&t| t as i32).collect();
        assert_eq!(&out[..], &want[..]);
        assert_eq!(pl, expected_logits(&[3, 1, 4, 1, 5, 9]));
        // Sampled with top_k 1 = greedy; bad params rejected.
        edgec_session_reset(s);
        let params = edgec_sampler_params { temperature: 1.0, top_k: 1, top_p: 1.0, reserved: 0, seed: 5 };
        assert_eq!(
            edgec_session_generate(s, prompt.as_ptr(), 6, 8, &params, out.as_mut_ptr(), &mut n, std::ptr::null_mut()),
            EDGEC_RT_OK
        );
        assert_eq!(&out[..], &want[..]);
        let bad = edgec_sampler_params { top_p: 2.0, ..params };
        assert_eq!(
            edgec_session_generate(s, prompt.as_ptr(), 6, 8, &bad, out.as_mut_ptr(), &mut n, std::ptr::null_mut()),
            EDGEC_ERR_INVALID_ARGUMENT
        );
        assert!(c_str(edgec_session_last_error(s)).contains("top_p"));
        assert_eq!(
            edgec_session_generate(
                s,
                prompt.as_ptr(),
                0,
                8,
                std::ptr::null(),
                out.as_mut_ptr(),
                &mut n,
                std::ptr::null_mut()
            ),
            EDGEC_ERR_INVALID_ARGUMENT
        );
        assert_eq!(edgec_session_free(s), EDGEC_RT_OK);
    }
}

// ---------- driver output ----------

#[test]
fn driver_output_parsing() {
    use edgec_runtime::driver_output::parse_driver_output;
    let mut b = b"EDGECOUT".to_vec();
    for v in [2u32, 3, 2, 0] {
        b.extend(v.to_le_bytes());
    }
    for i in 0..6 {
        b.extend((i as f32 * 0.5).to_le_bytes());
    }
    b.extend(7i32.to_le_bytes());
    b.extend((-1i32).to_le_bytes());
    let o = parse_driver_output(&b).unwrap();
    assert_eq!((o.n_prompt, o.vocab), (2, 3));
    assert_eq!(o.row(1), &[1.5, 2.0, 2.5]);
    assert_eq!(o.generated, vec![7, -1]);
    assert!(parse_driver_output(&b[..b.len() - 1]).unwrap_err().to_string().contains("expected"));
    let mut x = b.clone();
    x.push(0);
    assert!(parse_driver_output(&x).is_err());
    let mut x = b.clone();
    x[0] = b'X';
    assert!(parse_driver_output(&x).unwrap_err().to_string().contains("magic"));
    let mut x = b.clone();
    x[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    x[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    x[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse_driver_output(&x).is_err());
    let mut x = b.clone();
    x[20] = 1;
    assert_eq!(parse_driver_output(&x).unwrap().variant_name(), "dotprod");
    x[20] = 3;
    assert_eq!(parse_driver_output(&x).unwrap().variant_name(), "avx512vnni");
    x[20] = 4;
    assert!(parse_driver_output(&x).unwrap_err().to_string().contains("variant"));
    assert!(parse_driver_output(&b[..10]).is_err());
}

#[test]
fn pool_shared_by_concurrent_callers() {
    // A second dispatcher while a region runs executes inline; every region still completes.
    let pool = ThreadPool::new(3).unwrap();
    let total = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..2000 {
                    let a = SumArgs { sum: AtomicU64::new(0), calls: AtomicU64::new(0) };
                    run(&pool, sum_kernel, &a as *const _ as *const u8, 100);
                    assert_eq!(a.sum.load(Ordering::Relaxed), 4950);
                    total.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(total.load(Ordering::Relaxed), 6000);
}

#[test]
fn session_is_send_and_threads_resolve() {
    fn send<T: Send>() {}
    send::<Session>();
    let dir = tempfile::tempdir().unwrap();
    let s = session(dir.path(), 0);
    assert!(s.threads() >= 1 && s.threads() <= edgec_runtime::pool::MAX_AUTO_THREADS);
    // Moving a session to another thread and using it there.
    let mut s = std::thread::spawn(move || {
        let mut s = s;
        s.forward(&[1, 2, 3], &mut Vec::new()).unwrap();
        s
    })
    .join()
    .unwrap();
    let mut l = Vec::new();
    s.forward(&[4], &mut l).unwrap();
    assert_eq!(l, expected_logits(&[1, 2, 3, 4])[3 * VOCAB as usize..]);
}
