//! Block-quantized weight sources and weight transforms: dequantization per ggml's format
//! definitions (`ggml-common.h`), permutations, and the verifier's checks on both.

use edgec_ir::weights::{apply_transforms, dequantize_blocks, materialize_f32};
use edgec_ir::*;

fn f16(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

#[test]
fn q8_0_block_is_scale_times_signed_bytes() {
    // d = 0.5, q = -16..16
    let mut b = f16(0.5).to_vec();
    b.extend((0..32).map(|i| (i as i8 - 16) as u8));
    let mut out = Vec::new();
    dequantize_blocks(BlockFormat::Q8_0, &b, &mut out).unwrap();
    let want: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
    assert_eq!(out, want);
}

#[test]
fn q4_0_block_low_nibbles_first_then_high_nibbles_minus_8() {
    // d = 2; byte j = (15 - j % 16) << 4 | j % 16: element j is j - 8, element 16 + j is 7 - j.
    let mut b = f16(2.0).to_vec();
    b.extend((0..16u8).map(|j| ((15 - j) << 4) | j));
    let mut out = Vec::new();
    dequantize_blocks(BlockFormat::Q4_0, &b, &mut out).unwrap();
    let mut want: Vec<f32> = (0..16).map(|j| (j as f32 - 8.0) * 2.0).collect();
    want.extend((0..16).map(|j| (7.0 - j as f32) * 2.0));
    assert_eq!(out, want);
}

#[test]
fn q4_1_block_is_scale_times_nibble_plus_min() {
    // Two blocks: d = 0.25, m = -1 and d = 1.5, m = 3; byte j = 0x?j with high nibble 15 - j.
    let mut b = Vec::new();
    for (d, m) in [(0.25f32, -1.0f32), (1.5, 3.0)] {
        b.extend(f16(d));
        b.extend(f16(m));
        b.extend((0..16u8).map(|j| ((15 - j) << 4) | j));
    }
    let mut out = Vec::new();
    dequantize_blocks(BlockFormat::Q4_1, &b, &mut out).unwrap();
    let mut want = Vec::new();
    for (d, m) in [(0.25f32, -1.0f32), (1.5, 3.0)] {
        want.extend((0..16).map(|j| j as f32 * d + m));
        want.extend((0..16).map(|j| (15 - j) as f32 * d + m));
    }
    assert_eq!(out, want);
    // A partial block is an error, not a panic.
    let e = dequantize_blocks(BlockFormat::Q4_1, &b[..25], &mut Vec::new()).unwrap_err();
    assert!(e.contains("whole q4_1 blocks"), "{e}");
}

#[test]
fn block_sizes_match_ggml() {
    assert_eq!(BlockFormat::Q8_0.block_bytes(), 2 + 32);
    assert_eq!(BlockFormat::Q4_0.block_bytes(), 2 + 16);
    assert_eq!(BlockFormat::Q4_1.block_bytes(), 2 + 2 + 16);
    assert_eq!(BlockFormat::Q4_1.bytes_for(64), Some(40));
    assert_eq!(BlockFormat::Q4_1.bytes_for(33), None);
    assert_eq!(BlockFormat::Q8_0.bytes_for(u64::MAX / 32 * 32), None);
}

#[test]
fn permute_transposes_and_undoes_rope_row_order() {
    let v: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let t = apply_transforms(&v, &[Transform::Permute { dims: vec![2, 3], perm: vec![1, 0] }]).unwrap();
    assert_eq!(t, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);

    // llama.cpp's convert script stores Q/K rows as
    // w.reshape(heads, 2, half, cols).swapaxes(1, 2); the recorded permute undoes it.
    let (heads, half, cols) = (3usize, 4usize, 5usize);
    let rows = heads * 2 * half;
    let hf: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let mut gguf = vec![0.0; hf.len()];
    for h in 0..heads {
        for two in 0..2 {
            for i in 0..half {
                let src_row = (h * 2 + two) * half + i;
                let dst_row = (h * half + i) * 2 + two;
                gguf[dst_row * cols..][..cols].copy_from_slice(&hf[src_row * cols..][..cols]);
            }
        }
    }
    let undo = Transform::Permute { dims: vec![heads as u64, half as u64, 2, cols as u64], perm: vec![0, 2, 1, 3] };
    assert_eq!(apply_transforms(&gguf, &[undo]).unwrap(), hf);

    let e = apply_transforms(&v, &[Transform::Permute { dims: vec![4, 2], perm: vec![1, 0] }]).unwrap_err();
    assert!(e.contains("hold 8 elements"), "{e}");
    let e = apply_transforms(&v, &[Transform::Permute { dims: vec![2, 3], perm: vec![1, 1] }]).unwrap_err();
    assert!(e.contains("not a permutation"), "{e}");
}

#[test]
fn blocks_source_materializes_with_transforms() {
    // A [2, 32] q8_0 weight at offset 3, rows swapped by a permute.
    let mut bytes = vec![0xAAu8; 3];
    for (r, d) in [1.0f32, -2.0].into_iter().enumerate() {
        bytes.extend(f16(d));
        bytes.extend((0..32).map(|i| (i + r as u8) as u8));
    }
    let path = std::env::temp_dir().join(format!("edgec-quant-{}.bin", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let ty = TensorType::new(DType::F32, Shape::of(&[2, 32]));
    let mut w = Weight::new("w", ty, WeightSource::Blocks { path: path.clone(), offset: 3, format: BlockFormat::Q8_0 });
    let plain = materialize_f32(&w).unwrap();
    assert_eq!(plain[33], -2.0 * 2.0);
    w.transforms.push(Transform::Permute { dims: vec![2, 32], perm: vec![0, 1] });
    w.transforms.push(Transform::Permute { dims: vec![2, 32], perm: vec![1, 0] });
    let t = materialize_f32(&w).unwrap();
    assert_eq!(t[1], plain[32]);
    // Truncated: names the weight and the file.
    std::fs::write(&path, &bytes[..40]).unwrap();
    let e = materialize_f32(&w).unwrap_err();
    assert!(e.message.contains("'w'") && e.message.contains("too short"), "{e}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn verifier_checks_blocks_and_transforms() {
    let mut g = Graph::new("g");
    let ty = TensorType::new(DType::F32, Shape::of(&[2, 48]));
    let w = g.add_weight("w", ty, WeightSource::Blocks { path: "m.gguf".into(), offset: 0, format: BlockFormat::Q4_0 });
    g.add_output("w", w);
    let e = verify::verify(&g).unwrap_err();
    assert!(e.message.contains("whole blocks of 32"), "{e}");
    g.weights[0].ty = TensorType::new(DType::F32, Shape::of(&[3, 64]));
    verify::verify(&g).unwrap();
    g.weights[0].transforms.push(Transform::Permute { dims: vec![64, 2], perm: vec![1, 0] });
    let e = verify::verify(&g).unwrap_err();
    assert!(e.message.contains("weight 'w'") && e.message.contains("192"), "{e}");
    g.weights[0].transforms[0] = Transform::Permute { dims: vec![64, 3], perm: vec![0, 2] };
    let e = verify::verify(&g).unwrap_err();
    assert!(e.message.contains("not a permutation"), "{e}");
}
