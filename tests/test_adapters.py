"""Bottleneck adapter strategies: identity at insertion, per-modality isolation, counts, state, config."""

import pytest
import torch
from torch import nn

from cl_bench.config import Budget
from cl_bench.models.encoders import build_encoder
from cl_bench.models.lm import FAMILY_PRESETS, PretrainConfig
from cl_bench.run.base import load_base
from cl_bench.models.multimodal import MultimodalLM
from cl_bench.strategies.adapters import Adapter, AdapterConfig, AdapterPerModality
from cl_bench.strategies.adapters.modules import activate, add_adapter, insert_slots
from cl_bench.api.strategy import RunContext

CPU = torch.device("cpu")


def make(cls, stream, cache_dir, preset="mixtral-tiny", **options):
    base = load_base(preset, stream, CPU, cache_dir, PretrainConfig(steps=5, batch_size=8), progress=False)
    torch.manual_seed(0)
    model = MultimodalLM(base.lm, base.tokenizer, {m: build_encoder(m) for m in ("image", "audio")})
    strat = cls(cls.Config(**options))
    strat.setup(model, RunContext(CPU, 0, Budget(steps=3, batch_size=4), stream.name,
                                  tuple(t.info for t in stream.tasks), progress=False))
    return strat


def adapters_of(lm, name):
    return {n: p.detach().clone() for n, p in lm.named_parameters() if f".adapters.{name}." in n}


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["pfeiffer", "houlsby"])
@pytest.mark.parametrize("preset", FAMILY_PRESETS)
def test_fresh_adapter_is_the_identity(stream, cache_dir, preset, placement):
    base = load_base(preset, stream, CPU, cache_dir, PretrainConfig(steps=5, batch_size=8), progress=False)
    x = torch.randint(4, 20, (2, 6))
    before = base.lm(x).logits.detach().clone()
    slots = insert_slots(base.lm, placement)
    assert len(slots) == base.lm.config.num_hidden_layers * (2 if placement == "houlsby" else 1)
    add_adapter(slots, "a", base.lm.config.hidden_size, 16, "gelu", next(base.lm.parameters()))
    activate(slots, "a")
    assert torch.equal(base.lm(x).logits, before)  # zero up-projection: bit-identical
    for slot in slots:  # and the hooks do act once the adapter is not zero
        nn.init.normal_(slot.adapters["a"].up.weight)
    assert not torch.equal(base.lm(x).logits, before)
    activate(slots, None)
    assert torch.equal(base.lm(x).logits, before)


class _TupleLayer(nn.Module):
    """A decoder layer whose blocks return (hidden, extras), as MoE blocks of some transformers versions do."""

    def __init__(self):
        super().__init__()
        self.self_attn = nn.Identity()
        self.mlp = nn.Identity()

    def forward(self, h):
        out, extra = self.mlp((h, "router logits"))
        return out, extra


def test_tuple_outputs_adapt_the_hidden_state_only():
    layer = _TupleLayer()
    slots = insert_slots(layer, "pfeiffer")
    add_adapter(slots, "a", 8, 2, "relu", torch.zeros(()))
    nn.init.ones_(slots[0].adapters["a"].up.bias)
    activate(slots, "a")
    h = torch.zeros(1, 3, 8)
    out, extra = layer(h)
    assert torch.equal(out, torch.ones(1, 3, 8)) and extra == "router logits"


@pytest.mark.slow
def test_per_modality_adapters_leave_base_and_earlier_adapters_untouched(stream, cache_dir):
    strat = make(AdapterPerModality, stream, cache_dir)
    base = [(p, p.detach().clone()) for p in strat.model.lm.parameters()]
    x = torch.randint(4, 20, (2, 6))
    base_logits = strat.model.lm(x).logits.detach().clone()
    vision, audio = stream.experiences
    stats = strat.learn(vision.without_test())
    assert stats["adapter"] == "image"
    image = adapters_of(strat.model.lm, "image")
    assert image and any(p.abs().sum() > 0 for n, p in image.items() if ".up." in n)  # it trained
    assert torch.equal(strat.model_for(audio.info).lm(x).logits, base_logits)  # audio not learned yet: base
    strat.learn(audio.without_test())
    now = dict(strat.model.lm.named_parameters())
    assert all(torch.equal(now[n], v) for n, v in image.items())  # earlier adapter frozen
    ids_now = {id(p) for p in strat.model.lm.parameters()}
    assert all(id(p) in ids_now and torch.equal(p, before) for p, before in base)  # base still used, unchanged
    assert torch.equal(strat.model_for(stream.base.info).lm(x).logits, base_logits)  # text runs the base exactly
    assert not torch.equal(strat.model_for(vision.info).lm(x).logits, base_logits)


@pytest.mark.slow
def test_shared_adapter_trains_and_is_on_for_text(stream, cache_dir):
    strat = make(Adapter, stream, cache_dir, placement="houlsby")
    x = torch.randint(4, 20, (2, 6))
    base_logits = strat.model_for(stream.base.info).lm(x).logits.detach().clone()  # fresh shared adapter: identity
    stats = strat.learn(stream.experiences[0].without_test())
    assert stats["adapter"] == "shared" and stats["steps"] == 3
    shared = adapters_of(strat.model.lm, "shared")
    assert any(p.abs().sum() > 0 for n, p in shared.items() if ".up." in n)
    assert not torch.equal(strat.model_for(stream.base.info).lm(x).logits, base_logits)  # where forgetting shows


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["pfeiffer", "houlsby"])
def test_trainable_count_is_adapter_plus_projector(stream, cache_dir, placement):
    strat = make(Adapter, stream, cache_dir, placement=placement, reduction_factor=8)
    stats = strat.learn(stream.experiences[0].without_test())
    cfg = strat.model.lm.config
    d, b = cfg.hidden_size, cfg.hidden_size // 8
    per_layer = 2 if placement == "houlsby" else 1
    adapter = cfg.num_hidden_layers * per_layer * (d * b + b + b * d + d)  # down and up, with biases
    projector = sum(p.numel() for p in strat.model.projectors["image"].parameters())
    all_projectors = sum(p.numel() for p in strat.model.projectors.parameters())
    cost = strat.cost()
    assert stats["adapter_parameters"] == adapter
    assert cost.trainable == adapter + projector
    assert cost.added == adapter + all_projectors


@pytest.mark.slow
@pytest.mark.parametrize("cls", [Adapter, AdapterPerModality])
def test_adapter_state_round_trip(stream, cache_dir, cls):
    strat = make(cls, stream, cache_dir)
    for exp in stream.experiences:
        strat.learn(exp.without_test())
    state = strat.state_dict()
    again = make(cls, stream, cache_dir)
    again.load_state_dict(state)
    x = torch.randint(4, 20, (2, 6))
    for t in stream.tasks:
        assert torch.equal(strat.model_for(t.info).lm(x).logits, again.model_for(t.info).lm(x).logits)


@pytest.mark.slow
def test_bad_config_says_what_to_change(stream, cache_dir):
    with pytest.raises(ValueError, match="placement must be one of pfeiffer, houlsby"):
        AdapterConfig(placement="parallel")
    with pytest.raises(ValueError, match="nonlinearity must be one of relu, gelu"):
        AdapterConfig(nonlinearity="tanh")
    with pytest.raises(ValueError, match="reduction_factor must be an integer >= 1"):
        AdapterConfig(reduction_factor=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        AdapterConfig(lr=0.0)
    with pytest.raises(ValueError, match=r"reduction_factor 3 does not divide the hidden size 128; use one of"):
        make(Adapter, stream, cache_dir, reduction_factor=3)
