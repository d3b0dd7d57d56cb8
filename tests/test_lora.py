"""LoRA strategies (PEFT): counts, per-modality isolation, text on the base model."""

import pytest
import torch

from cl_bench.config import Budget
from cl_bench.models.encoders import build_encoder
from cl_bench.models.lm import PretrainConfig
from cl_bench.run.base import load_base
from cl_bench.models.multimodal import MultimodalLM
from cl_bench.strategies.lora import LoRA, LoRAPerModality
from cl_bench.api.strategy import RunContext

pytestmark = pytest.mark.slow  # every test here is an end-to-end run

CPU = torch.device("cpu")


def make(cls, stream, cache_dir):
    base = load_base("mixtral-tiny", stream, CPU, cache_dir, PretrainConfig(steps=5, batch_size=8), progress=False)
    torch.manual_seed(0)
    model = MultimodalLM(base.lm, base.tokenizer, {m: build_encoder(m) for m in ("image", "audio")})
    strat = cls()
    strat.setup(model, RunContext(CPU, 0, Budget(steps=3, batch_size=4), stream.name,
                                  tuple(t.info for t in stream.tasks), progress=False))
    return strat


def test_per_modality_adapters_leave_base_and_earlier_adapters_untouched(stream, cache_dir):
    strat = make(LoRAPerModality, stream, cache_dir)
    base = [(p, p.detach().clone()) for p in strat.model.lm.parameters()]
    x = torch.randint(4, 20, (2, 6))
    base_logits = strat.model.lm(x).logits.detach().clone()
    vision, audio = stream.experiences
    strat.learn(vision.without_test())
    image = {n: p.detach().clone() for n, p in strat.model.lm.named_parameters() if ".image." in n}
    assert image and any(p.abs().sum() > 0 for n, p in image.items() if "lora_B" in n)  # it trained
    strat.learn(audio.without_test())
    now = dict(strat.model.lm.named_parameters())
    assert all(torch.equal(now[n], v) for n, v in image.items())  # earlier adapter frozen
    ids_now = {id(p) for p in strat.model.lm.parameters()}
    assert all(id(p) in ids_now and torch.equal(p, before) for p, before in base)  # base still used, unchanged
    text_model = strat.model_for(stream.base.info)
    assert torch.equal(text_model.lm(x).logits, base_logits)  # text runs the base model exactly
    assert not torch.equal(strat.model_for(vision.info).lm(x).logits, base_logits)


def test_trainable_count_matches_peft(stream, cache_dir):
    strat = make(LoRA, stream, cache_dir)
    stats = strat.learn(stream.experiences[0].without_test())
    projector = sum(p.numel() for p in strat.model.projectors["image"].parameters())
    assert strat.cost().trainable == stats["peft_trainable"] + projector
    assert stats["peft_trainable"] == strat.model.lm.get_nb_trainable_parameters()[0] > 0


def test_lora_state_round_trip(stream, cache_dir):
    strat = make(LoRAPerModality, stream, cache_dir)
    strat.learn(stream.experiences[0].without_test())
    state = strat.state_dict()
    again = make(LoRAPerModality, stream, cache_dir)
    again.load_state_dict(state)
    x = torch.randint(4, 20, (2, 6))
    for t in stream.tasks:
        assert torch.equal(strat.model_for(t.info).lm(x).logits, again.model_for(t.info).lm(x).logits)


def test_wrapping_the_lm_in_peft_warns_nothing(stream, cache_dir):
    import warnings

    strat = make(LoRAPerModality, stream, cache_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # PEFT reads transformers' deprecated is_gradient_checkpointing
        make(LoRA, stream, cache_dir)  # get_peft_model in setup
        strat._ensure("image")  # ... in a per-modality adapter's first use
