//! `edgec run --chat`: the model's chat template, recognised by its role markers (no Jinja is
//! evaluated), turned into prompt text, and the token that ends an assistant turn.
//!
//! Supported families: ChatML (`<|im_start|>role\n...<|im_end|>\n`: SmolLM2, Qwen) and Llama 3
//! (`<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>`). A template's markers must be
//! special tokens of the vocabulary; anything else is refused with what was found.

use anyhow::{Context, Result, bail};
use edgec_runtime::Tokenizer;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    ChatMl,
    Llama3,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::ChatMl => "ChatML",
            Family::Llama3 => "Llama 3",
        }
    }

    /// The special tokens the family's turns are built from; the last ends a turn.
    fn markers(self) -> &'static [&'static str] {
        match self {
            Family::ChatMl => &["<|im_start|>", "<|im_end|>"],
            Family::Llama3 => &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        }
    }
}

/// A recognised chat template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatTemplate {
    pub family: Family,
    /// The system message the template inserts when the conversation has none (SmolLM2's
    /// "You are a helpful AI assistant named SmolLM, ..."), read from the template's literal text.
    pub default_system: Option<String>,
    /// The token that ends a turn (`<|im_end|>`, `<|eot_id|>`).
    pub end_of_turn: u32,
    /// Llama 3's `<|begin_of_text|>`, written once before the first turn.
    pub begin: Option<String>,
}

impl ChatTemplate {
    /// Recognises `template` (Jinja source) by its role markers and checks them against the
    /// vocabulary of `tokenizer`.
    pub fn detect(template: &str, tokenizer: &Tokenizer) -> Result<ChatTemplate> {
        let family = if template.contains("<|im_start|>") && template.contains("<|im_end|>") {
            Family::ChatMl
        } else if template.contains("<|start_header_id|>")
            && template.contains("<|end_header_id|>")
            && template.contains("<|eot_id|>")
        {
            Family::Llama3
        } else {
            let found: Vec<String> = markers_in(template);
            bail!(
                "chat template not recognised (supported: ChatML <|im_start|>/<|im_end|>, Llama 3 <|start_header_id|>/<|end_header_id|>/<|eot_id|>); it uses {}",
                if found.is_empty() { "no <|...|> or [..] markers".to_string() } else { found.join(", ") }
            );
        };
        let mut end_of_turn = 0;
        for m in family.markers() {
            end_of_turn = special_id(tokenizer, m).with_context(|| {
                format!("the chat template is {} but {m} is not a special token of the vocabulary", family.name())
            })?;
        }
        let begin = match family {
            Family::Llama3 if template.contains("bos_token") || template.contains("<|begin_of_text|>") => {
                let b = "<|begin_of_text|>";
                special_id(tokenizer, b).with_context(|| format!("{b} is not a special token of the vocabulary"))?;
                Some(b.to_string())
            }
            _ => None,
        };
        let default_system = match family {
            Family::ChatMl => literal_after(template, "<|im_start|>system\n", "<|im_end|>"),
            Family::Llama3 => literal_after(template, "<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>"),
        };
        Ok(ChatTemplate { family, default_system, end_of_turn, begin })
    }

    /// The template of a GGUF file (`tokenizer.chat_template`) or a checkpoint directory
    /// (`tokenizer_config.json`'s `chat_template`).
    pub fn for_model(model: &Path, tokenizer: &Tokenizer) -> Result<ChatTemplate> {
        let template = if model.is_file() {
            let file = edgec_frontend::GgufFile::open(model)?;
            file.opt_str("tokenizer.chat_template")?
                .with_context(|| format!("{} has no chat template (tokenizer.chat_template)", model.display()))?
                .to_string()
        } else {
            let path = model.join("tokenizer_config.json");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("--chat needs a chat template, and {} has no {}", model.display(), path.display())
            })?;
            let json: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
            json["chat_template"]
                .as_str()
                .with_context(|| format!("{} has no chat_template string", path.display()))?
                .to_string()
        };
        ChatTemplate::detect(&template, tokenizer)
    }

    /// One turn of `role` saying `content`, ended.
    pub fn turn(&self, role: &str, content: &str) -> String {
        match self.family {
            Family::ChatMl => format!("<|im_start|>{role}\n{content}<|im_end|>\n"),
            Family::Llama3 => format!("<|start_header_id|>{role}<|end_header_id|>\n\n{}<|eot_id|>", content.trim()),
        }
    }

    /// The opening of the assistant's turn (the generation prompt).
    pub fn assistant_prompt(&self) -> &'static str {
        match self.family {
            Family::ChatMl => "<|im_start|>assistant\n",
            Family::Llama3 => "<|start_header_id|>assistant<|end_header_id|>\n\n",
        }
    }

    /// What follows the end-of-turn token before the next turn.
    pub fn after_turn(&self) -> &'static str {
        match self.family {
            Family::ChatMl => "\n",
            Family::Llama3 => "",
        }
    }

    /// The text of a conversation's first user turn, ready for the assistant's reply: the
    /// system turn (`system`, else the template's default), the user turn, the generation
    /// prompt.
    pub fn first_prompt(&self, system: Option<&str>, user: &str) -> String {
        let mut s = self.begin.clone().unwrap_or_default();
        if let Some(sys) = system.or(self.default_system.as_deref()) {
            s.push_str(&self.turn("system", sys));
        }
        s.push_str(&self.turn("user", user));
        s.push_str(self.assistant_prompt());
        s
    }

    /// A later user turn, after an assistant turn that ended with the end-of-turn token.
    pub fn next_prompt(&self, user: &str) -> String {
        format!("{}{}{}", self.after_turn(), self.turn("user", user), self.assistant_prompt())
    }
}

fn special_id(t: &Tokenizer, text: &str) -> Option<u32> {
    match t.encode(text).ok()?.as_slice() {
        [id] if t.tokens.get(*id as usize).is_some_and(|tok| tok.special) => Some(*id),
        _ => None,
    }
}

/// The first literal text between `start` and `end` in the template that has no Jinja in it.
fn literal_after(template: &str, start: &str, end: &str) -> Option<String> {
    template.match_indices(start).find_map(|(i, _)| {
        let rest = &template[i + start.len()..];
        let text = &rest[..rest.find(end)?];
        let plain = !text.is_empty() && !text.contains(['{', '}', '\'', '"', '+', '%']);
        plain.then(|| text.to_string())
    })
}

/// `<|...|>` and `[...]`-style markers in a template, for the error message.
fn markers_in(template: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for (open, close) in [("<|", "|>"), ("<", ">"), ("[INST", "]")] {
        let mut rest = template;
        while let Some(i) = rest.find(open) {
            let after = &rest[i..];
            let Some(j) = after[open.len()..].find(close) else { break };
            let m = &after[..open.len() + j + close.len()];
            if m.len() <= 40 && !m.contains(char::is_whitespace) && !found.iter().any(|f| f == m) {
                found.push(m.to_string());
            }
            rest = &after[open.len()..];
        }
        if !found.is_empty() {
            break;
        }
    }
    found.truncate(8);
    found
}
