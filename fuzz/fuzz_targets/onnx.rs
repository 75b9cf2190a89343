#![no_main]
// Body: edgec_frontend::fuzzing::onnx (replayed over fuzz/corpus/onnx by that crate's tests).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edgec_frontend::fuzzing::onnx(data);
});
