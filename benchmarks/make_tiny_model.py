"""Build a random-weight causal LM plus a locally trained tokenizer, for end-to-end runs.

The lent GPU machine cannot download weights, so the real-engine run (``transformers serve``)
serves a model built here from a config: a Llama-architecture decoder with random weights
(by default about 1.1 B parameters, so decode is memory-bound as on a real deployment) and a
word-level tokenizer whose vocabulary is the words the load generator synthesises prompts
from, plus a chat template. Outputs are gibberish; token counts, KV growth, prefix reuse and
GPU power are real.

    python benchmarks/make_tiny_model.py OUT_DIR [--layers 16] [--hidden 2048] [--vocab 32000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)
SPECIALS = ["[UNK]", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(out: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders

    words = [f"w{i}" for i in range(vocab_size - len(SPECIALS) - 8)] + ["system", "user", "assistant", "tool", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIALS)
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "unk_token": "[UNK]",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "bos_token": None,
                "chat_template": CHAT_TEMPLATE,
                "model_max_length": 131072,
            },
            indent=1,
        )
    )
    (out / "special_tokens_map.json").write_text(json.dumps({"unk_token": "[UNK]", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))


def build_model(out: Path, vocab_size: int, layers: int, hidden: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=int(hidden * 2.75) // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 128,
        num_key_value_heads=max(1, hidden // 128 // 4),
        max_position_embeddings=131072,
        eos_token_id=1,
        pad_token_id=1,
        bos_token_id=None,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config.eos_token_id = 1
    model.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"params": n, "layers": layers, "hidden": hidden, "vocab": vocab_size}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--tokenizer-only", action="store_true")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(a.out, a.vocab)
    if not a.tokenizer_only:
        build_model(a.out, a.vocab, a.layers, a.hidden)


if __name__ == "__main__":
    main()
