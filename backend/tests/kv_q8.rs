//! q8 KV cache (`--kv-dtype q8`): `cache_write` quantizes each row in blocks of 32 (ggml's
//! Q8_0: an f16 scale and 32 int8 codes), `attention` decodes them in registers. The reference
//! interpreter encodes with `edgec_ir::quant`'s `q8_g32` encoder, so the state's bytes are
//! checked bit for bit against that encoder (and the interpreter's state against their
//! decoding) on values chosen to hit every case (ties, a zero block, subnormal and saturated
//! scales), on x86_64 and on aarch64 under qemu; then Llama graphs with q8 caches (heads
//! aligned to blocks, inside one, across two, and a head_dim that is not a multiple of 4)
//! against the interpreter.

mod common;
use common::*;
use edgec_ir::interp::{Interpreter, Tensor};
use edgec_ir::quant::{KvDtype, apply_kv_dtype, decode, encode};
use edgec_ir::{Graph, Op, Storage};

const Q8: Storage = Storage::Q8G { group: 32 };

/// Blocks of 32 values around every case of the encoder.
fn special_blocks() -> Vec<Vec<f32>> {
    let p = |e: i32| 2f32.powi(e);
    let mut blocks = Vec::new();
    // Scale exactly 1: codes are the values rounded, ties away from zero.
    let mut ties = vec![127.0, -127.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5, 0.49999997, -0.49999997];
    ties.extend([3.5, 4.5, 0.0, -0.0, 1.0, 63.5, -64.5, 0.75, -0.25, 99.49999, 100.5, -7.5]);
    while ties.len() < 32 {
        let k = ties.len() as f32;
        ties.push(if k as i32 % 2 == 0 { k + 0.5 } else { -(k + 0.5) });
    }
    blocks.push(ties);
    blocks.push(vec![0.0; 32]);
    // The scale rounds to the smallest subnormal half, to zero, and to a subnormal.
    blocks.push((0..32).map(|i| if i == 3 { 127.0 * p(-24) } else { (i as f32) * p(-30) }).collect());
    blocks.push((0..32).map(|i| (i as f32 - 16.0) * 1e-9).collect());
    blocks.push((0..32).map(|i| (i as f32 - 7.0) * 3e-7).collect());
    // Saturated scales: max|x| / 127 past the largest half, and far past it.
    blocks.push((0..32).map(|i| if i == 0 { 65519.0 * 127.0 } else { i as f32 * 1e5 }).collect());
    blocks.push((0..32).map(|i| if i == 5 { -1e10 } else { (i as f32 - 9.0) * 3e8 }).collect());
    blocks.push((0..32).map(|i| if i == 1 { f32::MAX } else { -(i as f32) }).collect());
    // A scale that is not a half: codes from the rounded scale.
    blocks.push((0..32).map(|i| (i as f32 * 0.37).sin() * 0.1).collect());
    blocks
}

/// `n` rows of `w` values: the special blocks, then random magnitudes across 2^-20..2^20.
fn table_rows(n: usize, w: usize) -> Vec<f32> {
    let mut all: Vec<f32> = special_blocks().concat();
    let mut rng = Rng::new(11);
    while all.len() < n * w {
        let e = rng.f32(-20.0, 20.0);
        let s = if rng.next_u32() % 2 == 0 { 1.0 } else { -1.0 };
        // Some blocks of one magnitude, some mixed.
        let scale = if (all.len() / 32) % 2 == 0 { 2f32.powf(e) } else { 2f32.powf(rng.f32(-3.0, 3.0)) };
        all.push(s * scale * rng.f32(0.0, 1.0));
    }
    all.truncate(n * w);
    all
}

const CONTEXT: u64 = 6;

/// Rows of a `[w, w]` table (the logits are `w` wide, so ids range over `w` rows) written to two q8 states (`k`, `v`) through `cache_write`; a zero query over
/// `w / head_dim` heads attends to them, so at position 0 the output is the cache row as the
/// kernel decodes it.
fn readback_graph(w: u64, head_dim: u32) -> Graph {
    let mut b = GB::new("kv_q8", 4, 1);
    let table = b.weight_data("table", &[w, w], table_rows(w as usize, w as usize));
    let (ids, pos) = (b.ids, b.pos);
    let kst = b.state("k", CONTEXT, w);
    let vst = b.state("v", CONTEXT, w);
    let x = b.node(Op::Gather, vec![table, ids]);
    let kc = b.node(Op::CacheWrite, vec![kst, x, pos]);
    let vc = b.node(Op::CacheWrite, vec![vst, x, pos]);
    let zero = b.weight_data("zero", &[], vec![0.0]);
    let q = b.node(Op::Binary(edgec_ir::BinaryOp::Mul), vec![x, zero]);
    let heads = (w / u64::from(head_dim)) as u32;
    let att = Op::Attention { heads, kv_heads: heads, head_dim, scale: 1.0, window: None };
    let y = b.node(att, vec![q, kc, vc, pos]);
    let mut g = b.finish(y);
    assert_eq!(apply_kv_dtype(&mut g, KvDtype::Q8).unwrap(), 2);
    edgec_ir::verify::verify(&g).unwrap();
    g
}

/// The table rows each call writes, as the state's rows after all calls.
fn expected_rows(w: u64, calls: &[(Vec<i32>, u32)]) -> Vec<f32> {
    let table = table_rows(w as usize, w as usize);
    let w = w as usize;
    let mut rows = vec![0f32; CONTEXT as usize * w];
    for (ids, pos) in calls {
        for (r, &id) in ids.iter().enumerate() {
            let at = (*pos as usize + r) * w;
            rows[at..at + w].copy_from_slice(&table[id as usize * w..(id as usize + 1) * w]);
        }
    }
    rows
}

/// The encoder's bytes for the state (rows never written stay zero bytes, as the kernel's),
/// with values past the kernel's saturated scale clamped as the interpreter clamps them.
fn expected_bytes(w: u64, calls: &[(Vec<i32>, u32)]) -> Vec<u8> {
    let rows = expected_rows(w, calls);
    let written: Vec<bool> = (0..CONTEXT as usize)
        .map(|r| calls.iter().any(|(ids, pos)| (*pos as usize..*pos as usize + ids.len()).contains(&r)))
        .collect();
    let mut out = Vec::new();
    for (r, row) in rows.chunks_exact(w as usize).enumerate() {
        if written[r] {
            let clamped: Vec<f32> = row.iter().map(|v| v.clamp(-65504.0 * 127.0, 65504.0 * 127.0)).collect();
            out.extend(encode(Q8, 1, w, &clamped).unwrap());
        } else {
            out.extend(vec![0u8; (w / 32 * 34) as usize]);
        }
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The two states' bytes out of a state block laid out by `test_plan`.
fn states_of(block: &[u8], w: u64) -> [&[u8]; 2] {
    let bytes = (CONTEXT * w / 32 * 34) as usize;
    let second = edgec_passes::plan::align_up(bytes as u64).unwrap() as usize;
    [&block[..bytes], &block[second..second + bytes]]
}

fn check_readback(w: u64, head_dim: u32) {
    let g = readback_graph(w, head_dim);
    let calls: Vec<(Vec<i32>, u32)> = vec![(vec![0, 1, 2, 3], 0), (vec![7, 11], 4), (vec![4, 5, 6], 1)];
    let want_bytes = expected_bytes(w, &calls);
    // Sanity: the special cases are in there (a tie rounded away from zero: 2.5 -> 3).
    assert_eq!(&want_bytes[..2], &[0x00, 0x3c], "f16 1.0");
    assert_eq!(want_bytes[2 + 6] as i8, 3);

    let model = compile(g.clone());
    for chunk in [0u64, 1, 3] {
        let mut interp = Interpreter::new(&g).unwrap();
        let mut s = model.session(chunk);
        for (c, (ids, pos)) in calls.iter().enumerate() {
            let want =
                interp.run(&[Tensor::i32(vec![ids.len()], ids.clone()), Tensor::scalar_i32(*pos as i32)]).unwrap()[0]
                    .as_f32()
                    .unwrap()
                    .to_vec();
            let got = s.run(ids, *pos).unwrap();
            if *pos == 0 {
                // Row 0 attends to itself only: the decoded row, bit for bit.
                let w = w as usize;
                assert_eq!(bits(&got[..w]), bits(&want[..w]), "w {w} call {c} chunk {chunk}: row 0 read back");
            }
            assert_close(&got, &want, 1e-5, &format!("w {w} call {c} chunk {chunk}"));
        }
        for (i, st) in states_of(s.state.bytes(), w).into_iter().enumerate() {
            assert!(st == want_bytes.as_slice(), "w {w} chunk {chunk}: state {i}'s bytes differ from the encoder's");
            let decoded = decode(Q8, CONTEXT, w, st).unwrap();
            let held = interp.state(i).unwrap().as_f32().unwrap();
            assert_eq!(bits(held), bits(&decoded), "w {w}: the interpreter holds the decoded bytes");
        }
    }
    if !(have("aarch64-linux-gnu-gcc") && have("qemu-aarch64")) {
        eprintln!("skipping aarch64: aarch64-linux-gnu-gcc or qemu-aarch64 not on PATH");
        return;
    }
    let (_, state) = run_aarch64_with_state(&g, &calls);
    for (i, st) in states_of(&state, w).into_iter().enumerate() {
        assert!(st == want_bytes.as_slice(), "w {w} aarch64: state {i}'s bytes differ from the encoder's");
    }
}

#[test]
fn q8_cache_bytes_equal_the_encoders_bit_for_bit() {
    // One head over whole blocks (the aligned path), heads inside a block, heads across block
    // boundaries, and a head_dim that is not a multiple of 4.
    for (w, head_dim) in [(96, 96), (96, 16), (96, 12), (64, 32), (96, 6)] {
        check_readback(w, head_dim);
    }
}

#[test]
fn llama_with_q8_kv_matches_the_reference_on_x86_and_aarch64() {
    let cfgs = [
        // The llama fixture's shape: KV width 32, two heads of 16 inside one block.
        LlamaCfg { head_dim: 16, rotary_dim: 16, ..LlamaCfg::default() },
        // Heads of whole blocks.
        LlamaCfg { head_dim: 32, rotary_dim: 32, max_context: 40, ..LlamaCfg::default() },
        // Heads of 12 across block boundaries, grouped-query.
        LlamaCfg { heads: 8, kv_heads: 8, head_dim: 12, rotary_dim: 12, ..LlamaCfg::default() },
        // Whole-block heads in GQA groups of 4: one task decodes each KV row for four heads.
        LlamaCfg { heads: 8, kv_heads: 2, head_dim: 32, rotary_dim: 32, max_context: 40, ..LlamaCfg::default() },
        // Heads of 12 in groups of 4: each chunk decoded alone, by index.
        LlamaCfg { heads: 32, kv_heads: 8, head_dim: 12, rotary_dim: 12, ..LlamaCfg::default() },
    ];
    for (n, c) in cfgs.into_iter().enumerate() {
        let mut g = llama_graph(c, 21);
        assert_eq!(apply_kv_dtype(&mut g, KvDtype::Q8).unwrap(), 2 * c.layers);
        edgec_ir::verify::verify(&g).unwrap();
        let calls: Vec<(Vec<i32>, u32)> = vec![(vec![3, 17, 42, 0, 49], 0), (vec![7], 5), (vec![11, 12, 13], 6)];
        // The interpreter quantizes the caches exactly as the kernels do; the rows it quantizes
        // differ from the kernels' by f32 summation order, which can move a code by one step.
        let x86 = check_against_reference(g.clone(), &calls, 2e-3).concat();
        if !(have("aarch64-linux-gnu-gcc") && have("qemu-aarch64")) {
            eprintln!("skipping aarch64: aarch64-linux-gnu-gcc or qemu-aarch64 not on PATH");
            continue;
        }
        assert_close(&run_aarch64(&g, &calls), &x86, 2e-3, &format!("config {n}: q8 KV: aarch64 vs x86_64"));
    }
}

#[test]
fn q8_needs_rows_of_whole_blocks() {
    // KV width 16 (two heads of 8): refused, naming the state, and nothing changes.
    let mut g = llama_graph(LlamaCfg::default(), 3);
    let before = g.clone();
    let e = apply_kv_dtype(&mut g, KvDtype::Q8).unwrap_err().message;
    assert!(e.contains("'l0.k'") && e.contains("whole blocks of 32") && e.contains("16 wide"), "{e}");
    assert_eq!(g, before);
    // The verifier refuses such a state in a graph's text too.
    let mut g = llama_graph(LlamaCfg::default(), 3);
    g.states[0].ty.dtype = edgec_ir::DType::Q8;
    let e = edgec_ir::verify::verify(&g).unwrap_err().message;
    assert!(e.contains("state 'l0.k'") && e.contains("whole blocks of 32"), "{e}");
}
