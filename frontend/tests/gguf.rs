//! The GGUF reader and the GGUF → IR mapping, on small GGUF files written by the test.

use edgec_frontend::gguf::{GgufFile, Value};
use edgec_frontend::{FrontendError, LoadOptions, load_gguf};
use edgec_ir::weights::materialize_f32;
use edgec_ir::{BlockFormat, Transform, WeightSource};
use std::path::{Path, PathBuf};

/// A metadata value as written: type id and encoded bytes.
#[derive(Clone)]
struct V(u32, Vec<u8>);

fn s(x: &str) -> Vec<u8> {
    let mut b = (x.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(x.as_bytes());
    b
}
fn vu32(x: u32) -> V {
    V(4, x.to_le_bytes().to_vec())
}
fn vf32(x: f32) -> V {
    V(6, x.to_le_bytes().to_vec())
}
fn vstr(x: &str) -> V {
    V(8, s(x))
}
fn varr(item: u32, items: &[Vec<u8>]) -> V {
    let mut b = item.to_le_bytes().to_vec();
    b.extend((items.len() as u64).to_le_bytes());
    items.iter().for_each(|i| b.extend(i));
    V(9, b)
}

struct T {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
}

/// Writes a GGUF v3 file: metadata, tensor infos, padding to `align`, data.
fn gguf(version: u32, kv: &[(&str, V)], tensors: &[T], align: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(version.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        b.extend(s(k));
        b.extend(v.0.to_le_bytes());
        b.extend(&v.1);
    }
    let mut off = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        b.extend(s(&t.name));
        b.extend((t.dims.len() as u32).to_le_bytes());
        t.dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
        b.extend(t.ty.to_le_bytes());
        b.extend(off.to_le_bytes());
        offsets.push(off);
        off = (off + t.data.len() as u64).next_multiple_of(align);
    }
    while b.len() as u64 % align != 0 {
        b.push(0);
    }
    let base = b.len();
    for (t, o) in tensors.iter().zip(offsets) {
        b.resize(base + o as usize, 0);
        b.extend(&t.data);
    }
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Q8_0 blocks with scale 1/64 and quants from `seed`.
fn q8_0(elements: usize, seed: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for blk in 0..elements / 32 {
        b.extend(half::f16::from_f32(1.0 / 64.0).to_le_bytes());
        b.extend((0..32).map(|i| ((i * 7 + blk * 3 + seed as usize) % 61) as u8 ^ 0x80));
    }
    b
}

/// Q4_1 blocks with d = 1/32, m = -1/4 and nibbles from `seed`.
fn q4_1(elements: usize, seed: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for blk in 0..elements / 32 {
        b.extend(half::f16::from_f32(1.0 / 32.0).to_le_bytes());
        b.extend(half::f16::from_f32(-0.25).to_le_bytes());
        b.extend((0..16).map(|i| ((i * 13 + blk * 5 + seed as usize) % 256) as u8));
    }
    b
}

const HIDDEN: u64 = 64;
const HEADS: u64 = 2;
const KV_HEADS: u64 = 1;
const FFN: u64 = 64;
const VOCAB: u64 = 32;

fn tokenizer_kv() -> Vec<(&'static str, V)> {
    let tokens: Vec<Vec<u8>> = (0..VOCAB).map(|i| s(&format!("t{i}"))).collect();
    vec![
        ("tokenizer.ggml.model", vstr("gpt2")),
        ("tokenizer.ggml.pre", vstr("smollm")),
        ("tokenizer.ggml.tokens", varr(8, &tokens)),
    ]
}

/// A one-layer llama in GGUF: every matrix a different format.
fn tiny_llama(embd_type: u32) -> (Vec<(&'static str, V)>, Vec<T>) {
    let mut kv = vec![
        ("general.architecture", vstr("llama")),
        ("llama.block_count", vu32(1)),
        ("llama.context_length", vu32(128)),
        ("llama.embedding_length", vu32(HIDDEN as u32)),
        ("llama.feed_forward_length", vu32(FFN as u32)),
        ("llama.attention.head_count", vu32(HEADS as u32)),
        ("llama.attention.head_count_kv", vu32(KV_HEADS as u32)),
        ("llama.rope.freq_base", vf32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", vf32(1e-5)),
    ];
    kv.extend(tokenizer_kv());
    let hd = HIDDEN / HEADS;
    let ones = |n: u64| f32_bytes(&vec![1.0; n as usize]);
    let f16 = |n: u64| (0..n).flat_map(|i| half::f16::from_f32(i as f32 / 100.0).to_le_bytes()).collect::<Vec<_>>();
    let t = |name: &str, dims: &[u64], ty: u32, data: Vec<u8>| T { name: name.into(), dims: dims.to_vec(), ty, data };
    let embd = match embd_type {
        8 => q8_0((VOCAB * HIDDEN) as usize, 1),
        _ => vec![0u8; (VOCAB * HIDDEN / 256 * 84) as usize], // Q2_K-sized junk
    };
    let tensors = vec![
        t("token_embd.weight", &[HIDDEN, VOCAB], embd_type, embd),
        t("blk.0.attn_norm.weight", &[HIDDEN], 0, ones(HIDDEN)),
        t("blk.0.attn_q.weight", &[HIDDEN, HIDDEN], 3, q4_1((HIDDEN * HIDDEN) as usize, 2)),
        t("blk.0.attn_k.weight", &[HIDDEN, KV_HEADS * hd], 3, q4_1((HIDDEN * KV_HEADS * hd) as usize, 3)),
        t("blk.0.attn_v.weight", &[HIDDEN, KV_HEADS * hd], 2, {
            // Q4_0: d = 1/16
            let mut b = Vec::new();
            for i in 0..(HIDDEN * KV_HEADS * hd / 32) {
                b.extend(half::f16::from_f32(1.0 / 16.0).to_le_bytes());
                b.extend((0..16u32).map(|j| ((j * 17 + i as u32) % 256) as u8));
            }
            b
        }),
        t("blk.0.attn_output.weight", &[HIDDEN, HIDDEN], 1, f16(HIDDEN * HIDDEN)),
        t("blk.0.ffn_norm.weight", &[HIDDEN], 0, ones(HIDDEN)),
        t("blk.0.ffn_gate.weight", &[HIDDEN, FFN], 30, {
            (0..HIDDEN * FFN).flat_map(|i| half::bf16::from_f32((i % 7) as f32 / 8.0).to_le_bytes()).collect()
        }),
        t("blk.0.ffn_up.weight", &[HIDDEN, FFN], 8, q8_0((HIDDEN * FFN) as usize, 4)),
        t("blk.0.ffn_down.weight", &[FFN, HIDDEN], 0, f32_bytes(&vec![0.01; (HIDDEN * FFN) as usize])),
        t("output_norm.weight", &[HIDDEN], 0, ones(HIDDEN)),
    ];
    (kv, tensors)
}

fn opts() -> LoadOptions {
    LoadOptions { max_context: 16, max_tokens: 8 }
}

#[test]
fn tiny_llama_builds_with_every_format_and_the_rope_permutation() {
    let dir = tempfile::tempdir().unwrap();
    let (kv, tensors) = tiny_llama(8);
    let path = write(dir.path(), "tiny.gguf", &gguf(3, &kv, &tensors, 32));
    let f = GgufFile::open(&path).unwrap();
    assert_eq!((f.version, f.alignment, f.tensors.len()), (3, 32, 11));
    assert_eq!(f.data_offset % 32, 0);
    assert_eq!(f.tensor("blk.0.attn_k.weight").unwrap().shape(), [32, 64]);

    let g = load_gguf(&path, &opts()).unwrap();
    edgec_ir::verify::verify(&g).unwrap();
    let w = |n: &str| g.weights.iter().find(|w| w.name == n).unwrap_or_else(|| panic!("no weight {n}"));
    // Tied embeddings: no output.weight, no lm_head weight.
    assert!(g.weights.iter().all(|w| w.name != "lm_head.weight"));
    let q = w("model.layers.0.self_attn.q_proj.weight");
    assert!(matches!(q.source, WeightSource::Blocks { format: BlockFormat::Q4_1, .. }));
    assert_eq!(q.transforms, [Transform::Permute { dims: vec![2, 16, 2, 64], perm: vec![0, 2, 1, 3] }]);
    let k = w("model.layers.0.self_attn.k_proj.weight");
    assert_eq!(k.transforms, [Transform::Permute { dims: vec![1, 16, 2, 64], perm: vec![0, 2, 1, 3] }]);
    assert!(w("model.layers.0.self_attn.v_proj.weight").transforms.is_empty());

    // The permutation puts GGUF row (h, i, two) at HF row (h, two, i).
    let hf = materialize_f32(q).unwrap();
    let mut raw = q.clone();
    raw.transforms.clear();
    let stored = materialize_f32(&raw).unwrap();
    let cols = 64;
    for h in 0..2 {
        for i in 0..16 {
            for two in 0..2 {
                let g_row = (h * 16 + i) * 2 + two;
                let h_row = (h * 2 + two) * 16 + i;
                assert_eq!(hf[h_row * cols..][..cols], stored[g_row * cols..][..cols]);
            }
        }
    }
    // Every weight materializes (F32, F16, BF16, Q8_0, Q4_0, Q4_1).
    for w in &g.weights {
        materialize_f32(w).unwrap_or_else(|e| panic!("{}: {e}", w.name));
    }
    // The graph prints and parses back.
    let text = edgec_ir::text::print(&g);
    assert_eq!(edgec_ir::text::parse(&text).unwrap(), g);
}

#[test]
fn metadata_of_every_type_and_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let kv = vec![
        ("u8", V(0, vec![200])),
        ("i8", V(1, vec![0xFE])),
        ("u16", V(2, 60000u16.to_le_bytes().to_vec())),
        ("i16", V(3, (-300i16).to_le_bytes().to_vec())),
        ("u32", vu32(7)),
        ("i32", V(5, (-5i32).to_le_bytes().to_vec())),
        ("f32", vf32(0.5)),
        ("bool", V(7, vec![1])),
        ("str", vstr("héllo")),
        ("u64", V(10, u64::MAX.to_le_bytes().to_vec())),
        ("i64", V(11, (-9i64).to_le_bytes().to_vec())),
        ("f64", V(12, 2.25f64.to_le_bytes().to_vec())),
        ("arr", varr(5, &[1i32.to_le_bytes().to_vec(), (-2i32).to_le_bytes().to_vec()])),
        ("nested", varr(9, &[varr(8, &[s("a"), s("b")]).1, varr(8, &[]).1])),
        ("general.alignment", vu32(64)),
    ];
    let t = T { name: "x".into(), dims: vec![3], ty: 0, data: f32_bytes(&[1.0, 2.0, 3.0]) };
    let path = write(dir.path(), "meta.gguf", &gguf(2, &kv, &[t], 64));
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version, 2);
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_offset % 64, 0);
    assert_eq!(f.tensor("x").unwrap().offset, f.data_offset);
    assert_eq!(f.get("u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("i8"), Some(&Value::I8(-2)));
    assert_eq!(f.get("u16"), Some(&Value::U16(60000)));
    assert_eq!(f.get("i16"), Some(&Value::I16(-300)));
    assert_eq!(f.get("i32"), Some(&Value::I32(-5)));
    assert_eq!(f.get("f32"), Some(&Value::F32(0.5)));
    assert_eq!(f.get("bool"), Some(&Value::Bool(true)));
    assert_eq!(f.get("str").and_then(Value::as_str), Some("héllo"));
    assert_eq!(f.get("u64"), Some(&Value::U64(u64::MAX)));
    assert_eq!(f.get("i64"), Some(&Value::I64(-9)));
    assert_eq!(f.get("f64"), Some(&Value::F64(2.25)));
    assert_eq!(f.get("arr"), Some(&Value::Array(vec![Value::I32(1), Value::I32(-2)])));
    let nested = f.get("nested").and_then(Value::as_array).unwrap();
    assert_eq!(nested[0], Value::Array(vec![Value::String("a".into()), Value::String("b".into())]));
    assert_eq!(f.u64("u32").unwrap(), 7);
    let e = f.u64("str").unwrap_err().to_string();
    assert!(e.contains("'str'") && e.contains("meta.gguf"), "{e}");
}

fn open_err(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad.gguf", bytes);
    let e = GgufFile::open(&path).unwrap_err().to_string();
    assert!(e.contains("bad.gguf"), "the message names the file: {e}");
    e
}

#[test]
fn bad_magic_and_version() {
    let (kv, tensors) = tiny_llama(8);
    let mut b = gguf(3, &kv, &tensors, 32);
    b[0] = b'X';
    let e = open_err(&b);
    assert!(e.contains("bad magic"), "{e}");
    let mut b = gguf(3, &kv, &tensors, 32);
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    let e = open_err(&b);
    assert!(e.contains("unsupported GGUF version 1"), "{e}");
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    let e = open_err(&b);
    assert!(e.contains("big-endian"), "{e}");
    assert!(open_err(b"GG").contains("truncated"));
}

#[test]
fn unsupported_tensor_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (kv, tensors) = tiny_llama(10); // Q2_K embedding
    let path = write(dir.path(), "q2k.gguf", &gguf(3, &kv, &tensors, 32));
    let e = load_gguf(&path, &opts()).unwrap_err();
    assert!(matches!(e, FrontendError::UnsupportedTensorType { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("q2k.gguf") && e.contains("'token_embd.weight'") && e.contains("Q2_K"), "{e}");
    assert!(e.contains("Q4_1"), "lists what is supported: {e}");
}

#[test]
fn missing_tokenizer_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut kv, tensors) = tiny_llama(8);
    kv.retain(|(k, _)| !k.starts_with("tokenizer."));
    let path = write(dir.path(), "notok.gguf", &gguf(3, &kv, &tensors, 32));
    let f = GgufFile::open(&path).unwrap();
    let e = f.tokenizer().unwrap_err().to_string();
    assert!(e.contains("notok.gguf") && e.contains("no tokenizer") && e.contains("tokenizer.ggml"), "{e}");
    // Without llama.vocab_size the vocabulary comes from the tokenizer, so the config fails too.
    let e = f.decoder_config().unwrap_err().to_string();
    assert!(e.contains("no tokenizer"), "{e}");
    // With a tokenizer: its fields come through.
    let (kv, tensors) = tiny_llama(8);
    let path = write(dir.path(), "tok.gguf", &gguf(3, &kv, &tensors, 32));
    let t = GgufFile::open(&path).unwrap().tokenizer().unwrap();
    assert_eq!((t.model.as_str(), t.pre.as_deref(), t.tokens.len()), ("gpt2", Some("smollm"), VOCAB as usize));
}

#[test]
fn truncated_tensor_is_reported() {
    let (kv, tensors) = tiny_llama(8);
    let b = gguf(3, &kv, &tensors, 32);
    let e = open_err(&b[..b.len() - 10]);
    assert!(e.contains("truncated") && e.contains("'output_norm.weight'"), "{e}");
    // Cut inside the header: the key or tensor being read is named.
    assert!(open_err(&b[..100]).contains("truncated"));
    let e = open_err(&b[..300]);
    assert!(e.contains("truncated") && e.contains("metadata key '"), "{e}");
    let infos = b.windows(8).position(|w| w == b"blk.0.ff").unwrap();
    let e = open_err(&b[..infos + 4]);
    assert!(e.contains("truncated") && e.contains("tensor"), "{e}");
}

#[test]
fn hostile_sizes_are_refused_before_allocating() {
    let huge = |what: &str, b: Vec<u8>| {
        let e = open_err(&b);
        assert!(e.contains("truncated") || e.contains("limit") || e.contains("more than"), "{what}: {e}");
    };
    // A string claiming 2^62 bytes.
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend((1u64 << 62).to_le_bytes());
    huge("string length", b);
    // An array claiming 2^60 u8 items.
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(s("k"));
    b.extend(9u32.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend((1u64 << 60).to_le_bytes());
    huge("array count", b);
    // 2^40 tensors, 2^40 metadata entries.
    for (t, k) in [(1u64 << 40, 0u64), (0, 1 << 40)] {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(t.to_le_bytes());
        b.extend(k.to_le_bytes());
        b.extend([0u8; 64]);
        huge("counts", b);
    }
    // A tensor with 5 dims, and one whose dims overflow.
    let kv: Vec<(&str, V)> = vec![];
    let mut b = gguf(3, &kv, &[T { name: "x".into(), dims: vec![1; 5], ty: 0, data: vec![0; 4] }], 32);
    b.extend([0u8; 64]);
    let e = open_err(&b);
    assert!(e.contains("5 dims"), "{e}");
    let b = gguf(3, &kv, &[T { name: "x".into(), dims: vec![1 << 32, 1 << 32], ty: 0, data: vec![0; 64] }], 32);
    let e = open_err(&b);
    assert!(e.contains("overflow") || e.contains("past the end"), "{e}");
}

/// tiny_llama's metadata under another `general.architecture` (its `llama.*` keys renamed).
fn as_arch(arch: &str, drop: &[&str]) -> Vec<(&'static str, V)> {
    let (kv, _) = tiny_llama(8);
    kv.into_iter()
        .map(|(k, v)| match (k, k.strip_prefix("llama.")) {
            ("general.architecture", _) => (k, vstr(arch)),
            (_, Some(rest)) => (&*Box::leak(format!("{arch}.{rest}").into_boxed_str()), v),
            _ => (k, v),
        })
        .filter(|(k, _)| !drop.contains(k))
        .collect()
}

#[test]
fn gguf_architectures_and_missing_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tensors) = tiny_llama(8);
    let config_err = |name: &str, kv: &[(&str, V)]| {
        let path = write(dir.path(), name, &gguf(3, kv, &tensors, 32));
        GgufFile::open(&path).unwrap().decoder_config().unwrap_err().to_string()
    };
    let e = config_err("gpt2.gguf", &as_arch("gpt2", &[]));
    assert!(e.contains("gpt2.gguf") && e.contains("'gpt2'"), "{e}");
    assert!(e.contains("llama, qwen2, phi2, phi3"), "lists the supported architectures: {e}");
    // llama.cpp requires the epsilon for these (llama keeps its 1e-5 default).
    for (arch, key) in [
        ("qwen2", "qwen2.attention.layer_norm_rms_epsilon"),
        ("phi3", "phi3.attention.layer_norm_rms_epsilon"),
        ("phi2", "phi2.attention.layer_norm_epsilon"),
        ("qwen2", "qwen2.block_count"),
        ("phi2", "phi2.embedding_length"),
        ("phi3", "phi3.feed_forward_length"),
    ] {
        let e = config_err("missing.gguf", &as_arch(arch, &[key]));
        assert!(e.contains("missing.gguf") && e.contains(key), "{arch} without {key}: {e}");
    }
    // The families map: Phi-2 is LayerNorm + gelu, Phi-3 honours a partial rotary count.
    let mut kv = as_arch("phi2", &[]);
    kv.push(("phi2.attention.layer_norm_epsilon", vf32(1e-5)));
    kv.push(("phi2.rope.dimension_count", vu32(8)));
    let path = write(dir.path(), "phi2.gguf", &gguf(3, &kv, &tensors, 32));
    let c = GgufFile::open(&path).unwrap().decoder_config().unwrap();
    assert_eq!((c.family.architecture, c.rotary_dim, c.model_type.as_str()), ("PhiForCausalLM", 8, "phi"));
    // qwen2 rotates whole heads.
    let mut kv = as_arch("qwen2", &[]);
    kv.push(("qwen2.rope.dimension_count", vu32(8)));
    let e = config_err("qwen2.gguf", &kv);
    assert!(e.contains("qwen2.rope.dimension_count") && e.contains("whole head"), "{e}");
}

/// K-quant blocks dequantize as the `gguf` Python package does (`gguf_fixtures/kquant_reference.py`
/// prints random blocks and its values), when python3 has `gguf` and `numpy` (scripts/test
/// installs them).
#[test]
fn k_quants_dequantize_like_the_gguf_python_package() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/gguf_fixtures/kquant_reference.py");
    let out = match std::process::Command::new("python3").arg(&script).output() {
        Ok(o) if o.status.success() => o.stdout,
        other => {
            let why = other.map_or_else(|e| e.to_string(), |o| String::from_utf8_lossy(&o.stderr).into_owned());
            assert!(std::env::var_os("CI").is_none(), "python3 with gguf and numpy is needed: {why}");
            eprintln!("skipped: python3 with gguf and numpy is not available ({})", why.trim());
            return;
        }
    };
    let refs: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for (name, format) in [("Q4_K", BlockFormat::Q4K), ("Q5_K", BlockFormat::Q5K), ("Q6_K", BlockFormat::Q6K)] {
        let r = &refs[name];
        let hex = r["bytes"].as_str().unwrap();
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let want: Vec<f32> = r["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let mut got = Vec::new();
        edgec_ir::weights::dequantize_blocks(format, &bytes, &mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / b.abs().max(1e-3)).fold(0f32, f32::max);
        eprintln!("{name}: {} values, max relative difference from gguf.quants {worst:e}", got.len());
        assert!(worst <= 1e-6, "{name}: dequantized values differ from gguf.quants by {worst} (relative)");

        // As a weight read from a file, `--quant keep` re-quantizes it to the nearest layout the
        // kernels read (no K-quant kernels): Q4_K → q4_g32, Q5_K and Q6_K → q8_g32.
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "blocks.bin", &bytes);
        let ty = edgec_ir::TensorType::new(edgec_ir::DType::F32, edgec_ir::Shape::of(&[4, 256]));
        let mut w = edgec_ir::Weight::new("w", ty, WeightSource::Blocks { path, offset: 0, format });
        assert_eq!(materialize_f32(&w).unwrap(), got, "{name}");
        let keep = edgec_ir::Storage::kept_as(format);
        w.transforms.push(Transform::Quantize(keep));
        let stored = edgec_ir::weights::stored_bytes(&w).unwrap();
        eprintln!("{name}: kept as {}, relative error {:e}", keep.name(), stored.rel_error);
        // Q4_K is regridded (only its scale products rounded to f16), the others re-quantized.
        let bound = if format == BlockFormat::Q4K { 1e-3 } else { 0.02 };
        assert!(!stored.kept && stored.rel_error > 0.0 && stored.rel_error < bound, "{name}: {}", stored.rel_error);
    }
}
