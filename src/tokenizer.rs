//! The model's tokenizer, compiled into the runtime's binary table (`NAME.tokenizer`, format in
//! `edgec_runtime::tokenizer`): from GGUF metadata (`tokenizer.ggml.*`) or a HuggingFace
//! checkpoint's `tokenizer.json`.

use anyhow::{Context, Result, bail};
use edgec_frontend::{GgufFile, GgufTokenizer};
use edgec_runtime::tokenizer::{PreTokenizer, Tokenizer};
use serde_json::Value;
use std::path::Path;

/// The file name of the tokenizer beside the weights.
pub fn file_name(model_name: &str) -> String {
    format!("{model_name}.tokenizer")
}

/// The tokenizer of a model file or checkpoint directory; `None` for a checkpoint without a
/// `tokenizer.json`. A GGUF file must have one.
pub fn for_model(model: &Path) -> Result<Option<Tokenizer>> {
    if crate::compile::is_onnx(model) {
        // An ONNX export sits beside the checkpoint's tokenizer.json, if anything.
        return match model.parent() {
            Some(dir) if dir.join("tokenizer.json").is_file() => for_model(dir),
            _ => Ok(None),
        };
    }
    if model.is_file() {
        let file = GgufFile::open(model)?;
        let t = file.tokenizer()?;
        return from_gguf(&t).map(Some).with_context(|| format!("{}: tokenizer", model.display()));
    }
    let path = model.join("tokenizer.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: Value = serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    from_hf_json(&json).map(Some).with_context(|| format!("{}", path.display()))
}

/// The tokenizer for `edgec run MODEL`: `NAME.tokenizer` in a compiled directory, else the
/// model's own (see [`for_model`]).
pub fn for_run(model: &Path) -> Result<Option<Tokenizer>> {
    if model.join(crate::manifest::FILE_NAME).is_file() {
        let m = crate::manifest::Manifest::read(model)?;
        let path = model.join(file_name(&m.name));
        return if path.is_file() { Ok(Some(Tokenizer::load(&path)?)) } else { Ok(None) };
    }
    for_model(model)
}

/// The `k` largest `(index, value)` of `row`, largest first (ties: lower index first).
pub fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = row.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

/// From `tokenizer.ggml.*`: byte-level BPE (`tokenizer.ggml.model = gpt2`); control (3) and
/// user-defined (4) tokens are special.
pub fn from_gguf(t: &GgufTokenizer) -> Result<Tokenizer> {
    if t.model != "gpt2" {
        bail!("tokenizer.ggml.model = '{}' is not supported (supported: gpt2, byte-level BPE)", t.model);
    }
    let pre_name = t.pre.as_deref().unwrap_or("default");
    let pre = PreTokenizer::from_gguf_name(pre_name).with_context(|| {
        format!("tokenizer.ggml.pre = '{pre_name}' is not supported (supported: {})", PreTokenizer::SUPPORTED)
    })?;
    let vocab: Vec<&str> = t.tokens.iter().map(String::as_str).collect();
    let special: Vec<bool> = t.token_types.iter().map(|&ty| ty == 3 || ty == 4).collect();
    let merges: Vec<&str> = t.merges.iter().map(String::as_str).collect();
    Ok(Tokenizer::from_vocab(pre, &vocab, &special, &merges, t.bos, t.eos, t.add_bos)?)
}

/// From a HuggingFace `tokenizer.json` with a byte-level BPE model: `ByteLevel` pre-tokenizer
/// alone (gpt2), after `Digits(individual_digits)` (smollm), or after a `Split` by Llama 3's or
/// Qwen2's regex; `added_tokens` are special.
pub fn from_hf_json(json: &Value) -> Result<Tokenizer> {
    let model = &json["model"];
    if model["type"] != "BPE" {
        bail!("model.type {} is not supported (supported: BPE)", model["type"]);
    }
    let vocab_map = model["vocab"].as_object().context("model.vocab must be an object")?;
    let mut vocab: Vec<Option<String>> = vec![None; vocab_map.len()];
    let mut special = vec![false; vocab_map.len()];
    let mut place = |id: u64, s: &str, sp: bool| -> Result<()> {
        let i = usize::try_from(id).ok().filter(|&i| i < 1 << 24).context("token id out of range")?;
        if vocab.len() <= i {
            vocab.resize(i + 1, None);
            special.resize(i + 1, false);
        }
        vocab[i] = Some(s.to_string());
        special[i] |= sp;
        Ok(())
    };
    for (s, id) in vocab_map {
        place(id.as_u64().context("model.vocab ids must be integers")?, s, false)?;
    }
    for t in json["added_tokens"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let id = t["id"].as_u64().context("added_tokens[].id must be an integer")?;
        place(id, t["content"].as_str().context("added_tokens[].content must be a string")?, true)?;
    }
    let vocab: Vec<String> = vocab
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.with_context(|| format!("no token with id {i}")))
        .collect::<Result<_>>()?;
    let merges: Vec<String> = model["merges"]
        .as_array()
        .context("model.merges must be a list")?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(p) if p.len() == 2 => {
                Ok(format!("{} {}", p[0].as_str().context("merge")?, p[1].as_str().context("merge")?))
            }
            _ => bail!("model.merges entries must be 'a b' or ['a', 'b']"),
        })
        .collect::<Result<_>>()?;
    let pre = hf_pre(&json["pre_tokenizer"])?;
    let find = |name: &str| vocab.iter().position(|v| v == name).map(|i| i as u32);
    let bos = ["<|begin_of_text|>", "<s>", "<|im_start|>", "<|endoftext|>"].iter().find_map(|n| find(n));
    let eos = ["<|end_of_text|>", "</s>", "<|im_end|>", "<|endoftext|>"].iter().find_map(|n| find(n));
    let vocab_ref: Vec<&str> = vocab.iter().map(String::as_str).collect();
    let merges_ref: Vec<&str> = merges.iter().map(String::as_str).collect();
    Ok(Tokenizer::from_vocab(pre, &vocab_ref, &special, &merges_ref, bos, eos, false)?)
}

const HF_SUPPORTED: &str =
    "ByteLevel, Digits + ByteLevel, and Split by Llama 3's or Qwen2's regex + ByteLevel without its regex";

fn hf_pre(p: &Value) -> Result<PreTokenizer> {
    let ty = p["type"].as_str().unwrap_or("none");
    let byte_level = |v: &Value| v["type"] == "ByteLevel" && v["add_prefix_space"] != true;
    // Llama 3 / Qwen2: their regex isolates the words, then ByteLevel only maps bytes.
    let split = |v: &Value| {
        let isolated = v["type"] == "Split" && v["behavior"] == "Isolated" && v["invert"] != true;
        let pattern = v["pattern"]["Regex"].as_str().filter(|_| isolated)?;
        [PreTokenizer::Llama3, PreTokenizer::Qwen2].into_iter().find(|pre| pre.split_pattern() == Some(pattern))
    };
    match ty {
        "ByteLevel" if byte_level(p) => Ok(PreTokenizer::Gpt2),
        "Sequence" => match p["pretokenizers"].as_array().map(Vec::as_slice) {
            Some([d, b]) if d["type"] == "Digits" && d["individual_digits"] == true && byte_level(b) => {
                Ok(PreTokenizer::Smollm)
            }
            Some([sp, b]) if byte_level(b) && b["use_regex"] == false && sp["type"] == "Split" => split(sp)
                .with_context(|| format!("pre_tokenizer {sp} splits by another regex (supported: {HF_SUPPORTED})")),
            Some([b]) if byte_level(b) => Ok(PreTokenizer::Gpt2),
            _ => bail!("pre_tokenizer {p} is not supported (supported: {HF_SUPPORTED})"),
        },
        _ => bail!("pre_tokenizer of type '{ty}' is not supported (supported: {HF_SUPPORTED})"),
    }
}
