#![no_main]
// Body: edgec_frontend::fuzzing::gguf (replayed over fuzz/corpus/gguf by that crate's tests).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edgec_frontend::fuzzing::gguf(data);
});
