//! The hand-written pre-tokenizers (`edgec_runtime::tokenizer::pre_tokenize`) against
//! HuggingFace `tokenizers` running each model's own split regex
//! (`tests/tokenizer/make_pretokenizer_cases.py` wrote `pretokenizer_cases.json`).

use edgec_runtime::tokenizer::{LLAMA3_PATTERN, PreTokenizer, QWEN2_PATTERN, pre_tokenize};

#[test]
fn llama3_and_qwen2_split_like_hf_tokenizers() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tokenizer/pretokenizer_cases.json"))
        .unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut failures = Vec::new();
    for (name, pre, pattern) in
        [("llama3", PreTokenizer::Llama3, LLAMA3_PATTERN), ("qwen2", PreTokenizer::Qwen2, QWEN2_PATTERN)]
    {
        // The cases were made with the very regex the tokenizer.json files carry.
        assert_eq!(all[name]["pattern"], pattern, "{name}: the cases were made with another pattern");
        assert_eq!(pre.split_pattern(), Some(pattern));
        for case in all[name]["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<&str> = case["pieces"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
            let got = pre_tokenize(pre, text);
            if got != want {
                failures.push(format!("{name} {text:?}:\n  got  {got:?}\n  want {want:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// End to end through `tokenizer.json`: a tiny BPE trained by HuggingFace `tokenizers` with
/// Llama 3's (Qwen2's) pre-tokenizer layout (Split by the regex, then ByteLevel without its own
/// regex) loads as that pre-tokenizer and encodes every string to HF's ids.
#[test]
fn tokenizer_json_with_a_split_regex_encodes_like_hf() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tokenizer");
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/pretokenizer_cases.json")).unwrap()).unwrap();
    let mut failures = Vec::new();
    for (name, pre) in [("llama3", PreTokenizer::Llama3), ("qwen2", PreTokenizer::Qwen2)] {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/{name}-mini.json")).unwrap()).unwrap();
        let t = edgec::tokenizer::from_hf_json(&json).unwrap();
        assert_eq!(t.pre, pre, "{name}");
        for case in all[name]["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
            let got = t.encode(text).unwrap();
            if got != want {
                failures.push(format!("{name} {text:?}: got {got:?}, HF gives {want:?}"));
            }
            assert_eq!(t.decode(&got).unwrap(), text, "{name}: decoding gives the text back");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Another regex is refused by name.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/llama3-mini.json")).unwrap()).unwrap();
    json["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+|\\w+".into();
    let e = edgec::tokenizer::from_hf_json(&json).unwrap_err().to_string();
    assert!(e.contains("splits by another regex"), "{e}");
}
