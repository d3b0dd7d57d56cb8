"""Tiny random checkpoints of the real MoE architectures, saved as a user's checkpoint directory looks:
config.json, safetensors weights and a tokenizer of the family's real kind, trained (offline) on the stream's
text with the tokenizers library and small enough a vocabulary that many answers take several tokens."""

from pathlib import Path

import torch

from cl_bench.streams.experience import INPUT_MARKER

SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256, tie_word_embeddings=False)
# model_type -> (config overrides, tokenizer kind): Mixtral ships a SentencePiece BPE (LlamaTokenizer); OLMoE,
# Qwen and Granite ship byte-level BPEs (GPT-2's kind).
FAMILIES = {
    "mixtral": (dict(intermediate_size=64, num_local_experts=4, num_experts_per_tok=2), "sentencepiece"),
    "olmoe": (dict(intermediate_size=64, num_experts=4, num_experts_per_tok=2), "byte-bpe"),
    "qwen2_moe": (dict(intermediate_size=64, moe_intermediate_size=64, shared_expert_intermediate_size=64,
                       num_experts=4, num_experts_per_tok=2), "byte-bpe"),
    "qwen3_moe": (dict(intermediate_size=64, moe_intermediate_size=64, num_experts=4, num_experts_per_tok=2,
                       head_dim=16), "byte-bpe"),
    "granitemoe": (dict(intermediate_size=64, num_local_experts=4, num_experts_per_tok=2), "byte-bpe"),
}


def stream_texts(stream) -> list[str]:
    return [t.replace(INPUT_MARKER, " ") for task in stream.tasks for split in (task.train, task.val)
            for t in (*split["prompt"], *(" " + a for a in split["answer"]))]


def train_tokenizer(kind: str, texts: list[str]):
    if kind == "byte-bpe":
        from tokenizers import ByteLevelBPETokenizer
        from transformers import GPT2TokenizerFast

        t = ByteLevelBPETokenizer()
        t.train_from_iterator(texts, vocab_size=256 + 1 + 120, min_frequency=2, special_tokens=["<|endoftext|>"])
        return GPT2TokenizerFast(tokenizer_object=t._tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                 unk_token="<|endoftext|>")
    if kind == "sentencepiece":
        from tokenizers import SentencePieceBPETokenizer
        from transformers import LlamaTokenizerFast

        t = SentencePieceBPETokenizer()
        t.train_from_iterator(texts, vocab_size=120, min_frequency=2, special_tokens=["<unk>", "<s>", "</s>"])
        return LlamaTokenizerFast(tokenizer_object=t._tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    raise ValueError(kind)


def save_checkpoint(directory: Path, model_type: str, stream, seed: int = 0) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    overrides, kind = FAMILIES[model_type]
    tok = train_tokenizer(kind, stream_texts(stream))
    config = AutoConfig.for_model(model_type, vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                                  bos_token_id=tok.bos_token_id, **SHAPE, **overrides)
    torch.manual_seed(seed)
    lm = AutoModelForCausalLM.from_config(config)
    directory = Path(directory)
    lm.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
