//! The int8-activation matmul (`kernels/qdot.rs`) on x86_64, for every weight layout it takes
//! (`q8_c`, `q8_gG`, `q4s_gG`, `q4_gG`), against a reference computed here in f64: each
//! activation row quantized to int8 blocks of 32 as the kernel documents (scale = block
//! max |x| / 127, codes = x · (127 / max) rounded to nearest even), times the dequantized
//! weights (`edgec_ir::quant::decode`). The integer part is exact in the kernel, so only f32
//! rounding of the scales and the block sums separates it from the reference. Every CPU-feature
//! variant this machine runs must give the same bits as `NAME_forward`, and the variants'
//! kernels must really be `vpdpbusd`.

mod common;
use common::*;
use edgec_ir::{Op, Storage};

const MT: u64 = 7;

/// The kernel's activation quantization, spelled out: per block of 32, `(scale, codes)`.
fn quantize_row(x: &[f32]) -> Vec<(f32, Vec<i32>)> {
    x.chunks_exact(32)
        .map(|blk| {
            let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            (amax / 127.0, blk.iter().map(|&v| (v * inv).round_ties_even() as i32).collect())
        })
        .collect()
}

/// `ids → gather(table[N, K]) → matmul(·, w[N, K]ᵀ stored as st)` (the table has a row per
/// output column, as the decoder contract's vocab asks); returns the graph, the table and the
/// dequantized weight. `tied`: the table is `w` itself (tied embeddings), so the gather reads
/// the packed weight too, and the table returned is the dequantized weight.
fn graph(k: u64, n: u64, st: Storage, seed: u64, tied: bool) -> (edgec_ir::Graph, Vec<f32>, Vec<f32>) {
    let mut b = GB::new("qd", MT, seed);
    let mut table = b.rng.vec((n * k) as usize, -1.0, 1.0);
    // A zero block (scale 0) and a large one.
    table[..32].iter_mut().for_each(|x| *x = 0.0);
    if let Some(t) = table.get_mut(k as usize..k as usize + 32) {
        t.iter_mut().for_each(|x| *x *= 50.0);
    }
    let wv = if tied { table.clone() } else { b.rng.vec((n * k) as usize, -0.5, 0.7) };
    let deq = edgec_ir::quant::decode(st, n, k, &edgec_ir::quant::encode(st, n, k, &wv).unwrap()).unwrap();
    let w = b.weight_data("w", &[n, k], wv);
    quantize(&mut b, w, st);
    let t = if tied { w } else { b.weight_data("table", &[n, k], table.clone()) };
    let ids = b.ids;
    let x = b.node(Op::Gather, vec![t, ids]);
    let y = b.node(Op::MatMul { transpose_b: true }, vec![x, w]);
    (b.finish(y), if tied { deq.clone() } else { table }, deq)
}

fn check(k: u64, n: u64, st: Storage, seed: u64) {
    check_graph(k, n, st, seed, false);
}

fn check_graph(k: u64, n: u64, st: Storage, seed: u64, tied: bool) {
    let (g, table, deq) = graph(k, n, st, seed, tied);
    let m = compile(g);
    let (k, n) = (k as usize, n as usize);
    let blocks: Vec<Vec<(f32, Vec<i32>)>> = table.chunks_exact(k).map(quantize_row).collect();
    for chunk in [0, 3] {
        let mut s = m.session(chunk);
        for (ids, pos) in tile_calls(n as i32) {
            let got = s.run(&ids, pos).unwrap();
            for (r, &id) in ids.iter().enumerate() {
                for c in 0..n {
                    let w = &deq[c * k..(c + 1) * k];
                    let (mut want, mut mag) = (0f64, 0f64);
                    for (j, (d, q)) in blocks[id as usize].iter().enumerate() {
                        for (i, &qi) in q.iter().enumerate() {
                            let t = f64::from(*d) * f64::from(qi) * f64::from(w[32 * j + i]);
                            want += t;
                            mag += t.abs();
                        }
                    }
                    let g = f64::from(got[r * n + c]);
                    // f32 rounding of the scale products and of K/4 lane sums.
                    assert!(
                        (g - want).abs() <= 1e-5 * mag + 1e-30,
                        "{} k={k} n={n}: row {r} (id {id}) col {c}: got {g}, want {want} (Σ|terms| {mag})",
                        st.name()
                    );
                }
            }
        }
    }
}

#[test]
fn int8_weights() {
    for (i, st) in [Storage::Q8C, Storage::Q8G { group: 32 }, Storage::Q8G { group: 64 }].into_iter().enumerate() {
        for (k, n) in [(64u64, 12u64), (128, 4), (192, 8)] {
            if k.is_multiple_of(st.group().unwrap_or(32)) {
                check(k, n, st, 10 * i as u64 + n);
            }
        }
    }
}

#[test]
fn int4_weights() {
    let formats = [
        Storage::Q4G { group: 32, min: false },
        Storage::Q4G { group: 32, min: true },
        Storage::Q4G { group: 64, min: true },
        Storage::Q4G { group: 128, min: false },
        Storage::Q4G { group: 128, min: true },
    ];
    for (i, st) in formats.into_iter().enumerate() {
        for (k, n) in [(128u64, 12u64), (256, 4), (128, 8)] {
            check(k, n, st, 100 + 10 * i as u64 + n);
        }
    }
}

/// Wide outputs get wide tasks (one row would otherwise be quantized per 16 columns): 64
/// columns per task for 772 (the last task a single quad of columns), 128 for 1604 (the last
/// 17 quads).
#[test]
fn wide_tasks() {
    check(64, 772, Storage::Q4G { group: 32, min: false }, 7);
    check(64, 1604, Storage::Q8C, 8);
}

/// A table that is also the matmul's weight (tied embeddings) is packed for the matmul, and
/// the gather unpacks the rows it reads.
#[test]
fn tied_table_gathers_from_packed_rows() {
    for st in [Storage::Q8C, Storage::Q8G { group: 64 }, Storage::Q4G { group: 32, min: true }] {
        check_graph(128, 12, st, 5, true);
    }
}

/// Baseline and every VNNI variant this CPU runs: the same bits (the integer lanes are exact
/// and the float formula is shared). Both variants' kernels are `vpdpbusd` (VEX for
/// `avxvnni`, EVEX for `avx512vnni`), the baseline's are not.
#[test]
fn variants_are_bit_identical_and_use_vpdpbusd() {
    let formats = [
        Storage::Q8C,
        Storage::Q8G { group: 32 },
        Storage::Q4G { group: 32, min: false },
        Storage::Q4G { group: 64, min: true },
    ];
    for st in formats {
        let (g, _, _) = graph(128, 12, st, 3, false);
        let m = compile(g);
        let cpu = [
            ("avxvnni", std::arch::is_x86_feature_detected!("avxvnni")),
            ("avx512vnni", {
                std::arch::is_x86_feature_detected!("avx512vl") && std::arch::is_x86_feature_detected!("avx512vnni")
            }),
        ];
        for (variant, runs_here) in cpu {
            let sym = format!("model_forward_{variant}");
            let f = m.entry(sym.as_bytes()).unwrap_or_else(|| panic!("no {sym}"));
            if !runs_here {
                eprintln!("{}: this CPU has no {variant}; not run", st.name());
                continue;
            }
            let mut s = m.session(0);
            for (ids, pos) in tile_calls(12) {
                let base = s.run(&ids, pos).unwrap();
                let var = s.run_entry(f, &ids, pos).unwrap();
                assert!(
                    base.iter().zip(&var).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} {variant}: {base:?} vs {var:?}",
                    st.name()
                );
            }
        }
        if have("objdump") {
            let o = m.dir.path().join("model.o");
            let d = std::process::Command::new("objdump").arg("-d").arg(&o).output().unwrap();
            let text = String::from_utf8_lossy(&d.stdout);
            let func = |suffix: &str| {
                let start = text.find(&format!("_{suffix}>:")).unwrap_or_else(|| panic!("no kernel *_{suffix}"));
                let body = &text[start..];
                body[..body.find("\n\n").unwrap_or(body.len())].to_string()
            };
            let vex = func("avxvnni");
            let evex = func("avx512vnni");
            assert!(vex.contains("{vex} vpdpbusd"), "avxvnni kernel:\n{vex}");
            assert!(evex.contains("vpdpbusd") && !evex.contains("{vex}"), "avx512vnni kernel:\n{evex}");
            let base = &text[text.find("_matmul_t_i8>:").unwrap()..];
            let base = &base[..base.find("\n\n").unwrap_or(base.len())];
            assert!(!base.contains("vpdpbusd") && base.contains("pmaddwd"), "baseline kernel:\n{base}");
        }
    }
}
