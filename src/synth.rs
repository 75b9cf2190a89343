//! `edgec synth`: a random-weight HuggingFace checkpoint for any supported architecture and
//! size, for benchmarks and compile-scale checks without downloading a model.
//!
//! The tensor list (names and shapes) comes from the frontend's own builder
//! ([`edgec_frontend::checkpoint_tensors`]), so a synthesized checkpoint holds exactly what a
//! compile looks up. Values: norm weights 1, biases 0, every other tensor (embeddings,
//! projections, LM head) a normal-like distribution with mean 0 and standard deviation 0.02
//! (HF's `initializer_range`), so activations stay in a sane range through many layers.
//!
//! The safetensors files are written streaming, tensor by tensor, with a small buffer: the
//! `safetensors` crate's `serialize` needs every tensor in memory at once, which an 8B model
//! does not fit. The format is simple enough to write directly: an 8-byte little-endian header
//! length, a JSON header (`{"__metadata__": .., name: {"dtype", "shape", "data_offsets"}}`,
//! space-padded to a multiple of 8 bytes), then the tensors' bytes back to back in header
//! order. Above `shard_size` bytes the tensors go into `model-0000i-of-0000n.safetensors` shards
//! with a `model.safetensors.index.json`, as HF's `save_pretrained` does (default 5 GB).
//!
//! Deterministic: each tensor has its own generator seeded from `--seed` and the tensor's
//! name, and the values use only integer arithmetic and one exact f32 multiply (an
//! Irwin–Hall sum of four 16-bit uniforms, scaled), so the same seed gives the same bytes on
//! every machine, whatever the sharding.

use crate::atomic::AtomicFiles;
use anyhow::{Context, Result, bail};
use edgec_frontend::DecoderConfig;
use std::io::Write;
use std::path::PathBuf;

/// HF's default `max_shard_size` ("5GB").
pub const DEFAULT_SHARD_SIZE: u64 = 5_000_000_000;
/// The standard deviation of random tensors (HF's `initializer_range` default).
pub const INIT_STD: f32 = 0.02;

/// The stored element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthDtype {
    F32,
    F16,
    Bf16,
}

impl SynthDtype {
    pub fn parse(s: &str) -> Result<SynthDtype> {
        match s {
            "f32" | "float32" => Ok(SynthDtype::F32),
            "f16" | "float16" => Ok(SynthDtype::F16),
            "bf16" | "bfloat16" => Ok(SynthDtype::Bf16),
            _ => bail!("--dtype: '{s}' is not one of f32, f16, bf16"),
        }
    }
    fn size(self) -> u64 {
        match self {
            SynthDtype::F32 => 4,
            SynthDtype::F16 | SynthDtype::Bf16 => 2,
        }
    }
    /// The safetensors header name.
    fn safetensors_name(self) -> &'static str {
        match self {
            SynthDtype::F32 => "F32",
            SynthDtype::F16 => "F16",
            SynthDtype::Bf16 => "BF16",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SynthRequest {
    /// A config.json (or a directory holding one) of a supported architecture.
    pub config: PathBuf,
    pub out_dir: PathBuf,
    pub dtype: SynthDtype,
    pub seed: u64,
    /// Largest shard in bytes (tensors included whole); one file when everything fits.
    pub shard_size: u64,
}

/// What `synth` wrote.
#[derive(Clone, Debug)]
pub struct Synthesized {
    /// The safetensors files, in order.
    pub files: Vec<PathBuf>,
    pub tensors: usize,
    pub parameters: u64,
    /// Tensor payload bytes (headers not included).
    pub bytes: u64,
}

/// Parses a size such as `5GB`, `500MB`, `64KiB` or `1000000` (bytes).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().with_context(|| format!("'{s}' is not a size (e.g. 5GB, 500MB, 1000000)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => bail!("'{s}': unknown unit '{unit}' (B, KB, MB, GB, KiB, MiB, GiB)"),
    };
    let v = n.checked_mul(mult).with_context(|| format!("'{s}' is too large"))?;
    if v == 0 {
        bail!("the shard size must be positive");
    }
    Ok(v)
}

/// Writes `config.json` (the input, verbatim) and the safetensors file(s) into `out_dir`, all at
/// once or not at all.
pub fn synth(req: &SynthRequest) -> Result<Synthesized> {
    let config_path = if req.config.is_dir() { req.config.join("config.json") } else { req.config.clone() };
    let config_text = std::fs::read(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
    let cfg = DecoderConfig::load(&config_path)?;
    let tensors = edgec_frontend::checkpoint_tensors(&cfg)?;
    let elem = req.dtype.size();
    let sizes: Vec<u64> = tensors
        .iter()
        .map(|(name, shape)| {
            shape.iter().try_fold(elem, |a, &d| a.checked_mul(d)).with_context(|| format!("{name}: size overflows"))
        })
        .collect::<Result<_>>()?;

    // Shards: consecutive tensors, a new shard when the next tensor would overflow this one.
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut filled = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        let last = shards.len() - 1;
        if !shards[last].is_empty() && filled + size > req.shard_size {
            shards.push(Vec::new());
            filled = 0;
        }
        let last = shards.len() - 1;
        shards[last].push(i);
        filled += size;
    }
    let n = shards.len();
    let file_names: Vec<String> = if n == 1 {
        vec![edgec_frontend::checkpoint::SINGLE_FILE.to_string()]
    } else {
        (1..=n).map(|i| format!("model-{i:05}-of-{n:05}.safetensors")).collect()
    };

    std::fs::create_dir_all(&req.out_dir).with_context(|| format!("cannot create {}", req.out_dir.display()))?;
    let mut files = AtomicFiles::default();
    files.write(&req.out_dir.join("config.json"), &config_text)?;
    let mut buf = Vec::with_capacity(CHUNK * 4);
    for (shard, file_name) in shards.iter().zip(&file_names) {
        let dest = req.out_dir.join(file_name);
        let header = header_json(shard.iter().map(|&i| (&tensors[i].0, &tensors[i].1, sizes[i])), req.dtype);
        let f = files.create(&dest)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let werr = || format!("cannot write {}", dest.display());
        w.write_all(&(header.len() as u64).to_le_bytes()).with_context(werr)?;
        w.write_all(header.as_bytes()).with_context(werr)?;
        for &i in shard {
            let (name, shape) = &tensors[i];
            write_tensor(&mut w, &mut buf, name, shape, req.dtype, req.seed).with_context(werr)?;
        }
        w.flush().with_context(werr)?;
    }
    let total: u64 = sizes.iter().sum();
    if n > 1 {
        let mut map = serde_json::Map::new();
        for (shard, file_name) in shards.iter().zip(&file_names) {
            for &i in shard {
                map.insert(tensors[i].0.clone(), serde_json::Value::String(file_name.clone()));
            }
        }
        let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": map });
        #[allow(clippy::expect_used, reason = "a serde_json::Value always serializes")]
        let text = serde_json::to_string_pretty(&index).expect("JSON serializes") + "\n";
        files.write(&req.out_dir.join(edgec_frontend::checkpoint::INDEX_FILE), text.as_bytes())?;
    }
    files.commit()?;
    Ok(Synthesized {
        files: file_names.iter().map(|f| req.out_dir.join(f)).collect(),
        tensors: tensors.len(),
        parameters: total / elem,
        bytes: total,
    })
}

/// Elements generated per buffered write.
const CHUNK: usize = 1 << 16;

/// The safetensors JSON header for these tensors in this order, padded with spaces to a
/// multiple of 8 bytes (as the `safetensors` crate writes it).
fn header_json<'a>(tensors: impl Iterator<Item = (&'a String, &'a Vec<u64>, u64)>, dtype: SynthDtype) -> String {
    let mut h = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut at = 0u64;
    for (name, shape, size) in tensors {
        let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
        #[allow(clippy::expect_used, reason = "a string always serializes")]
        let name = serde_json::to_string(name).expect("a string serializes");
        h += &format!(
            r#",{name}:{{"dtype":"{}","shape":[{}],"data_offsets":[{at},{}]}}"#,
            dtype.safetensors_name(),
            shape.join(","),
            at + size
        );
        at += size;
    }
    h.push('}');
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    h
}

/// How a tensor is initialized, from its name and rank (HF's conventions).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Init {
    Ones,
    Zeros,
    Random,
}

fn init_for(name: &str, shape: &[u64]) -> Init {
    if name.ends_with(".bias") {
        Init::Zeros
    } else if shape.len() == 1 && name.contains("norm") {
        Init::Ones
    } else {
        Init::Random
    }
}

fn write_tensor(
    w: &mut impl Write,
    buf: &mut Vec<u8>,
    name: &str,
    shape: &[u64],
    dtype: SynthDtype,
    seed: u64,
) -> std::io::Result<()> {
    let init = init_for(name, shape);
    let mut rng = SplitMix64(seed ^ fnv1a(name.as_bytes()));
    let mut left: u64 = shape.iter().product();
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        buf.clear();
        for _ in 0..n {
            let v = match init {
                Init::Ones => 1.0,
                Init::Zeros => 0.0,
                Init::Random => rng.normal_like() * INIT_STD,
            };
            match dtype {
                SynthDtype::F32 => buf.extend_from_slice(&v.to_le_bytes()),
                SynthDtype::F16 => buf.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                SynthDtype::Bf16 => buf.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
            }
        }
        w.write_all(buf)?;
        left -= n as u64;
    }
    Ok(())
}

/// FNV-1a, 64 bits: a tensor name's contribution to its generator's seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// SplitMix64 (Steele, Lea, Flood): tiny, fast, and good enough for weights no one trains.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Mean 0, variance 1, bell-shaped (Irwin–Hall of four uniforms), within ±3.46: the four
    /// 16-bit parts of one draw, summed and scaled. Integer arithmetic and one exactly rounded
    /// multiply, so identical on every machine.
    fn normal_like(&mut self) -> f32 {
        let r = self.next();
        let sum: i64 = (0..4).map(|k| ((r >> (16 * k)) & 0xffff) as i64).sum::<i64>() - 2 * 0xffff;
        // Each 16-bit uniform has variance (65536² - 1) / 12; four of them, (65536² - 1) / 3.
        const SCALE: f32 = 1.0 / 37837.23; // 1 / sqrt((65536² - 1) / 3)
        sum as f32 * SCALE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("0").is_err());
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("GB").is_err());
    }

    #[test]
    fn normal_like_has_the_right_moments() {
        let mut r = SplitMix64(7);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| f64::from(r.normal_like())).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.01, "{var}");
        assert!(xs.iter().all(|x| x.abs() < 3.47));
    }

    #[test]
    fn inits_follow_names() {
        assert_eq!(init_for("model.norm.weight", &[8]), Init::Ones);
        assert_eq!(init_for("model.layers.0.self_attn.q_norm.weight", &[8]), Init::Ones);
        assert_eq!(init_for("model.layers.0.input_layernorm.bias", &[8]), Init::Zeros);
        assert_eq!(init_for("model.layers.0.self_attn.q_proj.bias", &[8]), Init::Zeros);
        assert_eq!(init_for("model.layers.0.self_attn.q_proj.weight", &[8, 8]), Init::Random);
    }
}
