//! Weights from memory (`--embed-weights`): checked like a file, used in place when aligned,
//! copied when not; the C API equivalent.

mod common;

use common::*;
use edgec_runtime::capi::*;
use edgec_runtime::*;

/// A leaked copy of `bytes` starting at a 64-byte boundary plus `skew`.
fn leak_at(bytes: &[u8], skew: usize) -> &'static [u8] {
    let buf: &'static mut [u8] = Box::leak(vec![0u8; bytes.len() + 128].into_boxed_slice());
    let start = (64 - buf.as_ptr() as usize % 64) % 64 + skew;
    buf[start..start + bytes.len()].copy_from_slice(bytes);
    &buf[start..start + bytes.len()]
}

#[test]
fn session_from_static_weights() {
    let opts = SessionOptions { threads: 1, ..Default::default() };
    let aligned = leak_at(&weights_bytes(), 0);
    let mut s = Session::from_static(model(), aligned, opts).unwrap();
    assert!(s.weights().is_static() && !s.weights().is_mapped());
    assert_eq!(s.weights().as_ptr(), aligned.as_ptr(), "used in place");
    let mut logits = Vec::new();
    s.forward(&[1, 2, 3], &mut logits).unwrap();
    assert_eq!(logits, expected_logits(&[1, 2, 3]));

    // Misaligned memory is copied, and still works.
    let skewed = leak_at(&weights_bytes(), 8);
    let mut s = Session::from_static(model(), skewed, opts).unwrap();
    assert!(!s.weights().is_static());
    assert_eq!(s.weights().as_ptr() as usize % 64, 0);
    s.forward(&[4], &mut logits).unwrap();
    assert_eq!(logits, expected_logits(&[4]));

    // The hash and size checks apply.
    let mut b = weights_bytes();
    b[20] ^= 1;
    let e = Session::from_static(model(), leak_at(&b, 0), opts).err().unwrap().to_string();
    assert!(e.contains("content hash") && e.contains("embedded weights"), "{e}");
    let good = weights_bytes();
    let e = Session::from_static(model(), leak_at(&good[..good.len() - 64], 0), opts).err().unwrap().to_string();
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn c_api_session_from_memory() {
    let w = leak_at(&weights_bytes(), 0);
    let f: edgec_runtime::abi::ForwardFn = fake_forward;
    unsafe {
        let mut s: *mut edgec_session = std::ptr::null_mut();
        let n = w.len() as u64;
        assert_eq!(
            edgec_session_new_from_memory(&INFO, Some(f), std::ptr::null(), n, 1, &mut s),
            EDGEC_ERR_NULL_ARGUMENT
        );
        assert_eq!(edgec_session_new_from_memory(&INFO, Some(f), w.as_ptr(), n - 1, 1, &mut s), EDGEC_ERR_WEIGHTS);
        assert!(s.is_null());
        assert_eq!(edgec_session_new_from_memory(&INFO, Some(f), w.as_ptr(), n, 1, &mut s), EDGEC_RT_OK);
        let ids = [5i32, 6];
        let mut logits = vec![0f32; 2 * VOCAB as usize];
        assert_eq!(edgec_session_forward(s, ids.as_ptr(), 2, logits.as_mut_ptr()), EDGEC_RT_OK);
        assert_eq!(logits, expected_logits(&[5, 6]));
        edgec_session_free(s);
    }
}
