#![no_main]
// Body: edgec_runtime::fuzzing::tokenizer (replayed over fuzz/corpus/tokenizer by that crate's tests).
libfuzzer_sys::fuzz_target!(|data: &[u8]| edgec_runtime::fuzzing::tokenizer(data));
