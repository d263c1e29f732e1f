"""Build a tiny random-weight Llama (config + byte-level BPE tokenizer) in a folder.

The folder looks exactly like a model downloaded from the Hub (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json, chat template, generation_config.json), so tests load it
through the same public path users take. Byte-level BPE means any UTF-8 text (CJK, emoji)
round-trips, which the streaming tests rely on.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "The capital of France is Paris. Once upon a time there was a small model.",
    "def hello():\n    return 'world'\n",
    "經過一段時間的努力，我們終於完成了。日本語のテキストも少し。",
    "Hello there! How are you today? I am fine, thank you. 🙂 naïve café",
    "Markdown: # Title\n- item one\n- item two\n```python\nprint(1)\n```",
] * 20


def build_tiny_llama(
    path: Path,
    *,
    chat_template: bool = True,
    seed: int = 0,
    max_position_embeddings: int = 256,
    vocab_size: int = 512,
) -> Path:
    """Write a tiny random Llama to `path` and return it. Takes about a second on CPU."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    path.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(_CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=max_position_embeddings,
    )
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(path)

    eos = tok.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tok.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=eos,
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=eos,
        pad_token_id=config.pad_token_id,
        do_sample=True,
        temperature=0.8,
        top_p=0.95,
    )
    model.save_pretrained(path)
    return path
