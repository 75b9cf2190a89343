//! The text form of a graph: [`print`] and [`parse`], which round-trip exactly.
//!
//! It is what golden tests, `--emit ir` and `--print-after` show. One statement per line, in
//! this order:
//!
//! ```text
//! graph NAME {
//!   sym NAME <= MAX                          ; a symbolic dim with its upper bound
//!   input NAME: TYPE
//!   weight NAME: TYPE = SOURCE
//!   state NAME: TYPE
//!   %N: TYPE = OP[(ATTRS)] OPERAND, ...      ; node N, numbered 0, 1, 2, ... in order
//!   output NAME = OPERAND
//! }
//! ```
//!
//! - `TYPE` is `dtype[dim, ...]` (`f32[seq, 8]`, a scalar is `i32[]`); a dim is a number or a
//!   symbol's name.
//! - `SOURCE` is one of `file "PATH" @ OFFSET as DTYPE`, `file "PATH" @ OFFSET as q8_0|q4_0|q4_1`
//!   (ggml block-quantized), `rope cos|sin theta=F rotary_dim=N` optionally followed by
//!   `llama3(factor=F, low_freq_factor=F, high_freq_factor=F, original_max_positions=N)`, or
//!   `literal [F, ...]`. Any number of `then TRANSFORM` may follow, applied in order: `permute
//!   dims=[N, ...] perm=[N, ...]`, and last `quantize FORMAT` (`f16`, `bf16`, `q8_c`, `q8_gG`,
//!   `q4s_gG`, `q4_gG`: how the weights file stores it; see [`crate::Transform`] and
//!   [`crate::quant`]).
//! - `ATTRS` are `key=value` pairs (any order when parsing; a value may be a list `[N, ...]`),
//!   or the bare flag `transpose_b` of `matmul`. `attention`'s `window` and `rms_norm`'s
//!   `group` are omitted when there is none. `reshape` and `expand` have no written attribute
//!   and `slice` writes only `axis` and `start`: their target shape (or length) is the node's
//!   written type.
//! - `OPERAND` is `%N` or the name of an input, weight or state.
//! - Names are identifiers `[A-Za-z_][A-Za-z0-9_.]*`, unique across inputs, weights and states.
//! - Floats print with Rust's shortest exact representation (`{:?}`), so they round-trip.
//! - Lines whose first non-blank character is `;` are comments; they and blank lines are skipped
//!   by the parser. The printer emits none.
//!
//! [`parse`] checks syntax, names, declaration order and each node's written type against
//! [`crate::infer::infer_type`]; the remaining rules (state writes, weight sources, symbol
//! bounds) are the [`crate::verify`]er's.

use crate::graph::{
    BlockFormat, Graph, Input, Node, Output, RopePart, RopeScaling, State, Transform, ValueRef, Weight, WeightSource,
};
use crate::op::{BinaryOp, Op, ReduceOp, UnaryOp};
use crate::types::{DType, Dim, Shape, Symbol, SymbolId, TensorType};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Printing

/// A type as written in the text form: `f32[seq, 8]`. Never panics: a dangling symbol prints
/// as `sym#N` (which does not parse; the verifier rejects such graphs).
pub fn type_to_string(g: &Graph, t: &TensorType) -> String {
    let dims: Vec<String> = t.shape.0.iter().map(|&d| dim_to_string(g, d)).collect();
    format!("{}[{}]", t.dtype, dims.join(", "))
}

/// A dim as written in the text form: a number or the symbol's name.
pub fn dim_to_string(g: &Graph, d: Dim) -> String {
    match d {
        Dim::Const(n) => n.to_string(),
        Dim::Sym(s) => g.symbols.get(s.0 as usize).map_or(format!("sym#{}", s.0), |s| s.name.clone()),
    }
}

/// True for names the text form accepts: `[A-Za-z_][A-Za-z0-9_.]*`.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// The whole graph in the text form, ending with a newline.
pub fn print(g: &Graph) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = print_into(&mut out, g);
    out
}

fn print_into(out: &mut String, g: &Graph) -> std::fmt::Result {
    writeln!(out, "graph {} {{", g.name)?;
    for s in &g.symbols {
        writeln!(out, "  sym {} <= {}", s.name, s.max)?;
    }
    for i in &g.inputs {
        writeln!(out, "  input {}: {}", i.name, type_to_string(g, &i.ty))?;
    }
    for w in &g.weights {
        write!(out, "  weight {}: {} = {}", w.name, type_to_string(g, &w.ty), source_to_string(&w.source))?;
        for t in &w.transforms {
            write!(out, " then {}", transform_to_string(t))?;
        }
        writeln!(out)?;
    }
    for s in &g.states {
        writeln!(out, "  state {}: {}", s.name, type_to_string(g, &s.ty))?;
    }
    for (i, n) in g.nodes.iter().enumerate() {
        writeln!(out, "  {}", node_to_string(g, i, n))?;
    }
    for o in &g.outputs {
        writeln!(out, "  output {} = {}", o.name, g.value_name(o.value))?;
    }
    writeln!(out, "}}")
}

/// One node's line, without indentation: `%3: f32[seq, 8] = silu %2`.
pub fn node_to_string(g: &Graph, index: usize, n: &Node) -> String {
    let args: Vec<String> = n.args.iter().map(|&a| g.value_name(a)).collect();
    let mut s = format!("%{index}: {} = {}{}", type_to_string(g, &n.ty), n.op.name(), op_attrs(&n.op));
    if !args.is_empty() {
        s.push(' ');
        s.push_str(&args.join(", "));
    }
    s
}

/// A node as the kernel it becomes, without value names: `matmul(transpose_b) f32[seq, 64],
/// f32[172, 64] -> f32[seq, 172]`. Two graphs with the same listing run the same kernels.
pub fn kernel_to_string(g: &Graph, n: &Node) -> String {
    let args: Vec<String> = n.args.iter().map(|&a| type_to_string(g, g.type_of(a))).collect();
    format!("{}{} {} -> {}", n.op.name(), op_attrs(&n.op), args.join(", "), type_to_string(g, &n.ty))
}

/// An op with its attributes, as the text form writes it: `linear(act=silu, gated)`.
pub fn op_to_string(op: &Op) -> String {
    format!("{}{}", op.name(), op_attrs(op))
}

fn op_attrs(op: &Op) -> String {
    match op {
        Op::MatMul { transpose_b: true } => "(transpose_b)".to_string(),
        Op::Linear { scale, act, gated, bias, residual } => {
            let mut parts: Vec<String> = scale.iter().map(|s| format!("scale={s:?}")).collect();
            parts.extend(act.iter().map(|a| format!("act={}", a.name())));
            for (on, name) in [(gated, "gated"), (bias, "bias"), (residual, "residual")] {
                if *on {
                    parts.push(name.to_string());
                }
            }
            if parts.is_empty() { String::new() } else { format!("({})", parts.join(", ")) }
        }
        Op::RmsNorm { eps, group: None } | Op::LayerNorm { eps } => format!("(eps={eps:?})"),
        Op::RmsNorm { eps, group: Some(g) } => format!("(eps={eps:?}, group={g})"),
        Op::Rope { head_dim, rotary_dim, interleaved } => {
            format!("(head_dim={head_dim}, rotary_dim={rotary_dim}{})", if *interleaved { ", interleaved" } else { "" })
        }
        Op::Attention { heads, kv_heads, head_dim, scale, window } => {
            let mut s = format!("(heads={heads}, kv_heads={kv_heads}, head_dim={head_dim}, scale={scale:?}");
            if let Some(w) = window {
                let _ = write!(s, ", window={w}");
            }
            s.push(')');
            s
        }
        Op::Transpose { perm } => {
            let perm: Vec<String> = perm.iter().map(u32::to_string).collect();
            format!("(perm=[{}])", perm.join(", "))
        }
        Op::Concat { axis } => format!("(axis={axis})"),
        Op::Slice { axis, start, .. } => format!("(axis={axis}, start={start})"),
        _ => String::new(),
    }
}

fn source_to_string(src: &WeightSource) -> String {
    match src {
        WeightSource::File { path, offset, dtype } => {
            format!("file {} @ {offset} as {dtype}", quote(&path.to_string_lossy()))
        }
        WeightSource::Rope { part, theta, rotary_dim, scaling } => {
            let part = match part {
                RopePart::Cos => "cos",
                RopePart::Sin => "sin",
            };
            let mut s = format!("rope {part} theta={theta:?} rotary_dim={rotary_dim}");
            if let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions } = scaling {
                let _ = write!(
                    s,
                    " llama3(factor={factor:?}, low_freq_factor={low_freq_factor:?}, \
                     high_freq_factor={high_freq_factor:?}, original_max_positions={original_max_positions})"
                );
            }
            s
        }
        WeightSource::Literal(values) => {
            let vals: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
            format!("literal [{}]", vals.join(", "))
        }
        WeightSource::Blocks { path, offset, format } => {
            format!("file {} @ {offset} as {}", quote(&path.to_string_lossy()), format.name())
        }
    }
}

/// One transform as written after `then`: `permute dims=[9, 32, 2, 576] perm=[0, 2, 1, 3]`.
pub fn transform_to_string(t: &Transform) -> String {
    let list = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(", ");
    match t {
        Transform::Permute { dims, perm } => format!(
            "permute dims=[{}] perm=[{}]",
            list(&mut dims.iter().map(u64::to_string)),
            list(&mut perm.iter().map(u32::to_string))
        ),
        Transform::Quantize(storage) => format!("quantize {}", storage.name()),
        Transform::Rows { rows, start, len } => format!("rows {start}..{} of {rows}", start + len),
    }
}

/// A double-quoted string with `\"`, `\\` and control characters (`\n`, `\t`, `\r`, `\u{..}`)
/// escaped, so it stays on one line.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// What is wrong with a text, and on which line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses the text form. See the module documentation for the grammar.
pub fn parse(s: &str) -> Result<Graph, ParseError> {
    let mut p = Parser::default();
    let mut last_line = 1;
    for (i, line) in s.lines().enumerate() {
        let line_no = i + 1;
        last_line = line_no;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') {
            continue;
        }
        p.line(line).map_err(|message| ParseError { line: line_no, message })?;
    }
    match p.stage {
        Stage::Done => Ok(p.g),
        Stage::Header => Err(ParseError { line: last_line, message: "expected 'graph NAME {'".into() }),
        Stage::Body => Err(ParseError { line: last_line, message: "missing '}' at the end of the graph".into() }),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A run of `[A-Za-z0-9_.+%-]`: a keyword, name, number or `%N`.
    Word(String),
    Str(String),
    Punct(char),
    /// `<=`
    Le,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(s) => format!("string {}", quote(s)),
            Tok::Punct(c) => format!("'{c}'"),
            Tok::Le => "'<='".into(),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-' | '%')
}

fn tokenize(line: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if is_word_char(c) {
            let mut w = String::new();
            while let Some(&c) = chars.peek().filter(|&&c| is_word_char(c)) {
                w.push(c);
                chars.next();
            }
            toks.push(Tok::Word(w));
        } else if c == '"' {
            chars.next();
            toks.push(Tok::Str(string_body(&mut chars)?));
        } else if c == '<' {
            chars.next();
            if chars.next() != Some('=') {
                return Err("expected '<='".into());
            }
            toks.push(Tok::Le);
        } else if matches!(c, ':' | ',' | '=' | '[' | ']' | '(' | ')' | '{' | '}' | '@') {
            chars.next();
            toks.push(Tok::Punct(c));
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    Ok(toks)
}

/// The rest of a string literal after its opening quote.
fn string_body(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, String> {
    let mut s = String::new();
    loop {
        match chars.next() {
            None => return Err("unterminated string".into()),
            Some('"') => return Ok(s),
            Some('\\') => match chars.next() {
                Some('"') => s.push('"'),
                Some('\\') => s.push('\\'),
                Some('n') => s.push('\n'),
                Some('t') => s.push('\t'),
                Some('r') => s.push('\r'),
                Some('u') => {
                    if chars.next() != Some('{') {
                        return Err("expected '{' after '\\u' in string".into());
                    }
                    let mut hex = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_ascii_hexdigit() && hex.len() < 6 => hex.push(c),
                            _ => return Err("bad '\\u{...}' escape in string".into()),
                        }
                    }
                    let c = u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("'\\u{{{hex}}}' is not a character"))?;
                    s.push(c);
                }
                Some(c) => return Err(format!("unknown escape '\\{c}' in string")),
                None => return Err("unterminated string".into()),
            },
            Some(c) => s.push(c),
        }
    }
}

/// Tokens of one line, consumed front to back.
struct Cursor {
    toks: Vec<Tok>,
    pos: usize,
}

impl Cursor {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn bump(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn found(&self) -> String {
        self.peek().map_or("end of line".into(), Tok::describe)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    /// Consumes punctuation `c` if it is next.
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Requires punctuation `c`; `ctx` completes "expected ',' ...".
    fn expect(&mut self, c: char, ctx: &str) -> Result<(), String> {
        if self.eat(c) { Ok(()) } else { Err(format!("expected '{c}' {ctx}, found {}", self.found())) }
    }

    fn word(&mut self, what: &str) -> Result<String, String> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            _ => Err(format!("expected {what}, found {}", self.found())),
        }
    }

    fn keyword(&mut self, kw: &str, ctx: &str) -> Result<(), String> {
        match self.peek() {
            Some(Tok::Word(w)) if w == kw => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(format!("expected '{kw}' {ctx}, found {}", self.found())),
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, String> {
        let w = self.word(what)?;
        if is_identifier(&w) { Ok(w) } else { Err(format!("'{w}' is not a valid {what}")) }
    }

    fn finish(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(format!("unexpected {} at end of line", t.describe())),
        }
    }
}

fn parse_u64(w: &str, what: &str) -> Result<u64, String> {
    if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected {what} (a number), found '{w}'"));
    }
    w.parse().map_err(|_| format!("{what} '{w}' is out of range"))
}

fn parse_u32(w: &str, what: &str) -> Result<u32, String> {
    let n = parse_u64(w, what)?;
    u32::try_from(n).map_err(|_| format!("{what} '{w}' is out of range"))
}

fn parse_f32(w: &str, what: &str) -> Result<f32, String> {
    w.parse().map_err(|_| format!("expected {what} (a number), found '{w}'"))
}

fn parse_f64(w: &str, what: &str) -> Result<f64, String> {
    w.parse().map_err(|_| format!("expected {what} (a number), found '{w}'"))
}

/// `(key=value, flag, ...)` after an op or `llama3`, taken apart key by key.
struct Attrs {
    owner: &'static str,
    items: Vec<(String, Option<String>)>,
}

impl Attrs {
    /// Parses a parenthesized list if one is next; else an empty list.
    fn parse(c: &mut Cursor, owner: &'static str) -> Result<Attrs, String> {
        let mut items: Vec<(String, Option<String>)> = Vec::new();
        if c.eat('(') && !c.eat(')') {
            loop {
                let key = c.ident("attribute name")?;
                if items.iter().any(|(k, _)| *k == key) {
                    return Err(format!("duplicate attribute '{key}' of {owner}"));
                }
                let value = if !c.eat('=') {
                    None
                } else if c.eat('[') {
                    // A list value, kept as `a,b,c` for `Attrs::list`.
                    let mut items = Vec::new();
                    while !c.eat(']') {
                        if !items.is_empty() {
                            c.expect(',', "between list items")?;
                        }
                        items.push(c.word("a list item")?);
                    }
                    Some(items.join(","))
                } else {
                    Some(c.word("attribute value")?)
                };
                items.push((key, value));
                if c.eat(')') {
                    break;
                }
                c.expect(',', "between attributes")?;
            }
        }
        Ok(Attrs { owner, items })
    }

    fn take(&mut self, key: &str) -> Option<Option<String>> {
        let i = self.items.iter().position(|(k, _)| k == key)?;
        Some(self.items.remove(i).1)
    }

    fn value(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Some(v)) => Ok(Some(v)),
            Some(None) => Err(format!("attribute '{key}' of {} needs a value", self.owner)),
        }
    }

    fn required(&mut self, key: &str) -> Result<String, String> {
        self.value(key)?.ok_or_else(|| format!("missing attribute '{key}' of {}", self.owner))
    }

    fn u32(&mut self, key: &str) -> Result<u32, String> {
        parse_u32(&self.required(key)?, key)
    }

    fn u64(&mut self, key: &str) -> Result<u64, String> {
        parse_u64(&self.required(key)?, key)
    }

    fn list_u32(&mut self, key: &str) -> Result<Vec<u32>, String> {
        let v = self.required(key)?;
        v.split(',').filter(|w| !w.is_empty()).map(|w| parse_u32(w, key)).collect()
    }

    fn f32(&mut self, key: &str) -> Result<f32, String> {
        parse_f32(&self.required(key)?, key)
    }

    fn f64(&mut self, key: &str) -> Result<f64, String> {
        parse_f64(&self.required(key)?, key)
    }

    fn flag(&mut self, key: &str) -> Result<bool, String> {
        match self.take(key) {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(_)) => Err(format!("attribute '{key}' of {} takes no value", self.owner)),
        }
    }

    /// Fails on any attribute not taken.
    fn finish(self) -> Result<(), String> {
        match self.items.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("unknown attribute '{k}' of {}", self.owner)),
        }
    }
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    #[default]
    Header,
    Body,
    Done,
}

/// Statements in the order they must appear.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default)]
enum Section {
    #[default]
    Sym,
    Input,
    Weight,
    State,
    Node,
    Output,
}

const SECTION_ORDER: &str = "sym, input, weight, state, nodes, output";

#[derive(Default)]
struct Parser {
    g: Graph,
    stage: Stage,
    section: Section,
    /// Inputs, weights and states by name.
    values: HashMap<String, ValueRef>,
    symbols: HashMap<String, SymbolId>,
    output_names: HashSet<String>,
}

impl Parser {
    fn line(&mut self, line: &str) -> Result<(), String> {
        let mut c = Cursor { toks: tokenize(line)?, pos: 0 };
        match self.stage {
            Stage::Header => {
                c.keyword("graph", "at the start ('graph NAME {')")?;
                self.g.name = c.ident("graph name")?;
                c.expect('{', "after the graph name")?;
                self.stage = Stage::Body;
            }
            Stage::Body => self.statement(&mut c)?,
            Stage::Done => return Err(format!("unexpected {} after the end of the graph", c.found())),
        }
        c.finish()
    }

    fn statement(&mut self, c: &mut Cursor) -> Result<(), String> {
        if c.eat('}') {
            self.stage = Stage::Done;
            return Ok(());
        }
        let first = c.word("a statement (sym, input, weight, state, %N, output or '}')")?;
        let section = match first.as_str() {
            "sym" => Section::Sym,
            "input" => Section::Input,
            "weight" => Section::Weight,
            "state" => Section::State,
            "output" => Section::Output,
            w if w.starts_with('%') => Section::Node,
            w => return Err(format!("unknown statement '{w}'")),
        };
        if section < self.section {
            return Err(format!("'{first}' is out of place: statements go in the order {SECTION_ORDER}"));
        }
        self.section = section;
        match section {
            Section::Sym => self.sym(c),
            Section::Input => self.input(c),
            Section::Weight => self.weight(c),
            Section::State => self.state(c),
            Section::Node => self.node(&first, c),
            Section::Output => self.output(c),
        }
    }

    fn sym(&mut self, c: &mut Cursor) -> Result<(), String> {
        let name = c.ident("symbol name")?;
        if c.bump() != Some(Tok::Le) {
            return Err(format!("expected '<=' after symbol '{name}'"));
        }
        let max = parse_u64(&c.word("the symbol's maximum")?, "symbol maximum")?;
        if self.symbols.contains_key(&name) {
            return Err(format!("duplicate symbol '{name}'"));
        }
        let id = SymbolId(u32::try_from(self.g.symbols.len()).map_err(|_| "too many symbols".to_string())?);
        self.symbols.insert(name.clone(), id);
        self.g.symbols.push(Symbol { name, max });
        Ok(())
    }

    /// `NAME: TYPE` of an input, weight or state; checks the name is new.
    fn decl(&mut self, c: &mut Cursor, what: &str) -> Result<(String, TensorType), String> {
        let name = c.ident(&format!("{what} name"))?;
        if self.values.contains_key(&name) {
            return Err(format!("duplicate name '{name}'"));
        }
        c.expect(':', &format!("after {what} name"))?;
        let ty = self.ty(c)?;
        Ok((name, ty))
    }

    fn index(len: usize, what: &str) -> Result<u32, String> {
        u32::try_from(len).map_err(|_| format!("too many {what}"))
    }

    fn input(&mut self, c: &mut Cursor) -> Result<(), String> {
        let (name, ty) = self.decl(c, "input")?;
        let v = ValueRef::Input(Self::index(self.g.inputs.len(), "inputs")?);
        self.values.insert(name.clone(), v);
        self.g.inputs.push(Input { name, ty });
        Ok(())
    }

    fn weight(&mut self, c: &mut Cursor) -> Result<(), String> {
        let (name, ty) = self.decl(c, "weight")?;
        c.expect('=', "after the weight's type")?;
        let source = self.source(c)?;
        let mut transforms = Vec::new();
        while c.peek().is_some() {
            c.keyword("then", "before a weight transform")?;
            transforms.push(self.transform(c)?);
        }
        let v = ValueRef::Weight(Self::index(self.g.weights.len(), "weights")?);
        self.values.insert(name.clone(), v);
        self.g.weights.push(Weight { name, ty, source, transforms, importance: None });
        Ok(())
    }

    fn state(&mut self, c: &mut Cursor) -> Result<(), String> {
        let (name, ty) = self.decl(c, "state")?;
        let v = ValueRef::State(Self::index(self.g.states.len(), "states")?);
        self.values.insert(name.clone(), v);
        self.g.states.push(State { name, ty });
        Ok(())
    }

    fn source(&mut self, c: &mut Cursor) -> Result<WeightSource, String> {
        let kind = c.word("a weight source (file, rope or literal)")?;
        match kind.as_str() {
            "file" => {
                let path = match c.bump() {
                    Some(Tok::Str(s)) => s,
                    t => {
                        let found = t.map_or("end of line".into(), |t| t.describe());
                        return Err(format!("expected a quoted path after 'file', found {found}"));
                    }
                };
                c.expect('@', "after the file path")?;
                let offset = parse_u64(&c.word("an offset")?, "offset")?;
                c.keyword("as", "after the offset")?;
                if let Some(Tok::Word(w)) = c.peek()
                    && let Some(format) = BlockFormat::from_name(w)
                {
                    c.bump();
                    return Ok(WeightSource::Blocks { path: PathBuf::from(path), offset, format });
                }
                let dtype = self.dtype(c)?;
                Ok(WeightSource::File { path: PathBuf::from(path), offset, dtype })
            }
            "rope" => {
                let part = match c.word("'cos' or 'sin'")?.as_str() {
                    "cos" => RopePart::Cos,
                    "sin" => RopePart::Sin,
                    w => return Err(format!("expected 'cos' or 'sin', found '{w}'")),
                };
                c.keyword("theta", "after the rope table's part")?;
                c.expect('=', "after 'theta'")?;
                let theta = parse_f64(&c.word("theta")?, "theta")?;
                c.keyword("rotary_dim", "after theta")?;
                c.expect('=', "after 'rotary_dim'")?;
                let rotary_dim = parse_u32(&c.word("rotary_dim")?, "rotary_dim")?;
                let scaling = match c.peek() {
                    None => RopeScaling::None,
                    Some(Tok::Word(w)) if w == "then" => RopeScaling::None,
                    Some(Tok::Word(w)) if w == "llama3" => {
                        c.bump();
                        let mut a = Attrs::parse(c, "llama3")?;
                        let scaling = RopeScaling::Llama3 {
                            factor: a.f64("factor")?,
                            low_freq_factor: a.f64("low_freq_factor")?,
                            high_freq_factor: a.f64("high_freq_factor")?,
                            original_max_positions: a.u64("original_max_positions")?,
                        };
                        a.finish()?;
                        scaling
                    }
                    Some(t) => return Err(format!("expected 'llama3' or end of line, found {}", t.describe())),
                };
                Ok(WeightSource::Rope { part, theta, rotary_dim, scaling })
            }
            "literal" => {
                c.expect('[', "after 'literal'")?;
                let mut values = Vec::new();
                if !c.eat(']') {
                    loop {
                        values.push(parse_f32(&c.word("a value")?, "value")?);
                        if c.eat(']') {
                            break;
                        }
                        c.expect(',', "after a literal value")?;
                    }
                }
                Ok(WeightSource::Literal(values))
            }
            w => Err(format!("unknown weight source '{w}' (expected file, rope or literal)")),
        }
    }

    /// `permute dims=[N, ...] perm=[N, ...]`.
    fn transform(&mut self, c: &mut Cursor) -> Result<Transform, String> {
        let kind = c.word("a transform (permute, rows or quantize)")?;
        match kind.as_str() {
            "permute" => {
                let mut list = |key: &str| -> Result<Vec<u64>, String> {
                    c.keyword(key, "in permute")?;
                    c.expect('=', &format!("after '{key}'"))?;
                    c.expect('[', &format!("after '{key}='"))?;
                    let mut v = Vec::new();
                    if !c.eat(']') {
                        loop {
                            v.push(parse_u64(&c.word("a number")?, key)?);
                            if c.eat(']') {
                                break;
                            }
                            c.expect(',', &format!("in '{key}'"))?;
                        }
                    }
                    Ok(v)
                };
                let dims = list("dims")?;
                let perm = list("perm")?
                    .into_iter()
                    .map(|p| u32::try_from(p).map_err(|_| format!("perm entry {p} is out of range")))
                    .collect::<Result<Vec<u32>, String>>()?;
                Ok(Transform::Permute { dims, perm })
            }
            "quantize" => {
                let name = c.word("a storage format")?;
                crate::quant::Storage::from_name(&name).map(Transform::Quantize).ok_or_else(|| {
                    format!("unknown storage format '{name}' (e.g. f16, bf16, q8_c, q8_g32, q4s_g32, q4_g32)")
                })
            }
            "rows" => {
                // `rows START..END of N`
                let range = c.word("a row range START..END")?;
                let (a, b) = range
                    .split_once("..")
                    .ok_or_else(|| format!("expected a row range START..END, found '{range}'"))?;
                let (start, end) = (parse_u64(a, "range start")?, parse_u64(b, "range end")?);
                c.keyword("of", "after the row range")?;
                let rows = parse_u64(&c.word("a row count")?, "row count")?;
                let len =
                    end.checked_sub(start).filter(|&l| l > 0).ok_or_else(|| format!("empty row range {range}"))?;
                Ok(Transform::Rows { rows, start, len })
            }
            w => Err(format!("unknown weight transform '{w}' (expected permute, rows or quantize)")),
        }
    }

    fn dtype(&mut self, c: &mut Cursor) -> Result<DType, String> {
        let w = c.word("a dtype")?;
        DType::from_name(&w).ok_or_else(|| format!("unknown dtype '{w}'"))
    }

    /// `dtype[dim, ...]`; refuses types whose size at the symbols' maxima overflows u64.
    fn ty(&mut self, c: &mut Cursor) -> Result<TensorType, String> {
        let dtype = self.dtype(c)?;
        c.expect('[', "after the dtype")?;
        let mut dims = Vec::new();
        if !c.eat(']') {
            loop {
                let w = c.word("a dim")?;
                let dim = if w.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
                    Dim::Const(parse_u64(&w, "dim")?)
                } else {
                    let id = self.symbols.get(&w).ok_or_else(|| format!("unknown symbol '{w}'"))?;
                    Dim::Sym(*id)
                };
                dims.push(dim);
                if c.eat(']') {
                    break;
                }
                c.expect(',', "after a dim")?;
            }
        }
        let ty = TensorType::new(dtype, Shape(dims));
        let row = ty.shape.last().map_or(1, |d| self.g.dim_max(d));
        if let Err(m) = dtype.check_row(row) {
            return Err(format!("type {}: {m}", type_to_string(&self.g, &ty)));
        }
        if self.g.max_bytes(&ty).is_none() {
            return Err(format!("type {} is too large: its size overflows 64 bits", type_to_string(&self.g, &ty)));
        }
        Ok(ty)
    }

    fn operand(&self, c: &mut Cursor) -> Result<ValueRef, String> {
        let w = c.word("an operand")?;
        if let Some(num) = w.strip_prefix('%') {
            let i = parse_u32(num, "node number")?;
            if (i as usize) < self.g.nodes.len() {
                Ok(ValueRef::Node(i))
            } else {
                Err(format!("unknown value '{w}' (a node may only use earlier nodes)"))
            }
        } else {
            self.values.get(&w).copied().ok_or_else(|| format!("unknown value '{w}'"))
        }
    }

    fn node(&mut self, first: &str, c: &mut Cursor) -> Result<(), String> {
        let index = self.g.nodes.len();
        let written = first.strip_prefix('%').unwrap_or(first);
        if parse_u64(written, "node number")? != index as u64 {
            return Err(format!("expected node %{index}, found {first}: nodes are numbered in order"));
        }
        c.expect(':', &format!("after {first}"))?;
        let ty = self.ty(c)?;
        c.expect('=', "after the node's type")?;
        let op = match self.op(c)? {
            // These ops' result shape is their attribute: the written type gives it.
            Op::Reshape { .. } => Op::Reshape { shape: ty.shape.clone() },
            Op::Expand { .. } => Op::Expand { shape: ty.shape.clone() },
            Op::Cast { .. } => Op::Cast { to: ty.dtype },
            Op::Slice { axis, start, .. } => {
                let len =
                    ty.shape.dims().get(axis as usize).copied().ok_or_else(|| {
                        format!("slice axis {axis} is out of range for {}", type_to_string(&self.g, &ty))
                    })?;
                Op::Slice { axis, start, len }
            }
            op => op,
        };
        let mut args = Vec::new();
        if !c.at_end() {
            loop {
                args.push(self.operand(c)?);
                if c.at_end() {
                    break;
                }
                c.expect(',', "after operand")?;
            }
        }
        let label = format!("%{index} ({})", op.name());
        let arg_types: Vec<&TensorType> = args
            .iter()
            .map(|&a| self.g.try_type_of(a))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{label}: {}", e.message))?;
        let inferred = crate::infer::infer_type(&self.g, &op, &arg_types)
            .map_err(|e| format!("{label}: {}", strip_op_prefix(&e.message, &op)))?;
        if inferred != ty {
            return Err(format!(
                "{label}: written type {} differs from the inferred type {}",
                type_to_string(&self.g, &ty),
                type_to_string(&self.g, &inferred)
            ));
        }
        self.g.nodes.push(Node { op, args, ty });
        Ok(())
    }

    fn op(&mut self, c: &mut Cursor) -> Result<Op, String> {
        let name = c.word("an op")?;
        let owner = op_by_name(&name).ok_or_else(|| format!("unknown op '{name}'"))?;
        let mut a = Attrs::parse(c, owner.name())?;
        let op = match owner {
            Op::MatMul { .. } => Op::MatMul { transpose_b: a.flag("transpose_b")? },
            Op::Linear { .. } => Op::Linear {
                scale: a.value("scale")?.map(|v| parse_f32(&v, "scale")).transpose()?,
                act: match a.value("act")? {
                    None => None,
                    Some(name) => {
                        Some(UnaryOp::from_name(&name).ok_or_else(|| format!("unknown activation '{name}'"))?)
                    }
                },
                gated: a.flag("gated")?,
                bias: a.flag("bias")?,
                residual: a.flag("residual")?,
            },
            Op::RmsNorm { .. } => Op::RmsNorm {
                eps: a.f32("eps")?,
                group: a.value("group")?.map(|g| parse_u32(&g, "group")).transpose()?,
            },
            Op::LayerNorm { .. } => Op::LayerNorm { eps: a.f32("eps")? },
            Op::Rope { .. } => Op::Rope {
                head_dim: a.u32("head_dim")?,
                rotary_dim: a.u32("rotary_dim")?,
                interleaved: a.flag("interleaved")?,
            },
            Op::Attention { .. } => Op::Attention {
                heads: a.u32("heads")?,
                kv_heads: a.u32("kv_heads")?,
                head_dim: a.u32("head_dim")?,
                scale: a.f32("scale")?,
                window: a.value("window")?.map(|w| parse_u32(&w, "window")).transpose()?,
            },
            Op::Transpose { .. } => Op::Transpose { perm: a.list_u32("perm")? },
            Op::Concat { .. } => Op::Concat { axis: a.u32("axis")? },
            Op::Slice { .. } => Op::Slice { axis: a.u32("axis")?, start: a.u64("start")?, len: Dim::Const(0) },
            op => op,
        };
        a.finish()?;
        Ok(op)
    }

    fn output(&mut self, c: &mut Cursor) -> Result<(), String> {
        let name = c.ident("output name")?;
        if !self.output_names.insert(name.clone()) {
            return Err(format!("duplicate output '{name}'"));
        }
        c.expect('=', "after the output name")?;
        let value = self.operand(c)?;
        self.g.outputs.push(Output { name, value });
        Ok(())
    }
}

/// The op named `name`, with placeholder attributes.
fn op_by_name(name: &str) -> Option<Op> {
    let fixed = [
        Op::Gather,
        Op::MatMul { transpose_b: false },
        Op::Linear { scale: None, act: None, gated: false, bias: false, residual: false },
        Op::RmsNorm { eps: 0.0, group: None },
        Op::LayerNorm { eps: 0.0 },
        Op::Rope { head_dim: 0, rotary_dim: 0, interleaved: false },
        Op::CacheWrite,
        Op::Attention { heads: 0, kv_heads: 0, head_dim: 0, scale: 0.0, window: None },
        Op::Softmax,
        Op::Reshape { shape: Shape::default() },
        Op::Expand { shape: Shape::default() },
        Op::Transpose { perm: Vec::new() },
        Op::Concat { axis: 0 },
        Op::Slice { axis: 0, start: 0, len: Dim::Const(0) },
        Op::BatchMatMul,
        Op::Select,
        Op::Cast { to: crate::types::DType::F32 },
    ];
    fixed
        .into_iter()
        .chain(UnaryOp::ALL.map(Op::Unary))
        .chain(BinaryOp::ALL.map(Op::Binary))
        .chain(ReduceOp::ALL.map(Op::Reduce))
        .find(|op| op.name() == name)
}

/// `infer_type`'s messages start with the op's name; drop it where the caller names the node.
pub(crate) fn strip_op_prefix<'a>(message: &'a str, op: &Op) -> &'a str {
    message.strip_prefix(op.name()).and_then(|m| m.strip_prefix(": ")).unwrap_or(message)
}
