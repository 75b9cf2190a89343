//! Byte-level BPE tokenizer (GPT-2, SmolLM, Llama 3, Qwen2 style): special tokens matched
//! first and never split, a pre-tokenizer that splits text into words, then BPE merges by rank
//! over each word's bytes. Encode and decode; decoding handles tokens that end inside a UTF-8
//! character ([`StreamDecoder`]).
//!
//! The compiler writes a tokenizer beside the weights as `NAME.tokenizer`, in this format
//! (little-endian, no padding):
//!
//! | size | field |
//! |---|---|
//! | 8 | magic `EDGECTOK` |
//! | 4 | u32 version, 1 |
//! | 4 | u32 pre-tokenizer: 0 `gpt2`, 1 `smollm` (gpt2 after isolating every digit) |
//! | 4 | u32 flags: bit 0 add the BOS token when encoding a prompt |
//! | 4 | u32 `bos` id, `0xFFFFFFFF` for none |
//! | 4 | u32 `eos` id, `0xFFFFFFFF` for none |
//! | 4 | u32 `n_tokens` |
//! | 4 | u32 `n_merges` |
//! | per token | u8 kind (0 normal, 1 special: matched verbatim in text, never split), u32 length, the token's raw bytes (not the GPT-2 unicode-mapped form) |
//! | per merge, by rank | u32 left id, u32 right id, u32 merged id |
//!
//! The file ends there. [`Tokenizer::from_bytes`] checks every count, id and length with
//! checked arithmetic against the bytes present and returns an error, never panics, on a bad
//! file. [`Tokenizer::to_bytes`] writes the same format.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

pub const MAGIC: [u8; 8] = *b"EDGECTOK";
pub const VERSION: u32 = 1;
const NONE: u32 = u32::MAX;
/// No token is longer than this (real vocabularies stay under a few hundred bytes).
pub const MAX_TOKEN_BYTES: u32 = 1 << 16;

/// What is wrong with a tokenizer file or request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizerError(pub String);

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tokenizer: {}", self.0)
    }
}

impl std::error::Error for TokenizerError {}

fn bad(m: impl Into<String>) -> TokenizerError {
    TokenizerError(m.into())
}

/// How text is split into words before BPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2's regex: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    Gpt2,
    /// SmolLM / StarCoder: every `\p{N}` is its own word first, then GPT-2's regex on the rest.
    Smollm,
    /// Llama 3 (tiktoken's cl100k pattern): `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|
    /// \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    Llama3,
    /// Qwen2: Llama 3's pattern with single digits (`\p{N}` instead of `\p{N}{1,3}`).
    Qwen2,
}

impl PreTokenizer {
    pub fn id(self) -> u32 {
        match self {
            PreTokenizer::Gpt2 => 0,
            PreTokenizer::Smollm => 1,
            PreTokenizer::Llama3 => 2,
            PreTokenizer::Qwen2 => 3,
        }
    }
    pub fn from_id(id: u32) -> Option<PreTokenizer> {
        match id {
            0 => Some(PreTokenizer::Gpt2),
            1 => Some(PreTokenizer::Smollm),
            2 => Some(PreTokenizer::Llama3),
            3 => Some(PreTokenizer::Qwen2),
            _ => None,
        }
    }
    /// From llama.cpp's `tokenizer.ggml.pre` name.
    pub fn from_gguf_name(name: &str) -> Option<PreTokenizer> {
        match name {
            "gpt2" | "gpt-2" | "default" => Some(PreTokenizer::Gpt2),
            "smollm" | "starcoder" | "refact" | "codeshell" => Some(PreTokenizer::Smollm),
            "llama-bpe" | "llama3" => Some(PreTokenizer::Llama3),
            "qwen2" => Some(PreTokenizer::Qwen2),
            _ => None,
        }
    }
    pub const SUPPORTED: &str = "gpt2, smollm (starcoder, refact, codeshell), llama-bpe (Llama 3), qwen2";

    /// The regex of a HuggingFace `Split` pre-tokenizer this one implements, if any.
    pub fn split_pattern(self) -> Option<&'static str> {
        match self {
            PreTokenizer::Llama3 => Some(LLAMA3_PATTERN),
            PreTokenizer::Qwen2 => Some(QWEN2_PATTERN),
            PreTokenizer::Gpt2 | PreTokenizer::Smollm => None,
        }
    }
}

/// Llama 3's `Split` regex, as its `tokenizer.json` writes it.
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's `Split` regex, as its `tokenizer.json` writes it.
pub const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl PreTokenizer {}

/// One vocabulary entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub bytes: Vec<u8>,
    /// Matched verbatim in text before pre-tokenization and never split or merged into.
    pub special: bool,
}

/// A loaded tokenizer.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    pub pre: PreTokenizer,
    pub tokens: Vec<Token>,
    /// `(left, right, merged)` in rank order.
    pub merges: Vec<(u32, u32, u32)>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    /// `(left, right)` → `(rank, merged)`.
    merge_rank: HashMap<(u32, u32), (u32, u32)>,
    /// The token of each single byte (byte-level vocabularies have all 256).
    byte_token: [u32; 256],
    /// Special tokens, longest first.
    specials: Vec<(Vec<u8>, u32)>,
}

impl Tokenizer {
    /// Builds a tokenizer and its lookup tables, checking every id.
    pub fn new(
        pre: PreTokenizer,
        tokens: Vec<Token>,
        merges: Vec<(u32, u32, u32)>,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
    ) -> Result<Tokenizer, TokenizerError> {
        let n = tokens.len() as u64;
        if n == 0 || n >= u64::from(NONE) {
            return Err(bad(format!("{n} tokens (need 1 to {})", NONE - 1)));
        }
        for (what, id) in [("bos", bos), ("eos", eos)] {
            if let Some(id) = id.filter(|&i| u64::from(i) >= n) {
                return Err(bad(format!("{what} id {id} is out of range ({n} tokens)")));
            }
        }
        let mut byte_token = [NONE; 256];
        let mut specials = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            if t.special {
                if t.bytes.is_empty() {
                    return Err(bad(format!("special token {i} is empty")));
                }
                specials.push((t.bytes.clone(), i as u32));
            } else if let [b] = t.bytes[..]
                && byte_token[b as usize] == NONE
            {
                byte_token[b as usize] = i as u32;
            }
        }
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut merge_rank = HashMap::with_capacity(merges.len());
        for (rank, &(l, r, m)) in merges.iter().enumerate() {
            if [l, r, m].iter().any(|&x| u64::from(x) >= n) {
                return Err(bad(format!("merge {rank} ({l}, {r} -> {m}) refers to a token out of range ({n} tokens)")));
            }
            merge_rank.entry((l, r)).or_insert((rank as u32, m));
        }
        Ok(Tokenizer { pre, tokens, merges, bos, eos, add_bos, merge_rank, byte_token, specials })
    }

    /// Builds from GPT-2-style vocabulary strings (bytes mapped to printable characters, as in
    /// HF `tokenizer.json` and GGUF `tokenizer.ggml.tokens`) and `"left right"` merges.
    /// `special[i]` marks tokens stored as plain text and matched verbatim.
    pub fn from_vocab(
        pre: PreTokenizer,
        vocab: &[&str],
        special: &[bool],
        merges: &[&str],
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
    ) -> Result<Tokenizer, TokenizerError> {
        if special.len() != vocab.len() {
            return Err(bad(format!("{} special flags for {} tokens", special.len(), vocab.len())));
        }
        let unmap = unicode_to_bytes();
        let mut ids: HashMap<&str, u32> = HashMap::with_capacity(vocab.len());
        let mut tokens = Vec::with_capacity(vocab.len());
        for (i, (&s, &sp)) in vocab.iter().zip(special).enumerate() {
            ids.entry(s).or_insert(i as u32);
            let bytes = if sp {
                s.as_bytes().to_vec()
            } else {
                let mut b = Vec::with_capacity(s.len());
                for c in s.chars() {
                    match unmap.get(&c) {
                        Some(&x) => b.push(x),
                        // Not byte-level (a user-defined token): keep its UTF-8.
                        None => b.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                b
            };
            tokens.push(Token { bytes, special: sp });
        }
        let mut m = Vec::with_capacity(merges.len());
        for (rank, line) in merges.iter().enumerate() {
            let (l, r) =
                line.split_once(' ').ok_or_else(|| bad(format!("merge {rank} '{line}' is not 'left right'")))?;
            let id = |s: &str| ids.get(s).copied();
            let merged = format!("{l}{r}");
            match (id(l), id(r), id(&merged)) {
                (Some(a), Some(b), Some(c)) => m.push((a, b, c)),
                _ => return Err(bad(format!("merge {rank} '{line}' uses or makes a token not in the vocabulary"))),
            }
        }
        Tokenizer::new(pre, tokens, m, bos, eos, add_bos)
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Token ids of `text`: special tokens where their text appears, BPE elsewhere. Adds the
    /// BOS token first when the tokenizer says so.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::new();
        if self.add_bos
            && let Some(b) = self.bos
        {
            out.push(b);
        }
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if let Some((len, id)) = self.special_at(&bytes[i..]) {
                self.encode_plain(&text[start..i], &mut out)?;
                out.push(id);
                i += len;
                start = i;
            } else {
                i += 1;
            }
        }
        self.encode_plain(&text[start..], &mut out)?;
        Ok(out)
    }

    fn special_at(&self, rest: &[u8]) -> Option<(usize, u32)> {
        self.specials.iter().find(|(s, _)| rest.starts_with(s)).map(|(s, id)| (s.len(), *id))
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        for word in pre_tokenize(self.pre, text) {
            self.bpe(word.as_bytes(), out)?;
        }
        Ok(())
    }

    /// BPE over one word: start from single bytes, merge the lowest-ranked adjacent pair until
    /// none is in the merge table.
    fn bpe(&self, word: &[u8], out: &mut Vec<u32>) -> Result<(), TokenizerError> {
        let mut syms = Vec::with_capacity(word.len());
        for &b in word {
            let t = self.byte_token[b as usize];
            if t == NONE {
                return Err(bad(format!("byte 0x{b:02x} has no token")));
            }
            syms.push(t);
        }
        loop {
            let best = syms
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.merge_rank.get(&(w[0], w[1])).map(|&(rank, m)| (rank, i, m)))
                .min();
            let Some((_, i, m)) = best else { break };
            syms[i] = m;
            syms.remove(i + 1);
        }
        out.extend_from_slice(&syms);
        Ok(())
    }

    /// The bytes of a token, or `None` for an id out of range.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize).map(|t| &t.bytes[..])
    }

    /// The text of `ids`; invalid UTF-8 (a sequence cut short) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id).ok_or_else(|| bad(format!("token id {id} is out of range")))?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Reads a `NAME.tokenizer` file.
    pub fn load(path: &Path) -> Result<Tokenizer, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        Tokenizer::from_bytes(&bytes).map_err(|e| bad(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses the binary format (see the module documentation).
    pub fn from_bytes(b: &[u8]) -> Result<Tokenizer, TokenizerError> {
        let mut r = ByteReader { b, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(bad("bad magic (expected \"EDGECTOK\")"));
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(bad(format!("unsupported version {version} (expected {VERSION})")));
        }
        let pre_id = r.u32()?;
        let pre = PreTokenizer::from_id(pre_id).ok_or_else(|| bad(format!("unknown pre-tokenizer {pre_id}")))?;
        let flags = r.u32()?;
        if flags & !1 != 0 {
            return Err(bad(format!("unknown flags 0x{flags:x}")));
        }
        let opt = |v: u32| if v == NONE { None } else { Some(v) };
        let (bos, eos) = (opt(r.u32()?), opt(r.u32()?));
        let n_tokens = r.u32()?;
        let n_merges = r.u32()?;
        // Each token takes at least 5 bytes, each merge 12: bound the counts by what is left.
        if u64::from(n_tokens) * 5 + u64::from(n_merges) * 12 > r.left() as u64 {
            return Err(bad(format!("{n_tokens} tokens and {n_merges} merges do not fit in the file")));
        }
        let mut tokens = Vec::with_capacity(n_tokens as usize);
        for i in 0..n_tokens {
            let kind = r.take(1)?[0];
            let len = r.u32()?;
            if kind > 1 || len > MAX_TOKEN_BYTES {
                return Err(bad(format!("token {i}: bad kind {kind} or length {len}")));
            }
            tokens.push(Token { bytes: r.take(len as usize)?.to_vec(), special: kind == 1 });
        }
        let mut merges = Vec::with_capacity(n_merges as usize);
        for _ in 0..n_merges {
            merges.push((r.u32()?, r.u32()?, r.u32()?));
        }
        if r.left() != 0 {
            return Err(bad(format!("{} bytes after the last merge", r.left())));
        }
        Tokenizer::new(pre, tokens, merges, bos, eos, flags & 1 != 0)
    }

    /// The binary format (see the module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend_from_slice(&MAGIC);
        let n = |x: Option<u32>| x.unwrap_or(NONE);
        for v in [
            VERSION,
            self.pre.id(),
            u32::from(self.add_bos),
            n(self.bos),
            n(self.eos),
            self.tokens.len() as u32,
            self.merges.len() as u32,
        ] {
            o.extend_from_slice(&v.to_le_bytes());
        }
        for t in &self.tokens {
            o.push(u8::from(t.special));
            o.extend_from_slice(&(t.bytes.len() as u32).to_le_bytes());
            o.extend_from_slice(&t.bytes);
        }
        for &(l, r, m) in &self.merges {
            for v in [l, r, m] {
                o.extend_from_slice(&v.to_le_bytes());
            }
        }
        o
    }
}

struct ByteReader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenizerError> {
        if n > self.left() {
            return Err(bad(format!("truncated at byte {} (wanted {n} more, {} left)", self.pos, self.left())));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, TokenizerError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decodes token by token, holding back the bytes of a UTF-8 character split across tokens
/// until it is complete.
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// The text completed by `bytes` (a token's bytes). Invalid sequences become U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // Valid UTF-8 up to `good`, so nothing is replaced here.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..good]));
                    match e.error_len() {
                        // Incomplete at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(n) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + n);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is still held back, as lossy text.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the other 68 to U+0100 on.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            next += 1;
            // Below U+0200: always a char.
            char::from_u32(next - 1).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
    }
    map
}

fn unicode_to_bytes() -> HashMap<char, u8> {
    bytes_to_unicode().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect()
}

fn is_letter(c: char) -> bool {
    // \p{L}: std has no general categories; alphabetic minus numeric letters is close (it also
    // counts combining marks with the Other_Alphabetic property as letters).
    c.is_alphabetic() && !c.is_numeric()
}

fn is_number(c: char) -> bool {
    c.is_numeric()
}

fn is_other(c: char) -> bool {
    !c.is_whitespace() && !is_letter(c) && !is_number(c)
}

/// Splits `text` into the words BPE runs over.
pub fn pre_tokenize(pre: PreTokenizer, text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    match pre {
        PreTokenizer::Gpt2 => gpt2_split(text, &mut out),
        PreTokenizer::Smollm => {
            // Digits(individual_digits=true) first: each \p{N} is a word of its own.
            let mut start = 0;
            for (i, c) in text.char_indices() {
                if is_number(c) {
                    gpt2_split(&text[start..i], &mut out);
                    out.push(&text[i..i + c.len_utf8()]);
                    start = i + c.len_utf8();
                }
            }
            gpt2_split(&text[start..], &mut out);
        }
        PreTokenizer::Llama3 => llama3_split(text, 3, &mut out),
        PreTokenizer::Qwen2 => llama3_split(text, 1, &mut out),
    }
    out
}

/// Llama 3's pattern by hand (Qwen2's with `max_digits` 1), alternatives tried in order at each
/// position as a backtracking regex engine does:
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
/// \s*[\r\n]+|\s+(?!\S)|\s+`.
fn llama3_split<'a>(text: &'a str, max_digits: usize, out: &mut Vec<&'a str>) {
    let scan = Scan::new(text);
    let n = scan.len();
    let at = |i: usize| scan.at(i);
    let byte = |i: usize| scan.byte(i);
    let run = |i: usize, f: &dyn Fn(char) -> bool| scan.run(i, f);
    let newline = |c: char| c == '\r' || c == '\n';
    let mut i = 0;
    while i < n {
        let Some(c) = at(i) else { break };
        let end = 'matched: {
            // Contractions, any case.
            if c == '\'' {
                let lower = |k: usize| at(i + k).map(|c| c.to_ascii_lowercase());
                match (lower(1), lower(2)) {
                    (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => break 'matched i + 3,
                    (Some('s' | 't' | 'm' | 'd'), _) => break 'matched i + 2,
                    _ => {}
                }
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`: the optional char first (greedy), then without it.
            if !newline(c) && !is_letter(c) && !is_number(c) && at(i + 1).is_some_and(is_letter) {
                break 'matched run(i + 1, &is_letter);
            }
            if is_letter(c) {
                break 'matched run(i, &is_letter);
            }
            // `\p{N}{1,3}`.
            if is_number(c) {
                break 'matched run(i, &is_number).min(i + max_digits);
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`.
            let body = if c == ' ' { i + 1 } else { i };
            if at(body).is_some_and(is_other) {
                let e = run(body, &is_other);
                break 'matched run(e, &newline);
            }
            // Whitespace from here on: `\s*[\r\n]+` ends at the run's last newline;
            // `\s+(?!\S)` leaves the run's last char to a following non-space; else `\s+`.
            let e = run(i, &|c: char| c.is_whitespace());
            if let Some(k) = (i..e).rev().find(|&k| at(k).is_some_and(newline)) {
                break 'matched k + 1;
            }
            if e < n && e - i >= 2 { e - 1 } else { e }
        };
        out.push(&text[byte(i)..byte(end)]);
        i = end;
    }
}

/// A text as chars with their byte offsets, for the hand-written pre-tokenizer patterns.
struct Scan<'a> {
    text: &'a str,
    chars: Vec<(usize, char)>,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Scan<'a> {
        Scan { text, chars: text.char_indices().collect() }
    }
    fn len(&self) -> usize {
        self.chars.len()
    }
    /// Char `i`, if any.
    fn at(&self, i: usize) -> Option<char> {
        self.chars.get(i).map(|&(_, c)| c)
    }
    /// Byte offset of char `i` (the text's length past the end).
    fn byte(&self, i: usize) -> usize {
        self.chars.get(i).map_or(self.text.len(), |&(b, _)| b)
    }
    /// The end of the run of chars satisfying `f` that starts at `i`.
    fn run(&self, mut i: usize, f: &dyn Fn(char) -> bool) -> usize {
        while self.at(i).is_some_and(f) {
            i += 1;
        }
        i
    }
}

/// GPT-2's pattern, by hand:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
/// alternatives tried in order at each position, as a backtracking regex engine does.
fn gpt2_split<'a>(text: &'a str, out: &mut Vec<&'a str>) {
    let scan = Scan::new(text);
    let n = scan.len();
    let at = |i: usize| scan.at(i);
    let byte = |i: usize| scan.byte(i);
    let run = |i: usize, f: &dyn Fn(char) -> bool| scan.run(i, f);
    let mut i = 0;
    while i < n {
        let Some(c) = at(i) else { break };
        // Contractions.
        if c == '\'' {
            let next = at(i + 1);
            let two = next.zip(at(i + 2));
            let len = match (next, two) {
                (_, Some(('r', 'e') | ('v', 'e') | ('l', 'l'))) => 3,
                (Some('s' | 't' | 'm' | 'd'), _) => 2,
                _ => 0,
            };
            if len > 0 {
                out.push(&text[byte(i)..byte(i + len)]);
                i += len;
                continue;
            }
        }
        // ` ?X+` for letters, numbers, and everything else but whitespace.
        let body = if c == ' ' { i + 1 } else { i };
        if let Some(d) = at(body) {
            let class: Option<&dyn Fn(char) -> bool> = if is_letter(d) {
                Some(&is_letter)
            } else if is_number(d) {
                Some(&is_number)
            } else if is_other(d) {
                Some(&is_other)
            } else {
                None
            };
            if let Some(f) = class {
                let end = run(body, f);
                out.push(&text[byte(i)..byte(end)]);
                i = end;
                continue;
            }
        }
        // Whitespace: `\s+(?!\S)` takes the run but leaves its last char when a non-space
        // follows; a single whitespace char before a non-space is `\s+`.
        let end = run(i, &|c: char| c.is_whitespace());
        let end = if end < n && end - i >= 2 { end - 1 } else { end };
        out.push(&text[byte(i)..byte(end)]);
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_split_matches_the_regex() {
        fn s(t: &str) -> Vec<&str> {
            pre_tokenize(PreTokenizer::Gpt2, t)
        }
        assert_eq!(s("Hello world"), ["Hello", " world"]);
        assert_eq!(s("Hello\n\nWorld"), ["Hello", "\n", "\n", "World"]);
        assert_eq!(s("a   b"), ["a", "  ", " b"]);
        assert_eq!(s("end  "), ["end", "  "]);
        assert_eq!(s("I'm don't we'll they're"), ["I", "'m", " don", "'t", " we", "'ll", " they", "'re"]);
        assert_eq!(s("x=1+22;"), ["x", "=", "1", "+", "22", ";"]);
        assert_eq!(s(" !!?"), [" !!?"]);
        assert_eq!(s("'"), ["'"]);
        assert_eq!(pre_tokenize(PreTokenizer::Smollm, "in 2024!"), ["in", " ", "2", "0", "2", "4", "!"]);
    }

    #[test]
    fn bytes_to_unicode_is_gpt2s() {
        let m = bytes_to_unicode();
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[b'A' as usize], 'A');
        assert_eq!(m[0xAD], 'Ń');
        assert_eq!(unicode_to_bytes().len(), 256);
    }

    /// A byte-level vocabulary of all 256 bytes, "ab", "abc", " ab" and one special token.
    fn small() -> Tokenizer {
        let mut tokens: Vec<Token> = (0..=255u8).map(|b| Token { bytes: vec![b], special: false }).collect();
        for t in ["ab", "abc", " ab"] {
            tokens.push(Token { bytes: t.as_bytes().to_vec(), special: false });
        }
        tokens.push(Token { bytes: b"<|end|>".to_vec(), special: true });
        let (a, b, c, sp) = (u32::from(b'a'), u32::from(b'b'), u32::from(b'c'), u32::from(b' '));
        let merges = vec![(a, b, 256), (256, c, 257), (sp, 256, 258)];
        Tokenizer::new(PreTokenizer::Smollm, tokens, merges, Some(259), Some(259), true).unwrap()
    }

    #[test]
    fn encode_merges_by_rank_and_matches_specials_first() {
        let t = small();
        let ids = t.encode("abc ab<|end|>x1").unwrap();
        assert_eq!(ids, [259, 257, 258, 259, u32::from(b'x'), u32::from(b'1')]);
        assert_eq!(t.decode(&ids).unwrap(), "<|end|>abc ab<|end|>x1");
    }

    #[test]
    fn binary_format_round_trips_and_bad_bytes_are_errors() {
        let t = small();
        let bytes = t.to_bytes();
        let back = Tokenizer::from_bytes(&bytes).unwrap();
        assert_eq!((back.tokens.clone(), back.merges.clone()), (t.tokens.clone(), t.merges.clone()));
        assert_eq!((back.bos, back.eos, back.add_bos, back.pre), (t.bos, t.eos, t.add_bos, t.pre));
        // Every truncation, and every single-byte corruption of the header and the first
        // tokens, is an error or a valid tokenizer: never a panic.
        for n in 0..bytes.len() {
            assert!(Tokenizer::from_bytes(&bytes[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..bytes.len().min(200) {
            for x in [0x01u8, 0x80, 0xFF] {
                let mut b = bytes.clone();
                b[i] ^= x;
                let _ = Tokenizer::from_bytes(&b);
            }
        }
        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&9u32.to_le_bytes());
        assert!(Tokenizer::from_bytes(&b).unwrap_err().0.contains("version 9"));
        let mut b = bytes.clone();
        b[32..36].copy_from_slice(&u32::MAX.to_le_bytes()); // n_merges
        assert!(Tokenizer::from_bytes(&b).unwrap_err().0.contains("do not fit"));
        let mut b = bytes;
        let last = b.len() - 4;
        b[last..].copy_from_slice(&1000u32.to_le_bytes()); // a merge result out of range
        assert!(Tokenizer::from_bytes(&b).unwrap_err().0.contains("out of range"));
    }

    #[test]
    fn stream_decoder_waits_for_whole_characters() {
        let mut d = StreamDecoder::default();
        let e = "é€".as_bytes();
        assert_eq!(d.push(&e[..1]), "");
        assert_eq!(d.push(&e[1..3]), "é");
        assert_eq!(d.push(&e[3..]), "€");
        assert_eq!(d.push(&[0xFF, b'a']), "\u{FFFD}a");
        assert_eq!(d.push(&[0xE2]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }
}
