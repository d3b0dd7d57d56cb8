"""The MMER strategy on the default stream with tiny budgets."""

import pytest
import torch

from cl_bench.config import Budget
from cl_bench.models.encoders import build_encoder
from cl_bench.models.lm import PretrainConfig
from cl_bench.run.base import load_base
from cl_bench.models.multimodal import MultimodalLM
from cl_bench.strategies.mmer import MMER, MMERConfig
from cl_bench.api.strategy import RunContext

CPU = torch.device("cpu")


def make(stream, cache_dir, config=None):
    base = load_base("mixtral-tiny", stream, CPU, cache_dir, PretrainConfig(steps=5, batch_size=8), progress=False)
    torch.manual_seed(0)
    model = MultimodalLM(base.lm, base.tokenizer, {m: build_encoder(m) for m in ("image", "audio")})
    strat = MMER(config or MMERConfig(alphas="0.5,1.0", lambdas="0.5,1.0"))
    strat.setup(model, RunContext(CPU, 0, Budget(steps=3, batch_size=4), stream.name,
                                  tuple(t.info for t in stream.tasks), progress=False))
    return strat


@pytest.fixture(scope="module")
def learned(stream, cache_dir):
    strat = make(stream, cache_dir)
    x = torch.randint(4, 20, (2, 6))
    base_logits = strat.model.lm(x).logits.detach().clone()
    stats = [strat.learn(e.without_test()) for e in stream.experiences]
    return strat, stats, x, base_logits


@pytest.mark.slow
def test_text_inputs_get_exactly_the_base_model(learned, stream):
    strat, _, x, base_logits = learned
    strat.model_for(stream.experiences[0].info)  # load the vision parameters ...
    strat.model_for(stream.base.info)  # ... then back to text
    assert all(torch.equal(p, strat.theta0[n]) for n, p in strat.model.lm.named_parameters())
    assert torch.equal(strat.model.lm(x).logits, base_logits)


@pytest.mark.slow
def test_each_modality_runs_with_its_masked_merge(learned, stream):
    from cl_bench.strategies.mmer import merge as M

    strat, stats, _, _ = learned
    for exp in stream.experiences:
        k = exp.modality
        c = strat.chosen[k]
        assert c["alpha"] in (0.5, 1.0) and c["lambda"] in (0.5, 1.0)
        model = strat.model_for(exp.info)
        for n, p in list(model.lm.named_parameters())[:5]:
            mask = M.unpack(strat.packed[k][n], tuple(p.shape))
            assert torch.equal(p, strat.theta0[n] + c["alpha"] * mask * strat.tau_star[n])
    last = stats[-1]
    assert set(last["chosen"]) == {"image", "audio"}
    assert {k: len(v) for k, v in last["validation_grid"].items()} == {"image": 4, "audio": 4}  # 2 alphas x 2 lambdas
    st = last["storage"]
    assert st["mask_bits"] == 2 * st["merged_vector"] and st["mask_bytes"] >= st["mask_bits"] // 8
    cost = strat.cost()
    assert cost.added == st["merged_vector"] + sum(p.numel() for p in strat.model.projectors.parameters())


@pytest.mark.slow
def test_grid_search_reads_validation_data_only(stream, cache_dir, monkeypatch):
    import cl_bench.api.training as engine

    strat = make(stream, cache_dir)
    seen = []
    real = engine.accuracy
    monkeypatch.setattr(engine, "accuracy", lambda model, data, *a, **k: seen.append(data) or real(model, data, *a, **k))
    exp = stream.experiences[0]
    strat.learn(exp.without_test())
    val = strat.data(exp.without_test(), "val")
    assert len(seen) == 4 and all(d is val for d in seen)  # 2 alphas x 2 lambdas, all on val
    assert len(val) == len(exp.val) != len(exp.test)
    with pytest.raises(RuntimeError, match="handed test data"):
        strat.learn(exp)  # an experience with its test split is refused


@pytest.mark.slow
def test_state_round_trip_gives_the_same_models(learned, stream, cache_dir):
    strat, _, x, _ = learned
    state = strat.state_dict()
    again = make(stream, cache_dir, strat.config)
    again.load_state_dict(state)
    for t in stream.tasks:
        a = strat.model_for(t.info).lm(x).logits
        b = again.model_for(t.info).lm(x).logits
        assert torch.equal(a, b), t.name


def test_bad_grid_is_named():
    with pytest.raises(ValueError, match="MMERConfig.alphas must be comma-separated numbers"):
        MMERConfig(alphas="0.5,big")


@pytest.mark.slow
def test_given_checkpoints_are_merged_without_training(learned, stream, cache_dir, tmp_path):
    from safetensors.torch import load_file

    # Export per-modality fine-tuned models, then merge them in a fresh strategy with no training.
    trained = make(stream, cache_dir, MMERConfig(alphas="1.0", lambdas="1.0", export_dir=str(tmp_path)))
    exp = stream.experiences[0]
    trained.learn(exp.without_test())
    assert (tmp_path / "image" / "projector.safetensors").exists()
    given = make(stream, cache_dir, MMERConfig(alphas="1.0", lambdas="1.0", sources=f"image={tmp_path / 'image'}"))
    stats = given.learn(exp.without_test())
    assert stats["steps"] == 0 and stats["source"].endswith("image")
    assert not any(p.requires_grad for p in given.model.parameters())
    tau_trained = load_file(str(trained._tau_path("image")))
    tau_given = load_file(str(given._tau_path("image")))
    assert tau_trained.keys() == tau_given.keys()
    assert all(torch.equal(tau_trained[k], tau_given[k]) for k in tau_trained)
    x = torch.randint(4, 20, (2, 6))
    assert torch.equal(trained.model_for(exp.info).lm(x).logits, given.model_for(exp.info).lm(x).logits)


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(ValueError, match="modality=DIR pairs"):
        MMERConfig(sources="image")
    with pytest.raises(ValueError, match="needs config.json"):
        MMERConfig(sources=f"image={tmp_path}")


@pytest.mark.slow
def test_reselect_new_keeps_earlier_choices_and_no_past_validation_data(stream, cache_dir, monkeypatch):
    import cl_bench.api.training as engine

    strat = make(stream, cache_dir, MMERConfig(alphas="0.5,1.0", lambdas="0.5,1.0", reselect="new"))
    vision, audio = stream.experiences
    strat.learn(vision.without_test())
    first = dict(strat.chosen["image"])
    seen = []
    real = engine.accuracy
    monkeypatch.setattr(engine, "accuracy", lambda model, data, *a, **k: seen.append(data) or real(model, data, *a, **k))
    strat.learn(audio.without_test())
    audio_val = strat.data(audio.without_test(), "val")
    assert len(seen) == 4 and all(d is audio_val for d in seen)  # only the new modality is tuned
    assert strat.chosen["image"] == first
    assert strat.memory().past_val_items == {"audio": len(audio.val)}  # the stage's own: no past task's
    assert strat.declaration().past_val is False and strat.declaration().modality_routed
    # The default re-tunes every modality on its kept validation split, and declares it.
    again = make(stream, cache_dir)
    again.learn(vision.without_test())
    again.learn(audio.without_test())
    assert again.memory().past_val_items == {"vision": len(vision.val), "audio": len(audio.val)}
    assert again.declaration().past_val is True


@pytest.mark.slow
def test_masks_off_runs_every_modality_on_all_of_the_merged_vector(stream, cache_dir):
    """The masks' ablation: an input of modality i runs theta_0 + alpha * tau*, unmasked, alpha chosen on validation
    (no lambda), text still theta_0; no mask is stored, and a saved state comes back the same."""
    strat = make(stream, cache_dir, MMERConfig(alphas="0.5,1.0", lambdas="0.5,1.0", masks="off"))
    stats = [strat.learn(e.without_test()) for e in stream.experiences]
    last = stats[-1]
    assert {k: len(v) for k, v in last["validation_grid"].items()} == {"image": 2, "audio": 2}  # alphas only
    assert last["storage"]["mask_bits"] == 0 and last["storage"]["mask_bytes"] == 0
    assert strat.memory().task_weight_bytes > 0 and "lambda" not in last["summary"]
    for exp in stream.experiences:
        c = strat.chosen[exp.modality]
        assert c["alpha"] in (0.5, 1.0) and c["lambda"] is None
        model = strat.model_for(exp.info)
        assert all(torch.equal(p, strat.theta0[n] + c["alpha"] * strat.tau_star[n])
                   for n, p in model.lm.named_parameters())
    strat.model_for(stream.base.info)
    assert all(torch.equal(p, strat.theta0[n]) for n, p in strat.model.lm.named_parameters())
    again = make(stream, cache_dir, strat.config)
    again.load_state_dict(strat.state_dict())
    x = torch.randint(4, 20, (2, 6))
    for t in stream.tasks:
        assert torch.equal(strat.model_for(t.info).lm(x).logits, again.model_for(t.info).lm(x).logits), t.name


def test_masks_option_is_checked_and_keeps_the_keys_of_runs_before_it():
    from cl_bench.run.keys import keyed_options

    with pytest.raises(ValueError, match="MMERConfig.masks must be 'on' or 'off'"):
        MMERConfig(masks="maybe")
    assert "masks" not in keyed_options(MMERConfig()) and keyed_options(MMERConfig(masks="off"))["masks"] == "off"
