"""The routing analysis: which experts each task's tokens go to (cl_bench.models.routing)."""

import pytest
import torch

from cl_bench.models import routing
from cl_bench.models.families import router_of
from cl_bench.models.lm import FAMILY_PRESETS, preset_config, word_tokenizer
from cl_bench.strategies.moextend import surgery


def tiny_lm(preset):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    tok = word_tokenizer([str(i) for i in range(30)])
    lm = AutoModelForCausalLM.from_config(preset_config(preset, len(tok), tok)).eval()
    lm.set_experts_implementation("eager")
    with torch.no_grad():
        for i in surgery.moe_layers(lm):
            router_of(lm, i).weight.normal_(0, 0.5)
    return lm


def by_hand(lm, x, mask):
    """Top-k counts per layer from each router's own logits (output_router_logits), padding left out."""
    out = lm(x, attention_mask=mask, output_router_logits=True)
    counts = []
    for logits in out.router_logits:
        k = lm.config.num_experts_per_tok
        idx = torch.topk(torch.softmax(logits.float(), -1), k, -1).indices[mask.reshape(-1).bool()]
        counts.append(torch.bincount(idx.reshape(-1), minlength=logits.shape[-1]).double())
    return counts


@pytest.mark.parametrize("preset", sorted(FAMILY_PRESETS))
def test_recorder_counts_the_experts_each_real_token_uses(preset):
    lm = tiny_lm(preset)
    x = torch.randint(4, 30, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(x)
    mask[0, 5:] = 0  # padding is not counted
    with torch.no_grad(), routing.RoutingRecorder(lm) as rec:
        lm(x, attention_mask=mask)
    assert [i for i, _, _ in rec.layers] == [0, 1, 2, 3] and rec.tokens == 19
    want = by_hand(lm, x, mask)
    assert all(torch.equal(c, w) for c, w in zip(rec.counts, want))
    assert all(sum(s) == pytest.approx(1.0) for s in rec.shares())
    with torch.no_grad():  # hooks are gone after the block
        lm(x, attention_mask=mask)
    assert all(torch.equal(c, w) for c, w in zip(rec.counts, want))


def test_recorder_reads_extended_blocks_and_their_added_experts():
    lm = tiny_lm("mixtral-tiny")
    blocks = surgery.extend(lm)
    add = blocks[1].add_experts([2], stage=0)
    with torch.no_grad():
        add.router.add_(1.0)  # popular
    x = torch.randint(4, 30, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), routing.RoutingRecorder(lm) as rec:
        lm(x, attention_mask=torch.ones_like(x))
    assert [k for _, _, k in rec.layers] == ["extended"] * 4
    assert rec.counts[1].numel() == 5 and rec.counts[1][4] > 0 and rec.counts[0].numel() == 4
    want = torch.bincount(blocks[1].last_indices.reshape(-1), minlength=5).double()
    assert torch.equal(rec.counts[1], want)
    assert routing.record(lm)["expert_stage"] == [[-1] * 4, [-1, -1, -1, -1, 0], [-1] * 4, [-1] * 4]


def test_a_dense_model_has_no_routing():
    from transformers import LlamaConfig, LlamaForCausalLM

    lm = LlamaForCausalLM(LlamaConfig(vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1))
    assert routing.moe_layers(lm) == [] and routing.record(lm) is None


def test_grouped_shares_sum_each_stages_added_experts():
    shares = [[0.5, 0.5], [0.2, 0.3, 0.4, 0.1]]  # layer 1 has experts added by stages 0 and 1
    stages = [[-1, -1], [-1, -1, 1, 0]]
    got = routing.grouped_shares(shares, stages, 2)
    assert got.tolist() == [[0.5, 0.5, 0.0, 0.0], [0.2, 0.3, 0.1, 0.4]]
