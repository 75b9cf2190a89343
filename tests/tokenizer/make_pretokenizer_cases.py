"""Writes pretokenizer_cases.json: how HuggingFace `tokenizers` (its Split pre-tokenizer with
each model's own regex, behavior "isolated", as the models' tokenizer.json files configure it)
splits tricky strings. tests/pretokenizers.rs checks edgec's hand-written splitters against it.
Also trains a tiny byte-level BPE per pattern, structured like Llama 3's and Qwen2's
tokenizer.json (Split, then ByteLevel without its own regex), saves it as NAME-mini.json, and
records its ids for every string: the whole tokenizer.json path, end to end.

    python3 tests/tokenizer/make_pretokenizer_cases.py   # from the repository root
"""
import json
import pathlib

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.pre_tokenizers import Split

PATTERNS = {
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}

TEXTS = [
    "Hello world",
    "The capital of France is",
    "I'm here, YOU'LL see, it's 'S and 'd'",
    "don't WON'T they've we'RE",
    "12345 1,234,567.89 and 3.14159",
    "year 2024: 7 days, 365 nights",
    "٣٤٥ and ²³ and Ⅻ",
    "hello!!!\n\nworld",
    "a\r\n\r\nb",
    "x  \n  y",
    "   leading spaces",
    "trailing spaces   ",
    "tabs\t\tand\tspaces",
    "emoji 🤗 here 👍🏽!",
    "naïve café résumé",
    "e\u0301 combining",
    "日本語のテキスト、句読点。",
    "Ελληνικά και русский",
    "mixed123abc456def7890",
    "!hello ?world ...and",
    "$100 for #tags @user",
    "e.g. i.e. etc.",
    "\n\n\n",
    " \n \n ",
    "end\n",
    "line one\nline two\r\nline three",
    "def f(x):\n    return x ** 2\n",
    "    indented\n\tcode",
    "<|im_start|>user\nHi<|im_end|>",
    "",
    " ",
    "a",
    "''''",
    "'s",
    "http://example.com/path?q=1&r=2",
    "snake_case and camelCase and CONST_CASE",
]


def split(pattern, text):
    pre = Split(Regex(pattern), behavior="isolated")
    return [piece for piece, _ in pre.pre_tokenize_str(text)]


def mini_tokenizer(name, pattern):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [Split(Regex(pattern), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|im_start|>", "<|im_end|>"]
    )
    tok.train_from_iterator(TEXTS * 4, trainer)
    path = pathlib.Path(__file__).with_name(f"{name}-mini.json")
    tok.save(str(path))
    return tok


cases = {}
for name, p in PATTERNS.items():
    tok = mini_tokenizer(name, p)
    cases[name] = {
        "pattern": p,
        "cases": [{"text": t, "pieces": split(p, t), "ids": tok.encode(t).ids} for t in TEXTS],
    }
out = pathlib.Path(__file__).with_name("pretokenizer_cases.json")
out.write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n")
print(f"wrote {out}: {len(TEXTS)} texts per pattern")
