#![no_main]
// Body: edgec_frontend::fuzzing::safetensors (replayed over fuzz/corpus/safetensors by that crate's tests).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edgec_frontend::fuzzing::safetensors(data);
});
