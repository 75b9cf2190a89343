//! The generated entry point trusts no caller (defence in depth, behind the runtime's own
//! checks): each fixture's compiled `NAME_forward`, called directly with a hand-built context,
//! returns the right `STATUS_*` code for NULL arguments, NULL context fields (weights, arena,
//! state, parallel_for), bad token counts, context overflow (without u32 wraparound) and ids
//! that are negative or not below vocab, having written nothing: logits, arena and KV state
//! keep their sentinel bytes. The same context then runs the prompt and matches PyTorch. A
//! general graph's `NAME_run` checks its context the same way.

mod common;
mod compiled;

use common::*;
use compiled::*;
use edgec_runtime::Weights;
use edgec_runtime::abi::*;
use edgec_runtime::mem::AlignedBuf;
use std::ffi::c_void;

/// `Context` with a nullable callback, to pass a NULL `parallel_for` (same layout).
#[repr(C)]
struct RawContext {
    weights: *const u8,
    arena: *mut u8,
    state: *mut u8,
    pool: *mut c_void,
    parallel_for: Option<ParallelForFn>,
}

unsafe extern "C" fn serial(_pool: *mut c_void, kernel: KernelFn, args: *const u8, n_tasks: u64) {
    if n_tasks > 0 {
        unsafe { kernel(args, 0, n_tasks) };
    }
}

fn entry_checks(name: &str) {
    assert_eq!(size_of::<RawContext>(), size_of::<Context>());
    let dir = tempfile::tempdir().unwrap();
    let out = compile_fixture(name, dir.path());
    let model = load(&out);
    let info = *model.info;
    let weights = Weights::open(&weights_path(&out), model.info).unwrap();
    let mut arena = AlignedBuf::zeroed(info.arena_size, "arena").unwrap();
    let mut state = AlignedBuf::zeroed(info.state_size, "state").unwrap();
    arena.as_mut_slice().fill(0x5A);
    state.as_mut_slice().fill(0xA5);
    let good = RawContext {
        weights: weights.as_ptr(),
        arena: arena.as_mut_ptr(),
        state: state.as_mut_ptr(),
        pool: std::ptr::null_mut(),
        parallel_for: Some(serial),
    };
    let vocab = info.vocab as usize;
    let (max_tokens, max_context) = (info.max_tokens, info.max_context);
    assert_eq!((max_tokens, max_context), (8, 64));
    let mut logits = vec![-7.0f32; (max_tokens as usize + 1) * vocab];
    let lp = logits.as_mut_ptr();
    let ids: Vec<i32> = (0..max_tokens as i32 + 1).collect();
    let call = |ctx: *const RawContext, ids: *const i32, n: u32, pos: u32, l: *mut f32| unsafe {
        (model.forward)(ctx.cast::<Context>(), ids, n, pos, l)
    };
    let with = |f: &dyn Fn(&mut RawContext)| {
        let mut c = RawContext { ..good };
        f(&mut c);
        c
    };
    let id = ids.as_ptr();
    let mut cases: Vec<(&str, i32, i32)> = vec![
        ("ctx NULL", call(std::ptr::null(), id, 3, 0, lp), STATUS_NULL_ARGUMENT),
        ("ids NULL", call(&good, std::ptr::null(), 3, 0, lp), STATUS_NULL_ARGUMENT),
        ("logits NULL", call(&good, id, 3, 0, std::ptr::null_mut()), STATUS_NULL_ARGUMENT),
        ("ctx->weights NULL", call(&with(&|c| c.weights = std::ptr::null()), id, 3, 0, lp), STATUS_NULL_ARGUMENT),
        ("ctx->arena NULL", call(&with(&|c| c.arena = std::ptr::null_mut()), id, 3, 0, lp), STATUS_NULL_ARGUMENT),
        ("ctx->state NULL", call(&with(&|c| c.state = std::ptr::null_mut()), id, 3, 0, lp), STATUS_NULL_ARGUMENT),
        ("ctx->parallel_for NULL", call(&with(&|c| c.parallel_for = None), id, 3, 0, lp), STATUS_NULL_ARGUMENT),
        ("0 tokens", call(&good, id, 0, 0, lp), STATUS_BAD_TOKEN_COUNT),
        ("max_tokens + 1", call(&good, id, max_tokens + 1, 0, lp), STATUS_BAD_TOKEN_COUNT),
        ("u32::MAX tokens", call(&good, id, u32::MAX, 0, lp), STATUS_BAD_TOKEN_COUNT),
        ("pos + n > max_context", call(&good, id, 3, max_context - 2, lp), STATUS_CONTEXT_OVERFLOW),
        ("pos = max_context", call(&good, id, 1, max_context, lp), STATUS_CONTEXT_OVERFLOW),
        ("pos = u32::MAX", call(&good, id, 1, u32::MAX, lp), STATUS_CONTEXT_OVERFLOW),
    ];
    let vocab_id = info.vocab as i32;
    for (what, bad) in
        [("id = vocab", vocab_id), ("id = -1", -1), ("id = i32::MIN", i32::MIN), ("id = i32::MAX", i32::MAX)]
    {
        let mut v = ids[..4].to_vec();
        v[3] = bad; // the last one: every id is checked, not just the first
        cases.push((what, call(&good, v.as_ptr(), 4, 0, lp), STATUS_BAD_TOKEN_ID));
    }
    for (what, got, want) in cases {
        assert_eq!(got, want, "{name}: {what}");
    }
    assert!(logits.iter().all(|&x| x == -7.0), "{name}: a refused call wrote logits");
    assert!(arena.as_slice().iter().all(|&b| b == 0x5A), "{name}: a refused call wrote the arena");
    assert!(state.as_slice().iter().all(|&b| b == 0xA5), "{name}: a refused call wrote the KV state");

    // The same context runs: the prompt in chunks of max_tokens gives PyTorch's logits, and
    // nothing is written past the rows asked for. (The state starts as garbage, 0xA5 bytes:
    // attention reads only positions below pos + n, all written by earlier chunks.)
    let r = reference(name);
    let prompt: Vec<i32> = r.input_ids.iter().map(|&i| i as i32).collect();
    let mut all = Vec::new();
    for (k, chunk) in prompt.chunks(max_tokens as usize).enumerate() {
        logits.fill(-7.0);
        let n = chunk.len() as u32;
        let status = call(&good, chunk.as_ptr(), n, (k * max_tokens as usize) as u32, lp);
        assert_eq!(status, STATUS_OK, "{name}: chunk {k}");
        assert!(logits[chunk.len() * vocab..].iter().all(|&x| x == -7.0), "{name}: wrote past the rows");
        all.extend_from_slice(&logits[..chunk.len() * vocab]);
    }
    assert_logits_close(&format!("{name}: direct NAME_forward calls"), &all, &r.logits);
}

#[test]
fn generated_entry_points_validate_their_arguments() {
    for name in FIXTURES {
        entry_checks(name);
    }
}

/// `NAME_run` of a general graph (the Llama fixture's ONNX export, not given the decoder
/// signature) checks its context as `NAME_forward` does: NULL weights, arena or `parallel_for`
/// are refused, having written nothing; then the same context runs and matches PyTorch.
#[test]
fn general_graph_entry_validates_its_context() {
    let dir = fixture("llama");
    let m = edgec_frontend::onnx::OnnxModel::open(&dir.join("model.onnx")).unwrap();
    let opts = edgec_frontend::onnx::ImportOptions { max_seq: 16, ..Default::default() };
    let mut g = edgec_frontend::onnx::import(&m, &opts).unwrap();
    g.name = "llama_run".into();
    edgec::graph_run::general_pipeline().run(&mut g, &mut |_, _| {}).unwrap();
    let c = edgec::graph_run::CompiledGraph::build(&g, None).unwrap();
    let (run, weights, info) = c.host_entry().expect("a host build");
    let mut arena = AlignedBuf::zeroed(info.arena_size, "arena").unwrap();
    arena.as_mut_slice().fill(0x5A);
    let good = RawContext {
        weights,
        arena: arena.as_mut_ptr(),
        state: std::ptr::null_mut(),
        pool: std::ptr::null_mut(),
        parallel_for: Some(serial),
    };
    let r = reference("llama");
    let ids: Vec<i32> = r.input_ids.iter().map(|&i| i as i32).collect();
    let n = ids.len();
    let vocab = r.logits.len() / n;
    let mut logits = vec![-7.0f32; n * vocab];
    let inputs = [ids.as_ptr().cast::<c_void>()];
    let outputs = [logits.as_mut_ptr().cast::<c_void>()];
    let dims = [n as i64];
    let call = |ctx: &RawContext| unsafe {
        run(std::ptr::from_ref(ctx).cast::<Context>(), inputs.as_ptr(), outputs.as_ptr(), dims.as_ptr())
    };
    let with = |f: &dyn Fn(&mut RawContext)| {
        let mut ctx = RawContext { ..good };
        f(&mut ctx);
        ctx
    };
    for (what, ctx) in [
        ("ctx->weights NULL", with(&|c| c.weights = std::ptr::null())),
        ("ctx->arena NULL", with(&|c| c.arena = std::ptr::null_mut())),
        ("ctx->parallel_for NULL", with(&|c| c.parallel_for = None)),
    ] {
        assert_eq!(call(&ctx), STATUS_NULL_ARGUMENT, "{what}");
    }
    assert!(logits.iter().all(|&x| x == -7.0), "a refused call wrote the outputs");
    assert!(arena.as_slice().iter().all(|&b| b == 0x5A), "a refused call wrote the arena");
    assert_eq!(call(&good), STATUS_OK);
    assert_logits_close("direct NAME_run call", &logits, &r.logits);
}
