#![no_main]
// Body: edgec_ir::fuzzing::ir_text (replayed over fuzz/corpus/ir_text by that crate's tests).
libfuzzer_sys::fuzz_target!(|data: &[u8]| edgec_ir::fuzzing::ir_text(data));
