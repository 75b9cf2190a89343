//! Reader for the output file of the C driver `runtime/c/edgec_driver.c`.
//!
//! Format (binary, little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `EDGECOUT` |
//! | 8 | 4 | u32 `n_prompt` |
//! | 12 | 4 | u32 `vocab` |
//! | 16 | 4 | u32 `n_generated` |
//! | 20 | 4 | u32 `variant`: which code variant ran, an index of [`DRIVER_VARIANTS`] |
//! | 24 | 4·n_prompt·vocab | f32 logits, one row of `vocab` per prompt token |
//! | … | 4·n_generated | i32 generated ids (greedy) |
//!
//! The file is exactly that long.

use crate::error::Error;

pub const DRIVER_OUTPUT_MAGIC: [u8; 8] = *b"EDGECOUT";
pub const DRIVER_OUTPUT_HEADER_SIZE: usize = 24;
/// The variants the `variant` field names: `NAME_forward` (0), then `NAME_forward_<name>`.
pub const DRIVER_VARIANTS: [&str; 4] = ["baseline", "dotprod", "avxvnni", "avx512vnni"];

#[derive(Clone, Debug, PartialEq)]
pub struct DriverOutput {
    pub n_prompt: u32,
    pub vocab: u32,
    /// `n_prompt * vocab` floats.
    pub logits: Vec<f32>,
    pub generated: Vec<i32>,
    /// Which entry point the driver chose from the CPU's features: an index of
    /// [`DRIVER_VARIANTS`].
    pub variant: u32,
}

impl DriverOutput {
    /// The name of the variant that ran.
    pub fn variant_name(&self) -> &'static str {
        DRIVER_VARIANTS.get(self.variant as usize).copied().unwrap_or("baseline")
    }

    /// The logits row of prompt token `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let v = self.vocab as usize;
        &self.logits[i * v..(i + 1) * v]
    }
}

fn bad(msg: String) -> Error {
    Error::BadDriverOutput(msg)
}

pub fn parse_driver_output(bytes: &[u8]) -> Result<DriverOutput, Error> {
    let Some(head) = bytes.first_chunk::<DRIVER_OUTPUT_HEADER_SIZE>() else {
        return Err(bad(format!("{} bytes, shorter than the {DRIVER_OUTPUT_HEADER_SIZE}-byte header", bytes.len())));
    };
    if head[0..8] != DRIVER_OUTPUT_MAGIC {
        return Err(bad(format!("bad magic \"{}\" (expected \"EDGECOUT\")", head[0..8].escape_ascii())));
    }
    let u32_at = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (n_prompt, vocab, n_generated, variant) = (u32_at(8), u32_at(12), u32_at(16), u32_at(20));
    if variant as usize >= DRIVER_VARIANTS.len() {
        return Err(bad(format!(
            "variant field is {variant}, expected 0..={} ({})",
            DRIVER_VARIANTS.len() - 1,
            DRIVER_VARIANTS.join(", ")
        )));
    }
    let too_big = || bad(format!("sizes overflow: {n_prompt} x {vocab} logits + {n_generated} ids"));
    let n_logits = (n_prompt as usize).checked_mul(vocab as usize).ok_or_else(too_big)?;
    let expected = n_logits
        .checked_add(n_generated as usize)
        .and_then(|n| n.checked_mul(4))
        .and_then(|n| n.checked_add(DRIVER_OUTPUT_HEADER_SIZE))
        .ok_or_else(too_big)?;
    if bytes.len() != expected {
        return Err(bad(format!(
            "{} bytes, expected {expected} for {n_prompt} x {vocab} logits and {n_generated} ids",
            bytes.len()
        )));
    }
    let body = &bytes[DRIVER_OUTPUT_HEADER_SIZE..];
    let (lbytes, gbytes) = body.split_at(n_logits * 4);
    let logits = lbytes.as_chunks::<4>().0.iter().map(|c| f32::from_le_bytes(*c)).collect();
    let generated = gbytes.as_chunks::<4>().0.iter().map(|c| i32::from_le_bytes(*c)).collect();
    Ok(DriverOutput { n_prompt, vocab, logits, generated, variant })
}
