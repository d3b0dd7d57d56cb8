"""The base language model: a transformers MoE causal LM, tiny presets or a local checkpoint.

`load_base` is the one entry point: a preset name builds the model from its config,
pre-trains it on the stream's text task once and caches it on disk (keyed by a hash of
everything that shapes it), so every strategy starts from the same base. A directory
is loaded as a Hugging Face checkpoint (config, weights and tokenizer), as is.
"""

from __future__ import annotations

import torch

# the pre-training's config and the default base are torch-free, beside the other configs (the CLI reads them)
from cl_bench.config import DEFAULT_MODEL, PretrainConfig  # noqa: F401
from cl_bench.streams.experience import INPUT_MARKER, column

BASE_VERSION = 1  # bump when pre-training changes

_SHAPE = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=128, tie_word_embeddings=False)
# name -> (transformers model_type, config overrides). Tiny: hidden 128, 4 layers, 4 experts, top-2; one per
# supported family (cl_bench.models.families).
PRESETS: dict[str, tuple[str, dict]] = {
    "mixtral-tiny": ("mixtral", dict(_SHAPE, intermediate_size=256, num_local_experts=4, num_experts_per_tok=2)),
    "olmoe-tiny": ("olmoe", dict(_SHAPE, intermediate_size=256, num_experts=4, num_experts_per_tok=2)),
    "qwen2-moe-tiny": ("qwen2_moe", dict(_SHAPE, intermediate_size=256, moe_intermediate_size=256,
                                         shared_expert_intermediate_size=256, num_experts=4,
                                         num_experts_per_tok=2)),
    "qwen3-moe-tiny": ("qwen3_moe", dict(_SHAPE, intermediate_size=256, moe_intermediate_size=256, num_experts=4,
                                         num_experts_per_tok=2, head_dim=32)),
    "granite-moe-tiny": ("granitemoe", dict(_SHAPE, intermediate_size=256, num_local_experts=4,
                                            num_experts_per_tok=2)),
    # The scale axis (does a ranking of strategies hold as the base grows?): the default family at two larger
    # sizes, intermediate 2 x hidden as in mixtral-tiny, 8 experts, top-2, more layers (so that MoExtend's layer
    # choice has alternatives). Sized to what this project can afford: 7.9M and 15.1M LM parameters (4.4x and 8.4x
    # mixtral-tiny), 2.5x and 4.2x its seconds per step (bench/scale_cost.py, docs: benchmarks), and one base of
    # each small enough to ship in the repository.
    "mixtral-small": ("mixtral", dict(_SHAPE, hidden_size=160, num_hidden_layers=6, intermediate_size=320,
                                      num_local_experts=8, num_experts_per_tok=2)),
    "mixtral-medium": ("mixtral", dict(_SHAPE, hidden_size=192, num_hidden_layers=8, intermediate_size=384,
                                       num_local_experts=8, num_experts_per_tok=2)),
}
# One tiny preset per supported family (what the family tests cover), and the default family's sizes (the scale axis).
FAMILY_PRESETS = ("mixtral-tiny", "olmoe-tiny", "qwen2-moe-tiny", "qwen3-moe-tiny", "granite-moe-tiny")
SCALE_PRESETS = ("mixtral-tiny", "mixtral-small", "mixtral-medium")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def word_tokenizer(words: list[str]):
    """A word-level tokenizer (tokenizers library) over `words`, prompts starting with [BOS]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*SPECIAL_TOKENS, *sorted(set(words) - set(SPECIAL_TOKENS))])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", vocab["[BOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]")


class UnknownWordWarning(UserWarning):
    """Evaluation prompts or answers hold words that no training prompt or answer has (a preset's word-level
    tokenizer reads them as [UNK]). ``warnings.simplefilter("error", UnknownWordWarning)`` refuses them."""


def stream_words(stream) -> list[str]:
    """The words of a stream's training prompts and answers: a preset's vocabulary. Words of the evaluation
    splits outside it (`unknown_words`) are warned of, by name (UnknownWordWarning)."""
    import warnings

    words = sorted({w for split in (stream.base.train, *[e.train for e in stream.experiences])
                    for text in (*column(split, "prompt"), *column(split, "answer")) for w in text.split()} - {INPUT_MARKER})
    unknown = unknown_words(stream, words)
    if unknown:
        shown = "; ".join(f"{w!r} ({', '.join(where)})" for w, where in list(unknown.items())[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        warnings.warn(f"stream {stream.name!r}: {len(unknown)} word(s) of its evaluation prompts or answers are in "
                      f"no training prompt or answer, so the preset's tokenizer reads each as [UNK]: {shown}{more}",
                      UnknownWordWarning, stacklevel=2)
    return words


def unknown_words(stream, vocabulary) -> dict[str, list[str]]:
    """Words of the stream's validation and test prompts and answers (and its probes) outside `vocabulary`:
    word -> where it occurs ("task split"), in order of first occurrence."""
    known = set(vocabulary) | {INPUT_MARKER}
    found: dict[str, list[str]] = {}
    for task in stream.tasks:
        splits = {"val": task.val, "test": task.test, **{f"probe {k}": v for k, v in task.probes.items()}}
        for name, split in splits.items():
            if split is None:
                continue
            where = f"{task.name} {name}"
            for text in (*column(split, "prompt"), *column(split, "answer")):
                for w in text.replace(INPUT_MARKER, " ").split():  # the tokenizer splits around the marker
                    if w not in known:
                        places = found.setdefault(w, [])
                        if where not in places:
                            places.append(where)
    return found


def preset_config(name: str, vocab_size: int, tokenizer=None):
    from transformers import AutoConfig

    model_type, overrides = PRESETS[name]
    ids = {}
    if tokenizer is not None:
        ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id)
    return AutoConfig.for_model(model_type, vocab_size=vocab_size, **overrides, **ids)


def experts_implementation(device: torch.device) -> str | None:
    """Eager experts on CPU (grouped_mm was 6-30x slower per step there); the library's default elsewhere."""
    return "eager" if device.type == "cpu" else None


def _set_experts(lm, device: torch.device) -> None:
    impl = experts_implementation(device)
    if impl and hasattr(lm, "set_experts_implementation"):
        try:
            lm.set_experts_implementation(impl)
        except (ValueError, NotImplementedError):
            pass  # a model without fused experts: nothing to choose
