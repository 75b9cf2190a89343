//! The malformed-input suite (issue 9): hostile or broken model files, one readable case per
//! file under `tests/malformed/<format>/NAME.case`. Each case starts from a valid input built
//! from the llama fixture, breaks it in one described way, runs the `edgec` binary on it and
//! checks the exact error, a nonzero exit (not a signal), no panic text and that no output file
//! was written. `bases_are_valid` checks each unbroken input compiles (or runs), so every case
//! fails because of its edits.
//!
//! A case file:
//! ```text
//! # What the case shows, in prose (any number of `#` lines, anywhere).
//! input: checkpoint | gguf | onnx | onnx-with-past | weights | ir
//! edit: EDIT ...            (any number, applied in order; see below)
//! args: --limit x=1         (optional: more arguments for the command)
//! text:                     (ir only: the IR text, up to `expect:`)
//! expect:
//! error: the exact stderr, with the case's directory written as $DIR
//! ```
//!
//! Inputs, in the case's directory `$DIR`, and what runs on them:
//! - `checkpoint`: `model/` (config.json, model.safetensors); `edgec compile $DIR/model -o $DIR/out`.
//! - `gguf`: `model.gguf`, the fixture written as GGUF v3 by [`Gguf`] (F32 tensors, llama.cpp's
//!   names and metadata keys, a placeholder `gpt2` vocabulary); compiled like a checkpoint.
//! - `onnx`: `model.onnx`, the fixture's export; compiled like a checkpoint.
//! - `onnx-with-past`: `model-with-past.onnx`, the fixture's export with its KV cache in the
//!   signature; compiled like a checkpoint.
//! - `weights`: `out/`, the fixture compiled for the host (llama.o, llama.weights, llama.h,
//!   edgec.json); `edgec run $DIR/out --ids 1,2,3 --max-new-tokens 2 --output $DIR/result.safetensors`.
//! - `ir`: the text after `text:`, parsed by `edgec_ir::text::parse` (the CLI reads no IR
//!   files); `expect:` is the parse error.
//!
//! Every compile gets `--max-context 32`. Edits (`FILE` is relative to `$DIR`; strings are
//! double-quoted with `\"`, `\\`, `\n` and `\xNN` escapes; JSON values are written without spaces):
//! - bytes: `truncate FILE LEN` (`-N`: N bytes shorter), `bytes FILE OFFSET "STR"`,
//!   `u32 FILE OFFSET N`, `u64 FILE OFFSET N` (little-endian), `append FILE "STR"`,
//!   `remove FILE`, `write FILE "STR"` (the whole file).
//! - JSON files: `json FILE PATH VALUE` (PATH dotted), `json-remove FILE PATH`.
//! - safetensors headers (the length prefix is rewritten, the data kept):
//!   `st-set FILE TENSOR FIELD VALUE`, `st-rename FILE TENSOR NEW`, `st-header FILE "TEXT"`.
//! - GGUF, before it is written: `gguf-version N`, `gguf-set KEY TYPE VALUE` (replaces the
//!   key's value, or adds it; `gguf-add` always adds) (TYPE: u8, u32,
//!   i32, u64, f32, bool-byte, string, string-len (only a length, no bytes), raw-type (a value
//!   type id with no value), nested-array (VALUE arrays deep), array-count (an array of u8
//!   claiming VALUE items), bytes (a string of the given raw bytes)), `gguf-remove KEY`,
//!   `gguf-tensor NAME FIELD VALUE` (FIELD: type, dims (comma-separated, innermost first),
//!   offset (relative to the data section)), `gguf-count tensors|kv N` (the header's counts).
//! - ONNX, decoded and re-encoded: `onnx-node NAME FIELD VALUE` (FIELD: op_type, input.I,
//!   output.I, domain), `onnx-output I NAME` (renames graph output I and what computes it),
//!   `onnx-init NAME FIELD VALUE` (FIELD: dims (comma-separated),
//!   data_type, raw-bytes (keep that many), external (a location)), `onnx-opset N`,
//!   `onnx-nest DEPTH` (an `If` whose branch nests DEPTH graphs deep), `onnx-no-graph`,
//!   `onnx-function-loop` (a model-local function that calls itself).
//!
//! `EDGEC_BLESS=1 cargo test --test malformed` rewrites every `expect:` from the actual output.

mod common;
use common::*;
use edgec_frontend::onnx::proto::{
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
};
use prost::Message;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed")
}

struct Case {
    path: PathBuf,
    input: String,
    edits: Vec<Vec<String>>,
    args: Vec<String>,
    text: String,
    expect: String,
}

fn parse_case(path: &Path) -> Result<Case, String> {
    let src = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let (head, expect) = src.split_once("\nexpect:\n").ok_or("no 'expect:' line")?;
    let mut case = Case {
        path: path.to_path_buf(),
        input: String::new(),
        edits: Vec::new(),
        args: Vec::new(),
        text: String::new(),
        expect: expect.trim_end().to_string(),
    };
    let mut in_text = false;
    for line in head.lines() {
        if in_text {
            case.text.push_str(line);
            case.text.push('\n');
        } else if line.starts_with('#') || line.trim().is_empty() {
        } else if let Some(v) = line.strip_prefix("input:") {
            case.input = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("edit:") {
            case.edits.push(words(v)?);
        } else if let Some(v) = line.strip_prefix("args:") {
            case.args.extend(words(v)?);
        } else if line.trim() == "text:" {
            in_text = true;
        } else {
            return Err(format!("unexpected line '{line}'"));
        }
    }
    if case.input.is_empty() {
        return Err("no 'input:' line".into());
    }
    Ok(case)
}

/// Whitespace-separated words; a double-quoted word may hold spaces and escapes.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut w = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next().ok_or("unterminated string")? {
                    '"' => break,
                    '\\' => match chars.next().ok_or("unterminated string")? {
                        'n' => w.push('\n'),
                        'x' => {
                            let hex: String = [chars.next(), chars.next()].into_iter().flatten().collect();
                            let b = u8::from_str_radix(&hex, 16).map_err(|_| format!("bad escape \\x{hex}"))?;
                            // Raw bytes ride in a char each (U+0000..U+00FF); see `raw`.
                            w.push(char::from(b));
                        }
                        c => w.push(c),
                    },
                    c => w.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek().filter(|c| !c.is_whitespace()) {
                w.push(c);
                chars.next();
            }
        }
        out.push(w);
    }
    Ok(out)
}

/// A quoted word as bytes: each char is one byte (so `\xNN` gives any byte).
fn raw(w: &str) -> Vec<u8> {
    w.chars().map(|c| u32::from(c) as u8).collect()
}

fn num(w: &str) -> u64 {
    w.replace('_', "").parse().unwrap_or_else(|_| panic!("'{w}' is not a number"))
}

/// A JSON value as written in an edit; a word that is not JSON is a string (`"F33"` loses its
/// quotes to the word splitter).
fn json_value(w: &str) -> serde_json::Value {
    serde_json::from_str(w).unwrap_or_else(|_| serde_json::Value::String(w.to_string()))
}

fn arg(e: &[String], i: usize) -> &str {
    e.get(i).map(String::as_str).unwrap_or_else(|| panic!("edit {e:?}: missing argument {i}"))
}

// -------------------------------------------------------------------------------------------
// The valid inputs.

/// The llama fixture compiled for the host once per test process (the `weights` input).
fn compiled_fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Under cargo's per-target scratch directory (not /tmp, where a static would leak it).
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("malformed-llama");
        let _ = std::fs::remove_dir_all(&out);
        let o = edgec(&[
            "compile",
            fixture("llama").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--max-context",
            "32",
            "--name",
            "llama",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    })
}

/// A GGUF metadata value as the test writes it.
#[derive(Clone, Debug)]
enum GV {
    U8(u8),
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    Str(Vec<u8>),
    Arr(u32, Vec<GV>),
    /// Anything else: a type id and the bytes after it.
    Raw(u32, Vec<u8>),
}

impl GV {
    fn type_id(&self) -> u32 {
        match self {
            GV::U8(_) => 0,
            GV::U32(_) => 4,
            GV::I32(_) => 5,
            GV::F32(_) => 6,
            GV::Str(_) => 8,
            GV::Arr(..) => 9,
            GV::U64(_) => 10,
            GV::Raw(t, _) => *t,
        }
    }
    fn encode(&self, b: &mut Vec<u8>) {
        match self {
            GV::U8(v) => b.push(*v),
            GV::U32(v) => b.extend(v.to_le_bytes()),
            GV::I32(v) => b.extend(v.to_le_bytes()),
            GV::U64(v) => b.extend(v.to_le_bytes()),
            GV::F32(v) => b.extend(v.to_le_bytes()),
            GV::Str(s) => {
                b.extend((s.len() as u64).to_le_bytes());
                b.extend(s);
            }
            GV::Arr(item, items) => {
                b.extend(item.to_le_bytes());
                b.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|i| i.encode(b));
            }
            GV::Raw(_, bytes) => b.extend(bytes),
        }
    }
}

struct GTensor {
    name: String,
    /// Innermost first, as GGUF stores them.
    dims: Vec<u64>,
    ty: u32,
    /// Relative to the data section; `None`: the next aligned offset.
    offset: Option<u64>,
    data: Vec<u8>,
}

/// A GGUF v3 file before it is written (alignment 32).
struct Gguf {
    version: u32,
    kv: Vec<(String, GV)>,
    tensors: Vec<GTensor>,
    tensor_count: Option<u64>,
    kv_count: Option<u64>,
}

impl Gguf {
    /// The llama fixture as llama.cpp's converter lays it out (F32; the Q/K rows are not
    /// permuted: the values do not matter here, only that it compiles).
    fn llama() -> Gguf {
        let dir = fixture("llama");
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let u = |k: &str| cfg[k].as_u64().unwrap() as u32;
        let vocab = u("vocab_size");
        let s = |x: &str| GV::Str(x.as_bytes().to_vec());
        let kv = vec![
            ("general.architecture", s("llama")),
            ("llama.context_length", GV::U32(u("max_position_embeddings"))),
            ("llama.embedding_length", GV::U32(u("hidden_size"))),
            ("llama.feed_forward_length", GV::U32(u("intermediate_size"))),
            ("llama.block_count", GV::U32(u("num_hidden_layers"))),
            ("llama.attention.head_count", GV::U32(u("num_attention_heads"))),
            ("llama.attention.head_count_kv", GV::U32(u("num_key_value_heads"))),
            ("llama.rope.freq_base", GV::F32(10000.0)),
            ("llama.attention.layer_norm_rms_epsilon", GV::F32(1e-5)),
            ("tokenizer.ggml.model", s("gpt2")),
            ("tokenizer.ggml.pre", s("gpt2")),
            ("tokenizer.ggml.tokens", GV::Arr(8, (0..vocab).map(|i| s(&format!("<t{i}>"))).collect())),
            ("tokenizer.ggml.token_type", GV::Arr(5, (0..vocab).map(|_| GV::I32(1)).collect())),
        ];
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors: Vec<GTensor> = st
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                assert_eq!(t.dtype(), safetensors::Dtype::F32);
                GTensor {
                    name: gguf_name(&name),
                    dims: t.shape().iter().rev().map(|&d| d as u64).collect(),
                    ty: 0,
                    offset: None,
                    data: t.data().to_vec(),
                }
            })
            .collect();
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        Gguf {
            version: 3,
            kv: kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            tensors,
            tensor_count: None,
            kv_count: None,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        const ALIGN: u64 = 32;
        let mut b = b"GGUF".to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend(self.tensor_count.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        b.extend(self.kv_count.unwrap_or(self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            GV::Str(k.as_bytes().to_vec()).encode(&mut b);
            b.extend(v.type_id().to_le_bytes());
            v.encode(&mut b);
        }
        let mut next = 0u64;
        let mut placed = Vec::new();
        for t in &self.tensors {
            GV::Str(t.name.as_bytes().to_vec()).encode(&mut b);
            b.extend((t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
            b.extend(t.ty.to_le_bytes());
            b.extend(t.offset.unwrap_or(next).to_le_bytes());
            placed.push(next);
            next = (next + t.data.len() as u64).next_multiple_of(ALIGN);
        }
        b.resize((b.len() as u64).next_multiple_of(ALIGN) as usize, 0);
        let base = b.len();
        for (t, at) in self.tensors.iter().zip(placed) {
            b.resize(base + at as usize, 0);
            b.extend(&t.data);
        }
        b
    }

    fn tensor(&mut self, name: &str) -> &mut GTensor {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap_or_else(|| panic!("no GGUF tensor '{name}'"))
    }

    fn edit(&mut self, e: &[String]) {
        match e[0].as_str() {
            "gguf-version" => self.version = num(arg(e, 1)) as u32,
            "gguf-count" => match arg(e, 1) {
                "tensors" => self.tensor_count = Some(num(arg(e, 2))),
                "kv" => self.kv_count = Some(num(arg(e, 2))),
                w => panic!("gguf-count {w}?"),
            },
            "gguf-remove" => {
                let before = self.kv.len();
                self.kv.retain(|(k, _)| k != arg(e, 1));
                assert!(self.kv.len() < before, "no GGUF key '{}'", arg(e, 1));
            }
            "gguf-set" | "gguf-add" => {
                let (key, ty, value) = (arg(e, 1), arg(e, 2), arg(e, 3));
                let v = match ty {
                    "u8" => GV::U8(num(value) as u8),
                    "u32" => GV::U32(num(value) as u32),
                    "i32" => GV::I32(value.parse().unwrap()),
                    "u64" => GV::U64(num(value)),
                    "f32" => GV::F32(value.parse().unwrap()),
                    "bool-byte" => GV::Raw(7, vec![num(value) as u8]),
                    "string" => GV::Str(value.as_bytes().to_vec()),
                    "bytes" => GV::Str(raw(value)),
                    "string-len" => GV::Raw(8, num(value).to_le_bytes().to_vec()),
                    "raw-type" => GV::Raw(num(value) as u32, Vec::new()),
                    "nested-array" => (0..num(value)).fold(GV::U8(1), |inner, _| GV::Arr(inner.type_id(), vec![inner])),
                    "array-count" => {
                        let mut b = 0u32.to_le_bytes().to_vec();
                        b.extend(num(value).to_le_bytes());
                        GV::Raw(9, b)
                    }
                    t => panic!("gguf-set: unknown type '{t}'"),
                };
                match self.kv.iter_mut().find(|(k, _)| k == key).filter(|_| e[0] == "gguf-set") {
                    Some(slot) => slot.1 = v,
                    None => self.kv.push((key.to_string(), v)),
                }
            }
            "gguf-tensor" => {
                let (field, value) = (arg(e, 2), arg(e, 3));
                let t = self.tensor(arg(e, 1));
                match field {
                    "type" => t.ty = num(value) as u32,
                    "dims" => t.dims = value.split(',').map(num).collect(),
                    "offset" => t.offset = Some(num(value)),
                    f => panic!("gguf-tensor: unknown field '{f}'"),
                }
            }
            w => panic!("unknown GGUF edit '{w}'"),
        }
    }
}

/// The GGUF name llama.cpp's converter gives a HuggingFace Llama tensor.
fn gguf_name(hf: &str) -> String {
    let (base, kind) = hf.rsplit_once('.').unwrap();
    let name = match base {
        "model.embed_tokens" => "token_embd".to_string(),
        "model.norm" => "output_norm".to_string(),
        "lm_head" => "output".to_string(),
        _ => {
            let rest = base.strip_prefix("model.layers.").unwrap();
            let (layer, part) = rest.split_once('.').unwrap();
            let short = match part {
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                "input_layernorm" => "attn_norm",
                "post_attention_layernorm" => "ffn_norm",
                p => panic!("no GGUF name for {p}"),
            };
            format!("blk.{layer}.{short}")
        }
    };
    format!("{name}.{kind}")
}

fn onnx_edit(m: &mut ModelProto, e: &[String]) {
    let graph = m.graph.as_mut().expect("the fixture has a graph");
    match e[0].as_str() {
        "onnx-node" => {
            let (name, field, value) = (arg(e, 1), arg(e, 2), arg(e, 3));
            let n = graph.node.iter_mut().find(|n| n.name == name).unwrap_or_else(|| panic!("no node '{name}'"));
            let slot = |v: &mut Vec<String>, i: &str| {
                let i: usize = i.parse().unwrap();
                v[i] = value.to_string();
            };
            match field.split_once('.') {
                Some(("input", i)) => slot(&mut n.input, i),
                Some(("output", i)) => slot(&mut n.output, i),
                _ if field == "op_type" => n.op_type = value.to_string(),
                _ if field == "domain" => n.domain = value.to_string(),
                _ => panic!("onnx-node: unknown field '{field}'"),
            }
        }
        "onnx-output" => {
            let (i, name) = (num(arg(e, 1)) as usize, arg(e, 2));
            let old = std::mem::replace(&mut graph.output[i].name, name.to_string());
            for o in graph.node.iter_mut().flat_map(|n| n.output.iter_mut()).filter(|o| **o == old) {
                *o = name.to_string();
            }
        }
        "onnx-init" => {
            let (name, field, value) = (arg(e, 1), arg(e, 2), arg(e, 3));
            let t = graph
                .initializer
                .iter_mut()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("no initializer '{name}'"));
            match field {
                "dims" => t.dims = value.split(',').map(|d| d.parse().unwrap()).collect(),
                "data_type" => t.data_type = value.parse().unwrap(),
                "raw-bytes" => t.raw_data = t.raw_data.slice(..num(value) as usize),
                "external" => {
                    t.raw_data = Vec::new().into();
                    t.data_location = 1;
                    t.external_data = vec![StringStringEntryProto { key: "location".into(), value: value.to_string() }];
                }
                f => panic!("onnx-init: unknown field '{f}'"),
            }
        }
        "onnx-opset" => {
            let v = num(arg(e, 1)) as i64;
            m.opset_import.iter_mut().filter(|o| o.domain.is_empty()).for_each(|o| o.version = v);
        }
        "onnx-nest" => {
            // An If node whose then_branch holds an If node whose then_branch ... DEPTH deep.
            let mut g = GraphProto::default();
            for _ in 0..num(arg(e, 1)) {
                let attr = AttributeProto {
                    name: "then_branch".into(),
                    r#type: 5,
                    g: Some(Box::new(g)),
                    ..Default::default()
                };
                let node = NodeProto { op_type: "If".into(), attribute: vec![attr], ..Default::default() };
                g = GraphProto { node: vec![node], ..Default::default() };
            }
            graph.node.extend(g.node);
        }
        "onnx-no-graph" => m.graph = None,
        "onnx-function-loop" => {
            let call = |input: &str, output: &str| NodeProto {
                name: format!("call_{output}"),
                op_type: "Loop".into(),
                domain: "local".into(),
                input: vec![input.into()],
                output: vec![output.into()],
                ..Default::default()
            };
            m.functions.push(FunctionProto {
                name: "Loop".into(),
                domain: "local".into(),
                input: vec!["a".into()],
                output: vec!["b".into()],
                node: vec![call("a", "b")],
                opset_import: vec![OperatorSetIdProto { domain: "local".into(), version: 1 }],
                ..Default::default()
            });
            m.opset_import.push(OperatorSetIdProto { domain: "local".into(), version: 1 });
            let graph = m.graph.as_mut().unwrap();
            let logits = graph.output[0].name.clone();
            let last = graph.node.iter_mut().find(|n| n.output.contains(&logits)).unwrap();
            last.output = vec!["pre_logits".into()];
            graph.node.push(call("pre_logits", &logits));
        }
        w => panic!("unknown ONNX edit '{w}'"),
    }
}

/// Builds the case's input in `dir` (its `$DIR`) and applies the edits.
fn build_input(case: &Case, dir: &Path) {
    let (gguf_edits, rest): (Vec<_>, Vec<_>) = case.edits.iter().partition(|e| e[0].starts_with("gguf-"));
    let (onnx_edits, rest): (Vec<_>, Vec<_>) = rest.into_iter().partition(|e| e[0].starts_with("onnx-"));
    match case.input.as_str() {
        "checkpoint" => {
            let model = dir.join("model");
            std::fs::create_dir(&model).unwrap();
            for f in ["config.json", "model.safetensors"] {
                std::fs::write(model.join(f), std::fs::read(fixture("llama").join(f)).unwrap()).unwrap();
            }
        }
        "gguf" => {
            let mut g = Gguf::llama();
            gguf_edits.iter().for_each(|e| g.edit(e));
            std::fs::write(dir.join("model.gguf"), g.to_bytes()).unwrap();
        }
        "onnx" | "onnx-with-past" => {
            let file = format!("model{}.onnx", &case.input[4..]);
            let bytes = std::fs::read(fixture("llama").join(&file)).unwrap();
            let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
            onnx_edits.iter().for_each(|e| onnx_edit(&mut m, e));
            std::fs::write(dir.join(file), m.encode_to_vec()).unwrap();
        }
        "weights" => {
            let out = dir.join("out");
            std::fs::create_dir(&out).unwrap();
            for entry in std::fs::read_dir(compiled_fixture()).unwrap() {
                let p = entry.unwrap().path();
                std::fs::write(out.join(p.file_name().unwrap()), std::fs::read(&p).unwrap()).unwrap();
            }
        }
        "ir" => {}
        i => panic!("unknown input '{i}'"),
    }
    assert!(
        case.input == "gguf" && onnx_edits.is_empty()
            || case.input.starts_with("onnx") && gguf_edits.is_empty()
            || gguf_edits.is_empty() && onnx_edits.is_empty(),
        "GGUF/ONNX edits on a {} input",
        case.input
    );
    for e in rest {
        file_edit(dir, e);
    }
}

fn file_edit(dir: &Path, e: &[String]) {
    let path = dir.join(arg(e, 1));
    let read = || std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let put = |offset: &str, bytes: &[u8]| {
        let mut b = read();
        let at = num(offset) as usize;
        b[at..at + bytes.len()].copy_from_slice(bytes);
        std::fs::write(&path, b).unwrap();
    };
    match e[0].as_str() {
        "truncate" => {
            let len = read().len() as u64;
            let w = arg(e, 2);
            let new = match w.strip_prefix('-') {
                Some(n) => len - num(n),
                None => num(w),
            };
            assert!(new < len, "truncate must shorten {}", path.display());
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(new).unwrap();
        }
        "bytes" => put(arg(e, 2), &raw(arg(e, 3))),
        "u32" => put(arg(e, 2), &(num(arg(e, 3)) as u32).to_le_bytes()),
        "u64" => put(arg(e, 2), &num(arg(e, 3)).to_le_bytes()),
        "append" => {
            let mut b = read();
            b.extend(raw(arg(e, 2)));
            std::fs::write(&path, b).unwrap();
        }
        "remove" => std::fs::remove_file(&path).unwrap(),
        "write" => std::fs::write(&path, raw(arg(e, 2))).unwrap(),
        "json" | "json-remove" => {
            let mut v: serde_json::Value = serde_json::from_slice(&read()).unwrap();
            let keys: Vec<&str> = arg(e, 2).split('.').collect();
            let (last, parents) = keys.split_last().unwrap();
            let mut obj = &mut v;
            for k in parents {
                obj = obj.get_mut(*k).unwrap_or_else(|| panic!("no JSON key '{k}'"));
            }
            let obj = obj.as_object_mut().unwrap();
            if e[0] == "json" {
                obj.insert(last.to_string(), json_value(arg(e, 3)));
            } else {
                assert!(obj.remove(*last).is_some(), "no JSON key '{last}'");
            }
            std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        }
        "st-set" | "st-rename" | "st-header" => {
            let b = read();
            let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            let data = &b[8 + n..];
            let header: String = if e[0] == "st-header" {
                arg(e, 2).to_string()
            } else {
                let mut h: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&b[8..8 + n]).unwrap();
                let tensor = arg(e, 2);
                let entry = h.remove(tensor).unwrap_or_else(|| panic!("no tensor '{tensor}'"));
                if e[0] == "st-rename" {
                    h.insert(arg(e, 3).to_string(), entry);
                } else {
                    let mut entry = entry;
                    entry[arg(e, 3)] = json_value(arg(e, 4));
                    h.insert(tensor.to_string(), entry);
                }
                serde_json::to_string(&h).unwrap()
            };
            let mut out = (header.len() as u64).to_le_bytes().to_vec();
            out.extend(header.as_bytes());
            out.extend(data);
            std::fs::write(&path, out).unwrap();
        }
        w => panic!("unknown edit '{w}'"),
    }
}

// -------------------------------------------------------------------------------------------
// Running a case.

/// Every regular file under `dir`, relative to it, with its size.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::metadata(&p).unwrap().len()));
            }
        }
    }
    out.sort();
    out
}

/// The command a case's input gets.
fn command(case: &Case, dir: &Path) -> Command {
    let d = |p: &str| dir.join(p).to_str().unwrap().to_string();
    let mut args: Vec<String> = match case.input.as_str() {
        "checkpoint" => vec!["compile".into(), d("model"), "-o".into(), d("out"), "--max-context".into(), "32".into()],
        "gguf" | "onnx" | "onnx-with-past" => {
            let model = match case.input.as_str() {
                "gguf" => d("model.gguf"),
                input => d(&format!("model{}.onnx", &input[4..])),
            };
            vec!["compile".into(), model, "-o".into(), d("out"), "--max-context".into(), "32".into()]
        }
        "weights" => {
            ["run", &d("out"), "--ids", "1,2,3", "--max-new-tokens", "2", "--output", &d("result.safetensors")]
                .map(String::from)
                .to_vec()
        }
        i => panic!("no command for input '{i}'"),
    };
    args.extend(case.args.iter().cloned());
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgec"));
    c.args(args).env_remove("RUST_BACKTRACE");
    c
}

/// Runs a case: its actual message, or what else was wrong (success, panic, leftovers).
fn run_case(case: &Case) -> Result<String, String> {
    let tmp = tempfile::Builder::new().prefix("edgec-malformed-").tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    build_input(case, &dir);
    let placeholder = |s: &str| s.replace(dir.to_str().unwrap(), "$DIR");
    if case.input == "ir" {
        let parsed = std::panic::catch_unwind(|| edgec_ir::text::parse(&case.text));
        return match parsed {
            Err(_) => Err("the IR parser panicked".into()),
            Ok(Ok(_)) => Err("the IR text parsed".into()),
            Ok(Err(e)) => Ok(e.to_string()),
        };
    }
    let before = files(&dir);
    let o = command(case, &dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let stderr = placeholder(stderr.trim_end());
    if o.status.success() {
        return Err(format!("edgec succeeded; stderr: {stderr}"));
    }
    if o.status.code().is_none() {
        return Err(format!("edgec was killed by a signal ({}); stderr: {stderr}", o.status));
    }
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        return Err(format!("edgec panicked: {stderr}"));
    }
    if !stderr.starts_with("error: ") || stderr.lines().count() != 1 {
        return Err(format!("stderr is not one 'error: ' line: {stderr}"));
    }
    let after = files(&dir);
    if after != before {
        let new: Vec<_> = after.iter().filter(|f| !before.contains(f)).collect();
        return Err(format!("files were written or changed: {new:?}; stderr: {stderr}"));
    }
    Ok(stderr)
}

fn case_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for sub in std::fs::read_dir(cases_dir()).unwrap() {
        let sub = sub.unwrap().path();
        if sub.is_dir() {
            for f in std::fs::read_dir(&sub).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "case") {
                    paths.push(f);
                }
            }
        }
    }
    paths.sort();
    paths
}

#[test]
fn malformed_inputs_fail_cleanly_with_exact_messages() {
    let bless = std::env::var_os("EDGEC_BLESS").is_some();
    let paths = case_paths();
    assert!(paths.len() >= 40, "the suite has {} cases; the issue asks for at least 40", paths.len());
    let mut failures = Vec::new();
    for path in &paths {
        let name = path.strip_prefix(cases_dir()).unwrap().display().to_string();
        let case = match parse_case(path) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        match run_case(&case) {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok(actual) if actual == case.expect => {}
            Ok(actual) if bless => {
                let src = std::fs::read_to_string(&case.path).unwrap();
                let head = src.split_once("\nexpect:\n").unwrap().0;
                std::fs::write(&case.path, format!("{head}\nexpect:\n{actual}\n")).unwrap();
                eprintln!("blessed {name}");
            }
            Ok(actual) => failures.push(format!("{name}:\n  expected: {}\n  actual:   {actual}", case.expect)),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), paths.len(), failures.join("\n"));
}

/// The unbroken inputs compile (and the compiled directory runs), so each case fails because
/// of its edits.
#[test]
fn bases_are_valid() {
    for input in ["checkpoint", "gguf", "onnx", "onnx-with-past", "weights"] {
        let case = Case {
            path: PathBuf::new(),
            input: input.into(),
            edits: Vec::new(),
            args: Vec::new(),
            text: String::new(),
            expect: String::new(),
        };
        let tmp = tempfile::tempdir().unwrap();
        build_input(&case, tmp.path());
        let o = command(&case, tmp.path()).output().unwrap();
        assert!(o.status.success(), "{input}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

/// `edgec --help` and the README document every configurable limit with its default.
#[test]
fn limits_are_documented() {
    let o = edgec(&["--help"]);
    let help = String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for l in edgec_frontend::limits::ALL {
        let (name, d) = (l.name(), l.default_value());
        let documented = help.contains(&format!("{name} (default {d}:")) || help.contains(&format!("{name} ({d}:"));
        assert!(documented, "`edgec --help` does not give {name}'s default {d}: {help}");
        assert!(readme.contains(&format!("`{name}`")), "README.md does not name the limit {name}");
    }
}
