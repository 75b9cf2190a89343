#![no_main]
// Body: edgec_runtime::fuzzing::weights (replayed over fuzz/corpus/weights by that crate's tests).
libfuzzer_sys::fuzz_target!(|data: &[u8]| edgec_runtime::fuzzing::weights(data));
