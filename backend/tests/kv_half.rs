//! f16 KV cache (`--kv-dtype f16`): `cache_write` rounds f32 rows to f16 with integer
//! operations, `attention` widens them back. The reference interpreter rounds with the `half`
//! crate, so the rounding is checked bit for bit on values chosen to hit every case (ties to
//! even, subnormal halves, underflow, saturation); then the Llama graph with f16 caches against
//! the interpreter, on x86_64 and on aarch64 under qemu.

mod common;
use common::*;
use edgec_ir::quant::{KvDtype, apply_kv_dtype};
use edgec_ir::{Graph, Op};

/// Values around every f16 rounding case, and both signs of each.
fn tricky_values() -> Vec<f32> {
    let p = |e: i32| 2f32.powi(e);
    let mut v = vec![
        0.0,
        1.0,
        1.0 + p(-11),       // a tie: rounds down to the even 1.0
        1.0 + 3.0 * p(-11), // a tie: rounds up to the even 1 + 2^-9
        1.0 + p(-11) + p(-20),
        p(-14),          // smallest normal half
        p(-14) - p(-25), // rounds up to the smallest normal
        p(-24),          // smallest subnormal half
        3.0 * p(-25),    // a tie between subnormals: to even (2^-23)
        p(-25),          // a tie with zero: to even (0)
        p(-25) + p(-30), // just above: the smallest subnormal
        1e-8,            // underflows to 0
        65504.0,         // largest half
        65519.0,         // rounds to 65504
        65520.0,         // would round to inf: saturates
        1e6,
        f32::MAX,
        0.1,
        1.0 / 3.0,
        2049.0, // a tie at integer spacing 2: to even 2048
        2051.0, // a tie: to even 2052
    ];
    let neg: Vec<f32> = v.iter().map(|x| -x).collect();
    v.extend(neg);
    v
}

/// One token at position 0 attends to itself only, so the attention output is the cache row
/// as the kernel reads it back: the f16 rounding of the table row, exactly.
fn readback_graph(values: &[f32]) -> Graph {
    let w = values.len() as u64;
    let mut b = GB::new("kv_round", 1, 1);
    // Row i of the table is the values rotated by i, so each id writes a different row.
    let data: Vec<f32> =
        (0..w as usize).flat_map(|i| (0..w as usize).map(move |j| values[(i + j) % w as usize])).collect();
    let table = b.weight_data("table", &[w, w], data);
    let (ids, pos) = (b.ids, b.pos);
    let kst = b.state("k", 4, w);
    let vst = b.state("v", 4, w);
    let x = b.node(Op::Gather, vec![table, ids]);
    let kc = b.node(Op::CacheWrite, vec![kst, x, pos]);
    let vc = b.node(Op::CacheWrite, vec![vst, x, pos]);
    // A zero query (its one score is 0 whatever the keys hold).
    let zero = b.weight_data("zero", &[], vec![0.0]);
    let q = b.node(Op::Binary(edgec_ir::BinaryOp::Mul), vec![x, zero]);
    let att = Op::Attention { heads: 1, kv_heads: 1, head_dim: w as u32, scale: 1.0, window: None };
    let y = b.node(att, vec![q, kc, vc, pos]);
    let mut g = b.finish(y);
    assert_eq!(apply_kv_dtype(&mut g, KvDtype::F16).unwrap(), 2);
    edgec_ir::verify::verify(&g).unwrap();
    g
}

#[test]
fn f16_rounding_matches_ieee_bit_for_bit() {
    let mut values = tricky_values();
    // Pad with random magnitudes across the whole half range to a multiple of 8 plus a tail of 3,
    // so both the 8-wide and the scalar conversion run.
    let mut rng = Rng::new(7);
    while values.len() % 8 != 3 || values.len() < 64 {
        let e = rng.f32(-26.0, 17.0);
        let s = if rng.next_u32() % 2 == 0 { 1.0 } else { -1.0 };
        values.push(s * 2f32.powf(e));
    }
    let g = readback_graph(&values);
    let w = values.len() as i32;
    let calls: Vec<(Vec<i32>, u32)> = (0..3).map(|i| (vec![i * 5 % w], 0)).collect();
    // Tolerance 0: the kernel's rounding equals the `half` crate's on every value.
    check_against_reference(g, &calls, 0.0);
}

#[test]
fn llama_with_f16_kv_matches_the_reference_on_x86_and_aarch64() {
    let mut g = llama_graph(LlamaCfg::default(), 21);
    apply_kv_dtype(&mut g, KvDtype::F16).unwrap();
    edgec_ir::verify::verify(&g).unwrap();
    let calls: Vec<(Vec<i32>, u32)> = vec![(vec![3, 17, 42, 0, 49], 0), (vec![7], 5), (vec![11, 12, 13], 6)];
    // The interpreter rounds the caches exactly as the kernels do: only f32 summation order
    // differs.
    let x86 = check_against_reference(g.clone(), &calls, 1e-4).concat();
    if !(have("aarch64-linux-gnu-gcc") && have("qemu-aarch64")) {
        eprintln!("skipping aarch64: aarch64-linux-gnu-gcc or qemu-aarch64 not on PATH");
        return;
    }
    assert_close(&run_aarch64(&g, &calls), &x86, 1e-4, "f16 KV: aarch64 vs x86_64");
}
