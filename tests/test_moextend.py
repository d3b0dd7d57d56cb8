"""MoExtend: surgery on each MoE family, the calibration module, layer selection, save/load, and a full run."""

import math

import pytest
import torch

from cl_bench.models.families import block_of, router_of
from cl_bench.models.lm import FAMILY_PRESETS, preset_config, word_tokenizer
from cl_bench.strategies.moextend import selection, surgery

FAMILIES = sorted(FAMILY_PRESETS)  # one tiny preset per supported family


def tiny_lm(preset, seed=0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tok = word_tokenizer([str(i) for i in range(30)])
    lm = AutoModelForCausalLM.from_config(preset_config(preset, len(tok), tok)).eval()
    lm.set_experts_implementation("eager")
    with torch.no_grad():  # non-zero routers (OLMoE and Qwen2-MoE initialise them at 0)
        for i in surgery.moe_layers(lm):
            router_of(lm, i).weight.normal_(0, 0.5)
    return lm


def ids(n=2, L=7, seed=1):
    return torch.randint(4, 30, (n, L), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("preset", FAMILIES)
def test_wrapping_without_additions_changes_nothing(preset):
    lm = tiny_lm(preset)
    x = ids()
    want = lm(x).logits
    surgery.extend(lm)
    assert all(isinstance(block_of(lm, i), surgery.ExtendedMoeBlock) for i in surgery.moe_layers(lm))
    assert torch.equal(lm(x).logits, want)


@pytest.mark.parametrize("preset", FAMILIES)
def test_added_expert_is_a_copy_in_its_own_tensors_and_trains_alone(preset):
    lm = tiny_lm(preset)
    blocks = surgery.extend(lm)
    b = blocks[1]
    E = b.n_original
    add = b.add_experts([2], stage=0)
    assert b.n_experts == E + 1
    assert b.block.experts.gate_up_proj.shape[0] == E  # old tensors untouched
    assert add.experts.gate_up_proj.shape[0] == 1
    assert add.experts.gate_up_proj.data_ptr() != b.block.experts.gate_up_proj.data_ptr()
    assert torch.equal(add.experts.gate_up_proj[0], b.block.experts.gate_up_proj[2])
    assert torch.equal(add.experts.down_proj[0], b.block.experts.down_proj[2])
    assert torch.equal(add.router[0], b.gate_weight[2])
    # only the additions train
    lm.requires_grad_(False)
    add.requires_grad_(True)
    out = lm(ids(), labels=ids())
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert add.router.grad is not None and add.router.grad.abs().sum() > 0
    assert add.experts.gate_up_proj.grad is not None
    assert add.calibration.w2.weight.grad is not None  # calibration is on the path
    assert b.block.experts.gate_up_proj.grad is None and b.gate_weight.grad is None


def reference_moe(b: surgery.ExtendedMoeBlock, h: torch.Tensor) -> torch.Tensor:
    """The extended layer computed by hand, expert by expert, from the weights alone."""
    experts = [(b.block.experts.gate_up_proj[e], b.block.experts.down_proj[e]) for e in range(b.n_original)]
    experts += [(a.experts.gate_up_proj[j], a.experts.down_proj[j]) for a in b.additions for j in range(a.n)]
    p = torch.softmax(h @ b.router_weight().T, -1)
    idx = torch.topk(p, b.top_k, -1).indices
    w = torch.gather(p, 1, idx)
    if b.family.renormalizes(b.block):
        w = w / w.sum(-1, keepdim=True)
    out = torch.zeros_like(h)
    act = b.block.experts.act_fn
    for t in range(h.shape[0]):
        for j in range(b.top_k):
            gate_up, down = experts[idx[t, j]]
            g, u = (gate_up @ h[t]).chunk(2)
            out[t] += w[t, j] * (down @ (act(g) * u))
    if b.family.shared_expert:
        out += torch.sigmoid(b.block.shared_expert_gate(h)) * b.block.shared_expert(h)
    return out


@pytest.mark.parametrize("preset", FAMILIES)
def test_extended_layer_matches_a_hand_computed_moe(preset):
    """Old experts through the family's expert code plus new ones in their own tensors = the MoE by hand."""
    lm = tiny_lm(preset)
    b = surgery.extend(lm)[0]
    b.add_experts([1], stage=0)
    b.add_experts([3], stage=1)
    with torch.no_grad():
        for a in b.additions:  # make the new experts different from their sources, and popular
            a.experts.gate_up_proj.normal_(0, 0.2)
            a.router.normal_(0, 1.0)
    h = torch.randn(1, 40, lm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = b(h)[0]
        _, _, idx = b.route(h[0])
        assert (idx >= b.n_original).any() and (idx < b.n_original).any()  # both groups are used
        torch.testing.assert_close(got, reference_moe(b, h[0]), rtol=1e-4, atol=1e-5)


def test_calibration_is_identity_at_init_and_topk_uses_uncalibrated_probabilities():
    lm = tiny_lm("mixtral-tiny")
    b = surgery.extend(lm)[0]
    add = b.add_experts([1], stage=0)
    h = torch.randn(50, lm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    p = torch.softmax(torch.nn.functional.linear(h, b.router_weight()).float(), -1)
    assert torch.equal(add.calibration.delta(p), torch.zeros_like(p))
    _, w, idx = b.route(h)
    top = torch.topk(p, b.top_k, -1)
    # The chosen experts hold the top-k probabilities (the copied row ties with its source, so where the
    # source was second either of the two may take that slot: same value, same expert weights).
    torch.testing.assert_close(torch.gather(p, 1, idx), top.values)
    torch.testing.assert_close(w, top.values / top.values.sum(-1, keepdim=True))
    # A calibration that reverses the order of p must not change which experts are chosen.
    with torch.no_grad():
        add.calibration.w1.weight.copy_(torch.eye(16, p.shape[1]))
        add.calibration.w2.weight.copy_(-10 * torch.eye(p.shape[1], 16))
    _, w2, idx2 = b.route(h)
    assert torch.equal(idx2, idx)
    assert not torch.allclose(w2, w)


def test_topk_counts_count_the_most_likely_experts():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [0.0, 5.0, 4.0, -1.0]])
    assert selection.topk_counts(logits, 2).tolist() == [1, 2, 2, 1]
    mask = torch.tensor([1, 0, 1])
    assert selection.topk_counts(logits, 2, mask).tolist() == [1, 2, 1, 0]


def test_selection_picks_the_layers_whose_routing_shifts_most():
    before = torch.full((4, 4), 25.0)
    after = before.clone()
    after[1] = torch.tensor([70.0, 10.0, 10.0, 10.0])  # strong shift towards expert 0
    after[3] = torch.tensor([10.0, 10.0, 40.0, 40.0])  # weaker shift
    after[2] = torch.tensor([24.0, 26.0, 25.0, 25.0])  # almost none
    scores = selection.routing_shift(before, after)
    assert scores[1] > scores[3] > scores[2] > scores[0] == 0
    assert selection.select_layers(scores, 0.5) == [1, 3]
    assert selection.select_layers(scores, 0.25) == [1]
    assert selection.select_layers(scores, 0.3) == [1, 3]  # ceil(4 * 0.3) = 2
    assert selection.source_experts(after, [1, 3]) == [0, 2]
    assert selection.select_layers(scores, 0.5, "all") == [0, 1, 2, 3]
    assert selection.select_layers(scores, 0.5, "first-half") == [0, 1]
    r = selection.select_layers(scores, 0.5, "random", seed=3)
    assert len(r) == 2 and r == selection.select_layers(scores, 0.5, "random", seed=3)
    with pytest.raises(ValueError, match="layer choice must be one of"):
        selection.select_layers(scores, 0.5, "best")


def test_load_balancing_loss_matches_transformers():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    logits = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    ours = surgery.load_balancing_loss(logits, 2)
    theirs = load_balancing_loss_func((logits,), num_experts=5, top_k=2)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("preset", FAMILIES)
def test_save_and_load_round_trip(preset, tmp_path):
    lm = tiny_lm(preset)
    blocks = surgery.extend(lm)
    blocks[0].add_experts([1], stage=0)
    blocks[2].add_experts([3], stage=0)
    blocks[2].add_experts([0], stage=1)
    with torch.no_grad():
        for b in blocks:
            for a in b.additions:
                a.calibration.w2.weight.normal_()
                a.experts.gate_up_proj.normal_(0, 0.1)
    surgery.save_extended(lm, tmp_path / "ext")
    assert (tmp_path / "ext" / "model.safetensors").exists()
    back = surgery.load_extended(tmp_path / "ext")
    back.set_experts_implementation("eager")
    assert surgery.structure(back) == surgery.structure(lm) == [[0, 0, 1], [0, 2, 3], [1, 2, 0]]
    x = ids()
    assert torch.equal(back(x).logits, lm(x).logits)


def test_batched_kernel_agrees_with_eager():
    lm = tiny_lm("mixtral-tiny")
    for b in surgery.extend(lm)[:2]:
        b.add_experts([1], stage=0)
        with torch.no_grad():
            b.additions[0].router.add_(0.5)  # make the new expert popular
    x = ids(3, 9)
    eager = lm(x).logits
    lm.set_experts_implementation("batched_mm")
    torch.testing.assert_close(lm(x).logits, eager, rtol=1e-4, atol=1e-5)


def test_non_moe_model_is_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    lm = LlamaForCausalLM(LlamaConfig(vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match="model type 'llama' is not a supported MoE family; clbench runs mixtral, "
                                         "olmoe, qwen2_moe, qwen3_moe, granitemoe"):
        surgery.extend(lm)


@pytest.mark.slow
def test_full_run_keeps_every_original_parameter_bit_identical(stream, cache_dir):
    from cl_bench.config import Budget
    from cl_bench.models.encoders import build_encoder
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.base import load_base
    from cl_bench.models.multimodal import MultimodalLM
    from cl_bench.strategies.moextend import MoExtend, MoExtendConfig
    from cl_bench.api.strategy import RunContext

    dev = torch.device("cpu")
    base = load_base("mixtral-tiny", stream, dev, cache_dir, PretrainConfig(steps=5, batch_size=8), progress=False)
    torch.manual_seed(0)
    model = MultimodalLM(base.lm, base.tokenizer, {m: build_encoder(m) for m in ("image", "audio")})
    original = [(p, p.detach().clone()) for p in model.lm.parameters()]
    strat = MoExtend(MoExtendConfig(align_steps=2, extension_steps=3, finetune_steps=2, stats_items=32))
    strat.setup(model, RunContext(dev, 0, Budget(steps=2, batch_size=4), stream.name,
                                  tuple(t.info for t in stream.tasks), progress=False))
    stats = [strat.learn(e.without_test()) for e in stream.experiences]
    assert all(torch.equal(p, before) for p, before in original)  # attention, embeddings, head, experts, routers
    L = len(surgery.moe_layers(model.lm))
    for s in stats:
        assert len(s["extended_layers"]) == math.ceil(L * 0.5) and len(s["source_experts"]) == len(s["extended_layers"])
        assert s["active_parameters_per_token"]["now"] > s["active_parameters_per_token"]["base"]
    # each modality added its own experts; the first modality's are frozen in the second stage
    first = [a for b in strat.blocks for a in b.additions if int(a.stage) == 0]
    second = [a for b in strat.blocks for a in b.additions if int(a.stage) == 1]
    assert len(first) == len(second) == math.ceil(L * 0.5)
    assert not any(p.requires_grad for a in first for p in a.parameters())
    assert all(p.requires_grad for a in second for p in a.parameters())
    cost = strat.cost()
    assert cost.trainable == sum(p.numel() for a in second for p in a.parameters()) + sum(
        p.numel() for p in model.projectors["audio"].parameters())
    # resume: a fresh strategy restores structure and weights from the state dict
    state = strat.state_dict()
    torch.manual_seed(0)
    model2 = MultimodalLM(load_base("mixtral-tiny", stream, dev, cache_dir, PretrainConfig(steps=5, batch_size=8),
                                    progress=False).lm, base.tokenizer, {m: build_encoder(m) for m in ("image", "audio")})
    strat2 = MoExtend(strat.config)
    strat2.setup(model2, strat.context)
    strat2.load_state_dict(state)
    x = torch.randint(4, 20, (2, 6))
    assert torch.equal(model2.lm(x).logits, model.lm(x).logits)


@pytest.mark.slow
def test_moextend_through_the_runner(tmp_path, cache_dir, small):
    from cl_bench.config import Budget
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.runner import RunConfig, run
    from cl_bench.reporting.summary import format_summary

    cfg = RunConfig(stream="small-numbers", strategy="moextend", budget=Budget(steps=4, batch_size=4),
                    pretrain=PretrainConfig(steps=5, batch_size=8), eval_limit=64,
                    strategy_options={"fraction": "0.25", "layer-choice": "first-half", "stats-items": "16"},
                    results_dir=str(tmp_path), cache_dir=str(cache_dir))
    r, path = run(cfg, progress=False)
    assert r["config"]["strategy_options"]["layer_choice"] == "first-half"
    for st in r["stages"]:
        ts = st["train_stats"]
        assert ts["extended_layers"] == [0]  # ceil(4 * 0.25) = 1, the first layer
        assert set(ts) >= {"align_seconds", "extension_seconds", "finetune_seconds", "source_experts",
                           "active_parameters_per_token"}
        assert st["cost"]["added"] > 0 and st["cost"]["trainable"] < st["cost"]["added"]
    text = format_summary(r, path)
    assert "extended from experts" in text and "fine-tuning" in text


def test_a_later_stage_can_copy_an_earlier_added_expert():
    lm = tiny_lm("mixtral-tiny")
    b = surgery.extend(lm)[0]
    E = b.n_original
    first = b.add_experts([1], stage=0)
    with torch.no_grad():
        first.experts.gate_up_proj.normal_()
    second = b.add_experts([E], stage=1)  # source: the expert added in stage 0
    assert torch.equal(second.experts.gate_up_proj[0], first.experts.gate_up_proj[0])
    assert torch.equal(second.router[0], first.router[0])
    with pytest.raises(IndexError, match="does not exist"):
        b.add_experts([E + 5], stage=2)


def test_phases_split_the_stage_budget():
    from cl_bench.strategies.moextend import MoExtend, MoExtendConfig

    assert MoExtend(MoExtendConfig()).phase_steps(400) == (160, 40, 200)
    assert MoExtend(MoExtendConfig()).phase_steps(400, has_projector=False) == (0, 40, 360)
    assert MoExtend(MoExtendConfig(phases="paper")).phase_steps(400) == (400, 100, 400)
    assert MoExtend(MoExtendConfig(finetune_steps=50)).phase_steps(400) == (160, 40, 50)


def _router_logits(lm, x):
    """Per extended block, the router logits of the last forward on x."""
    with torch.no_grad():
        lm(x)
    return [b.last_router_logits for b in surgery.extended_blocks(lm).values()]


@pytest.mark.slow
@pytest.mark.parametrize("preset", FAMILIES)
def test_outside_router_init_is_function_preserving_and_trains(preset):
    """router-init=outside: bit-identical logits at step 0 (routers that renormalise the top-k), gradients flow."""
    lm = tiny_lm(preset)
    for i in surgery.moe_layers(lm):
        router_of(lm, i).norm_topk_prob = True  # OLMoE / Qwen2-MoE: renormalising, as Mixtral
    x = ids(4, 9)
    want = lm(x).logits
    blocks = surgery.extend(lm)
    logits = _router_logits(lm, x)
    adds = []
    for b, lg in zip(blocks[:2], logits):
        src = int(torch.topk(lg, b.top_k, -1).indices[:, 0].mode().values)  # a source that is often top-1
        room = surgery.room_below_topk(lg, b.top_k)
        add = b.add_experts([src], stage=0)
        with torch.no_grad():
            add.offset.add_(float(room[src]) - 0.5)
        adds.append(add)
    with torch.no_grad():
        got = lm(x).logits
    assert torch.equal(got, want)
    assert all(bool((b.last_indices < b.n_original).all()) for b in blocks[:2])  # no token reaches a new expert
    # ... but the new rows are live: the load-balancing loss reaches them through their probabilities.
    lm.requires_grad_(False)
    for a in adds:
        a.requires_grad_(True)
    lm(x)
    loss = torch.stack([surgery.load_balancing_loss(b.last_router_logits, b.top_k) for b in blocks[:2]]).sum()
    loss.backward()
    assert all(a.router.grad.abs().sum() > 0 and a.offset.grad.abs().sum() > 0 for a in adds)


def test_copied_router_row_changes_answers_before_training():
    """The paper's copy ties source and copy: tokens whose top-1 was the source lose their second expert."""
    lm = tiny_lm("mixtral-tiny")
    x = ids(4, 9)
    want = lm(x).logits
    blocks = surgery.extend(lm)
    lg = _router_logits(lm, x)[0]
    src = int(torch.topk(lg, 2, -1).indices[:, 0].mode().values)
    blocks[0].add_experts([src], stage=0)
    with torch.no_grad():
        got = lm(x).logits
    assert (blocks[0].last_indices >= blocks[0].n_original).any()
    assert not torch.equal(got, want)


@pytest.mark.parametrize("preset", FAMILIES)
def test_scope_leaves_tokens_outside_it_on_the_original_routing(preset):
    lm = tiny_lm(preset)
    x = ids(3, 8)
    want = lm(x).logits
    blocks = surgery.extend(lm)
    for b in blocks:
        b.add_experts([1], stage=0)
        with torch.no_grad():
            b.additions[0].router.add_(0.5)  # popular new experts
    with torch.no_grad():
        assert not torch.equal(lm(x).logits, want)
        for b in blocks:  # text-only input: no token in scope
            b.scope = torch.zeros(x.numel(), dtype=torch.bool)
        assert torch.equal(lm(x).logits, want)
        # In one block: tokens outside the scope get the original block's output, those inside the extended one.
        b = blocks[0]
        h = torch.randn(1, 12, lm.config.hidden_size, generator=torch.Generator().manual_seed(2))
        inside = torch.arange(12) % 3 == 0
        b.scope = None
        full = b(h)[0]
        original = b.block(h)[0]
        b.scope = inside
        scoped = b(h)[0]
        assert (b.last_indices[inside] >= b.n_original).any() and (b.last_indices[~inside] < b.n_original).all()
        torch.testing.assert_close(scoped[~inside], original[~inside], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(scoped[inside], full[inside], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("feed", ["prefix", "own"])
def test_calibration_input_on_a_hand_built_router(feed):
    """Stage 0's calibration, once stage 1 added an expert: fed the prefix of the current softmax or its own."""
    import math

    lm = tiny_lm("mixtral-tiny")
    b = surgery.extend(lm)[0]
    first = b.add_experts([0], stage=0)
    b.add_experts([1], stage=1)
    b.calibration_input = feed
    with torch.no_grad():  # on h = e_0 the logits are column 0 of the router rows: [1, 2, 3, 4 | 0.5 | 2.5]
        b.gate_weight[:, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
        first.router[0, 0] = 0.5
        b.additions[1].router[0, 0] = 2.5
    seen = []
    first.calibration.delta = lambda p: (seen.append(p), torch.zeros_like(p))[1]
    h = torch.zeros(1, lm.config.hidden_size)
    h[0, 0] = 1.0
    b.route(h)
    z = [1.0, 2.0, 3.0, 4.0, 0.5, 2.5]
    if feed == "prefix":  # the first five entries of the softmax over all six experts
        want = [math.exp(v) / sum(math.exp(u) for u in z) for v in z[:5]]
    else:  # the softmax over stage 0's own five experts, as in its training
        want = [math.exp(v) / sum(math.exp(u) for u in z[:5]) for v in z[:5]]
    torch.testing.assert_close(seen[0][0], torch.tensor(want), rtol=1e-6, atol=1e-7)


def test_scope_masks_from_a_batch():
    from cl_bench.models.multimodal import Batch
    from cl_bench.strategies.moextend import MoExtend, MoExtendConfig

    slots = torch.tensor([[False, True, True, False, False], [True, True, False, False, False]])
    batch = Batch("image", torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long),
                  torch.zeros(2, 5, dtype=torch.bool), torch.zeros(2, 3), slots)

    class Block:
        scope = None

    for scope, want in (("input", slots), ("input-after", torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]).bool())):
        s = MoExtend(MoExtendConfig(scope=scope))
        s.blocks = [Block(), Block()]
        s._set_scope(batch)
        assert all(torch.equal(b.scope, want.reshape(-1)) for b in s.blocks)
        s._set_scope(Batch("text", batch.ids, batch.attention, batch.answer))
        assert not any(b.scope.any() for b in s.blocks)


def test_moextend_options_are_checked():
    from cl_bench.strategies.moextend import MoExtendConfig

    for bad, msg in (({"router_init": "zero"}, "router_init must be one of"), ({"scope": "text"}, "scope must be"),
                     ({"text_mix": 1.0}, "text_mix must be in"), ({"calibration_input": "x"}, "calibration_input"),
                     ({"outside_margin": -1.0}, "outside_margin")):
        with pytest.raises(ValueError, match=msg):
            MoExtendConfig(**bad)


def _moextend_run(tmp_path, cache_dir, options, inspect, steps=8):
    from cl_bench.config import Budget
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.runner import RunConfig, run

    cfg = RunConfig(stream="small-numbers", strategy="moextend", budget=Budget(steps=steps, batch_size=4),
                    pretrain=PretrainConfig(steps=5, batch_size=8), eval_limit=64, results_dir=str(tmp_path),
                    cache_dir=str(cache_dir), strategy_options={"fraction": "0.25", "layer-choice": "first-half",
                                                                "stats-items": "64", **options})
    return run(cfg, progress=False, inspect=inspect)[0]


def _text_logits(strategy, stream):
    """The LM's logits on a few of the text task's validation items."""
    from cl_bench.api.training import TaskData

    batch = TaskData(stream.tasks[0].val.select(range(8)), strategy.model, "text").batch(range(8))
    with torch.no_grad():
        embeds, _ = strategy.model.inputs(batch)
        return strategy.model.lm(inputs_embeds=embeds, attention_mask=batch.attention).logits


@pytest.mark.slow
def test_moextend_options_through_the_runner(tmp_path, cache_dir, small):
    """outside init + input scope + own calibration feed + text mix, end to end (the small stream)."""
    from cl_bench.streams import resolve

    stream = resolve.load("small-numbers", cache_dir=cache_dir, progress=False)[1]
    seen = {}

    def inspect(event, strategy):
        seen[event] = ([b.gate_weight.detach().clone() for b in strategy.blocks], _text_logits(strategy, stream))

    r = _moextend_run(tmp_path, cache_dir, {"router-init": "outside", "scope": "input", "calibration-input": "own",
                                            "text-mix": "0.25"}, inspect)
    assert r["declaration"]["past_train"] and r["declaration"]["budget"] == "equal"
    for i, st in enumerate(r["stages"], start=1):
        cp = st["checkpoints"]
        assert list(cp) == ["after-alignment", "after-surgery"]
        assert all(set(v) == {"text", "vision", "audio"} for v in cp.values())
        assert all(o < 0 for o in st["train_stats"]["router_offsets"])
        assert st["memory"]["past_train_items"] == {"text": r["stream"]["tasks"][0]["n_train"]}
        assert st["training"]["examples"] == st["training"]["budget_examples"]
        layout = r["routing"]["rows"][i]
        assert layout["expert_stage"][0] == [-1, -1, -1, -1] + list(range(i))  # layer 0 grows by one per stage
        assert all(len(sh[0]) == 4 + i for sh in layout["shares"].values())
        assert layout["shares"]["text"][0][4:] == [0.0] * i  # scope=input: no text token reaches a new expert
    # Text lies outside the scope: after two stages (text batches mixed in) it is answered bit for bit as before,
    # and the original routers are as they were (restored after router tuning).
    assert torch.equal(seen["setup"][1], seen["end"][1])
    assert all(torch.equal(a, b) for a, b in zip(seen["setup"][0], seen["end"][0]))


@pytest.mark.slow
def test_keep_tuned_routers_lets_router_tuning_change_the_gates(tmp_path, cache_dir, small):
    gates = {}

    def inspect(event, strategy):
        gates[event] = [b.gate_weight.detach().clone() for b in strategy.blocks]
        if event == "setup":
            gates["frozen"] = len(strategy.frozen()), len(list(strategy.model.lm.parameters()))

    _moextend_run(tmp_path, cache_dir, {"keep-tuned-routers": "true"}, inspect, steps=4)
    n_frozen, n_all = gates["frozen"]
    assert n_frozen == n_all - 4  # the four routers may change under keep-tuned-routers
    assert not all(torch.equal(a, b) for a, b in zip(gates["setup"], gates["end"]))
