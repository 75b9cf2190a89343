//! Kernels reading stored weights (f16, bf16, int8, int4; `edgec_ir::quant`) against the
//! reference interpreter, which runs the same graph on the dequantized values: `gather` from a
//! stored table and `matmul` (`transpose_b`) with a stored weight, on odd sizes, with every row
//! tile (2-row, leftover row) and column tile (4-column, leftover column) exercised. Matmuls
//! with int8 activations (`qdot.rs`) read rows they quantize exactly (`int8_grid`); their
//! rounding of arbitrary rows is checked in `qdot.rs`.

mod common;
use common::*;
use edgec_ir::{Op, Storage};

const MT: u64 = 7;

/// `ids → gather(table[V, K] as table_s) → matmul(·, w[N, K]ᵀ as w_s) → matmul(·, head[V, N]ᵀ)`.
fn run(v: u64, k: u64, n: u64, table_s: Storage, w_s: Storage, seed: u64) {
    let mut b = GB::new("q", MT, seed);
    // An f32 table feeds the matmul rows the int8-activation kernel quantizes exactly
    // (`int8_grid`), so it is checked against the interpreter to f32 rounding too.
    let table = if table_s == Storage::F32 {
        let rows = int8_grid(&mut b.rng, v, k);
        b.weight_data("table", &[v, k], rows)
    } else {
        b.weight("table", &[v, k], -1.0, 1.0)
    };
    let w = b.weight("w", &[n, k], -0.5, 0.7);
    let head = b.weight("head", &[v, n], -0.5, 0.5);
    if table_s != Storage::F32 {
        quantize(&mut b, table, table_s);
    }
    if w_s != Storage::F32 {
        quantize(&mut b, w, w_s);
    }
    let ids = b.ids;
    let x = b.node(Op::Gather, vec![table, ids]);
    let y = b.node(Op::MatMul { transpose_b: true }, vec![x, w]);
    let out = b.node(Op::MatMul { transpose_b: true }, vec![y, head]);
    let g = b.finish(out);
    edgec_ir::verify::verify(&g).unwrap();
    // The interpreter sums dequantized products; the kernels fuse multiply-adds and apply
    // q8_c's row scale after the sum: a few f32 ulps over K terms.
    check_against_reference(g, &tile_calls(v as i32), 2e-4);
}

#[test]
fn half_and_q8_c_any_row_length() {
    for (i, s) in [Storage::F16, Storage::BF16, Storage::Q8C].into_iter().enumerate() {
        for (k, n) in [(172u64, 13u64), (13, 5), (3, 9), (8, 4), (64, 17)] {
            let seed = 10 * i as u64 + k;
            // A stored table with a stored weight reaches the f32-activation kernel only when
            // the weight has no int8 twin (`q8_c` with K = 64 has one: its rows come from an
            // f32 table instead, exact in int8).
            let table = if s == Storage::Q8C && k % 32 == 0 { Storage::F32 } else { s };
            run(11, k, n, table, s, seed);
        }
    }
}

#[test]
fn grouped_int8_and_int4() {
    let formats = [
        Storage::Q8G { group: 32 },
        Storage::Q8G { group: 64 },
        Storage::Q4G { group: 32, min: false },
        Storage::Q4G { group: 32, min: true },
        Storage::Q4G { group: 64, min: true },
        Storage::Q4G { group: 128, min: true },
        Storage::Q4G { group: 128, min: false },
    ];
    for (i, s) in formats.into_iter().enumerate() {
        for (k, n) in [(128u64, 13u64), (256, 4), (128, 1)] {
            // The matmul takes int8 activations: its rows come from an f32 table (exact in
            // int8); the stored table feeds an f32 matmul.
            run(9, k, n, Storage::F32, s, 100 + 10 * i as u64 + n);
            run(9, k, n, s, Storage::F32, 200 + 10 * i as u64 + n);
        }
    }
}

#[test]
fn stored_table_with_f32_matmul_and_back() {
    run(10, 96, 6, Storage::Q4G { group: 32, min: true }, Storage::F32, 7);
    run(10, 96, 6, Storage::F32, Storage::Q8C, 8);
}

#[test]
fn quantized_weights_file_is_smaller_and_hashed_differently() {
    let mk = |s: Option<Storage>| {
        let mut b = GB::new("q", MT, 3);
        let table = b.weight("table", &[16, 256], -1.0, 1.0);
        if let Some(s) = s {
            quantize(&mut b, table, s);
        }
        let ids = b.ids;
        let x = b.node(Op::Gather, vec![table, ids]);
        let head = b.weight("head", &[16, 256], -0.5, 0.5);
        let out = b.node(Op::MatMul { transpose_b: true }, vec![x, head]);
        b.finish(out)
    };
    let dir = std::env::temp_dir().join(format!("edgec-quant-wf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (l32, h32, _) = weights_file(&mk(None), &dir);
    let (l4, h4, _) = weights_file(&mk(Some(Storage::Q4G { group: 32, min: true })), &dir);
    assert_ne!(h32, h4);
    // The table shrinks from 16 KiB to 16 × 8 groups × 20 bytes.
    assert_eq!(l32.file_size - l4.file_size, 16 * 256 * 4 - 16 * 8 * 20);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stored_weight_in_another_op_is_refused() {
    let mut b = GB::new("q", MT, 3);
    let table = b.weight("table", &[8, 8], -1.0, 1.0);
    let bias = b.weight("bias", &[8, 8], -1.0, 1.0);
    quantize(&mut b, bias, Storage::F16);
    let ids = b.ids;
    let x = b.node(Op::Gather, vec![table, ids]);
    let y = b.node(Op::MatMul { transpose_b: false }, vec![x, bias]);
    let g = b.finish(y);
    let plan = test_plan(&g);
    let layout = edgec_backend::layout_weights(&g, Default::default()).unwrap();
    let info = edgec_backend::model_info(&g, &plan, &layout, [0; 32]).unwrap();
    let opts = edgec_backend::CompileOptions::new(x86(), "q");
    let e = edgec_backend::emit_object(&g, &plan, &layout, &info, &opts).unwrap_err().to_string();
    assert!(e.contains("stored as f16") && e.contains("only matmul (transpose_b) and linear weights"), "{e}");
}
