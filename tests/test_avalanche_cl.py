"""EWC, LwF and replay through avalanche-lib: its plugins really run, the glue's loss, resume, options."""

import io

import pytest
import torch
from avalanche.benchmarks.utils.data_loader import ReplayDataLoader, TaskBalancedDataLoader
from avalanche.training.plugins import EWCPlugin, LwFPlugin, ReplayPlugin

from cl_bench.config import Budget, from_options
from cl_bench.models.encoders import build_encoder
from cl_bench.models.lm import PretrainConfig
from cl_bench.run.base import load_base
from cl_bench.models.multimodal import MultimodalLM
from cl_bench.strategies.avalanche_cl import EWC, LwF, Replay, glue
from cl_bench.strategies.avalanche_cl import EWCConfig, LwFConfig, ReplayConfig
from cl_bench.api.strategy import RunContext

CPU = torch.device("cpu")


def make(cls, stream, cache_dir, steps=3, base=True, **options):
    # The session's small stream (32 training items a task: EWC's Fisher passes over whole training splits); its
    # base model cached.
    lm = load_base("mixtral-tiny", stream, CPU, cache_dir, PretrainConfig(steps=5, batch_size=8), progress=False)
    torch.manual_seed(0)
    model = MultimodalLM(lm.lm, lm.tokenizer, {m: build_encoder(m) for m in ("image", "audio")})
    strat = cls(cls.Config(**options))
    strat.setup(model, RunContext(CPU, 0, Budget(steps=steps, batch_size=4), stream.name,
                                  tuple(t.info for t in stream.tasks), progress=False,
                                  base=stream.base.without_test() if base else None))
    return strat


def spy(monkeypatch, cls, name):
    """Record the calls of avalanche's `cls.name` (still calling it)."""
    calls = []
    original = getattr(cls, name)

    def wrapper(self, strategy, **kwargs):
        calls.append(strategy)
        return original(self, strategy, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return calls


def batch_of(strat, experience, n=4):
    exp = strat._avalanche_experience(experience, 0)
    return exp.dataset.collate_fn([exp.dataset[i] for i in range(n)])


# -- the glue ------------------------------------------------------------------------------
@pytest.mark.slow
def test_criterion_is_the_multimodal_loss(stream, cache_dir):
    strat = make(EWC, stream, cache_dir)
    vision = stream.experiences[0]
    x, labels, tasks = batch_of(strat, vision)
    assert len(x.parts) == 1 and tasks.tolist() == [1] * 4
    strat.module.train()
    ours = glue.answer_loss(strat.module(x), labels)
    theirs = strat.model(x.parts[0], router_aux_loss=True).loss
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)

    # A mixed batch (replay): the answer tokens of both sources weigh alike.
    text = strat._avalanche_experience(stream.base, 0).dataset
    image = strat._avalanche_experience(vision, 1).dataset
    x, labels, tasks = strat.collate([text[0], image[0], text[1], image[1], image[2]])
    assert [p.modality for p in x.parts] == ["text", "image"] and tasks.tolist() == [0, 0, 1, 1, 1]
    strat.module.eval()  # no router loss
    mixed = glue.answer_loss(strat.module(x), labels)
    sums = [strat.model(p).loss * p.answer.sum() for p in x.parts]
    assert torch.allclose(mixed, sum(sums) / sum(p.answer.sum() for p in x.parts), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_optimizer_holds_only_what_trains_and_the_budget_is_exact(stream, cache_dir):
    strat = make(EWC, stream, cache_dir, steps=5)
    audio_projector = [p.detach().clone() for p in strat.model.projectors["audio"].parameters()]
    stats = strat.learn(stream.experiences[0].without_test())
    assert stats["steps"] == 5 and stats["avalanche_experience"] == 1  # the base text task was experience 0
    in_optimizer = {id(p) for g in strat.template.optimizer.param_groups for p in g["params"]}
    trainable = {id(p) for p in strat.model.parameters() if p.requires_grad}
    assert in_optimizer == trainable
    assert trainable == {id(p) for p in [*strat.model.lm.parameters(), *strat.model.projectors["image"].parameters()]}
    assert [g["initial_lr"] for g in strat.template.optimizer.param_groups] == [EWC.Config().lr,
                                                                                EWC.Config().projector_lr]
    assert all(torch.equal(p, q) for p, q in zip(strat.model.projectors["audio"].parameters(), audio_projector))
    cost = strat.cost()
    assert cost.trainable == sum(p.numel() for p in strat.model.parameters() if p.requires_grad)


# -- avalanche's plugins really run ----------------------------------------------------------
@pytest.mark.slow
def test_ewc_runs_avalanche_and_holds_important_parameters(stream, cache_dir, monkeypatch):
    fisher = spy(monkeypatch, EWCPlugin, "after_training_exp")
    penalty = spy(monkeypatch, EWCPlugin, "before_backward")
    vision = stream.experiences[0].without_test()
    moved = {}
    for lam in (0.0, 1e5):
        strat = make(EWC, stream, cache_dir, steps=6, ewc_lambda=lam)
        strat.learn(vision)
        assert set(strat.ewc.importances) == {0, 1}  # text (avalanche's experience 0) and vision
        # What EWC holds: the distance from the base, weighted by the text task's Fisher.
        F, start = strat.ewc.importances[0], strat.ewc.saved_params[0]
        moved[lam] = sum((F[k].data * (p - start[k].data) ** 2).sum() for k, p in strat.module.named_parameters())
    assert len(fisher) == 4 and len(penalty) == 12  # per run: Fisher after text and after vision; 6 steps
    assert moved[1e5] < 0.2 * moved[0.0]


@pytest.mark.slow
def test_lwf_distils_through_avalanche(stream, cache_dir, monkeypatch):
    hooks = spy(monkeypatch, LwFPlugin, "before_backward")
    strat = make(LwF, stream, cache_dir, include_text=False)
    strat.learn(stream.experiences[0].without_test())
    assert len(hooks) == 3 and strat.lwf.lwf.prev_model is not None
    assert strat.lwf.lwf.last_penalty == 0.0  # no teacher before the first experience
    stats = strat.learn(stream.experiences[1].without_test())
    assert len(hooks) == 6 and stats["last_distillation"] > 0
    # With the base text task as experience 0, the base model teaches from the first modality on.
    strat = make(LwF, stream, cache_dir, positions="answer")
    assert strat.learn(stream.experiences[0].without_test())["last_distillation"] > 0


@pytest.mark.slow
def test_replay_mixes_earlier_items_into_training_batches(stream, cache_dir, monkeypatch, recwarn):
    loaders = []
    original = ReplayPlugin.before_training_exp

    def before(self, strategy, **kwargs):
        original(self, strategy, **kwargs)
        loaders.append(type(strategy.dataloader))

    monkeypatch.setattr(ReplayPlugin, "before_training_exp", before)
    seen = []
    forward = glue.LMModule.forward
    monkeypatch.setattr(glue.LMModule, "forward", lambda self, x: seen.append([p.modality for p in x.parts])
                        or forward(self, x))
    strat = make(Replay, stream, cache_dir)
    vision, audio = stream.experiences
    strat.learn(vision.without_test())
    seen.clear()
    stats = strat.learn(audio.without_test())
    assert loaders == [TaskBalancedDataLoader, ReplayDataLoader, ReplayDataLoader]  # text's buffer was empty
    assert stats["buffer"] == {"text": 32, "vision": 32, "audio": 32}  # 200 places, 32 items per task here
    assert len(seen) == 3 and all(mods[0] == "audio" and len(mods) > 1 for mods in seen)
    assert {"text", "image"} & {m for mods in seen for m in mods[1:]}
    assert stats["batch"] == {"current": 3, "memory": 1}
    # avalanche's own ReplayPlugin calls a deprecated method of its buffer: the strategy keeps that off the console
    assert not [w for w in recwarn if "deprecated function update" in str(w.message)]


# -- resume ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("cls, options", [(EWC, {}), (EWC, {"mode": "online", "decay_factor": 0.5}), (LwF, {}),
                                          (Replay, {})])
def test_resume_gives_the_same_model(cls, options, stream, cache_dir):
    vision, audio = (e.without_test() for e in stream.experiences)
    straight = make(cls, stream, cache_dir, **options)
    straight.learn(vision)
    buffer = io.BytesIO()
    torch.save(straight.state_dict(), buffer)
    buffer.seek(0)
    resumed = make(cls, stream, cache_dir, **options)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    resumed.resumed([vision])
    if cls is Replay:
        assert resumed.replay.storage_policy.sources() == straight.replay.storage_policy.sources()
    a, b = straight.learn(audio), resumed.learn(audio)
    assert a["last_loss"] == b["last_loss"]
    expected, got = straight.state_dict(), resumed.state_dict()
    assert set(expected) == set(got) and all(torch.equal(v, got[k]) for k, v in expected.items())
    x = batch_of(straight, audio)[0]
    assert torch.equal(straight.module(x).logits, resumed.module(x).logits)


@pytest.mark.slow
def test_a_checkpoint_of_another_strategy_is_refused(stream, cache_dir):
    lwf = make(LwF, stream, cache_dir)
    state = {k: v for k, v in lwf.state_dict().items() if not k.startswith("avalanche.")}
    with pytest.raises(ValueError, match="does not fit"):
        make(EWC, stream, cache_dir).load_state_dict(state)


# -- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize("config, options, message", [
    (EWCConfig, {"ewc_lambda": "-1"}, "ewc_lambda must be"),
    (EWCConfig, {"mode": "online"}, "needs decay_factor"),
    (EWCConfig, {"decay_factor": "0.5"}, "only used with mode 'online'"),
    (EWCConfig, {"lr": "0"}, "EWCConfig.lr must be > 0"),
    (LwFConfig, {"temperature": "0"}, "temperature must be > 0"),
    (LwFConfig, {"positions": "question"}, "'all', 'prompt' or 'answer'"),
    (ReplayConfig, {"memory_fraction": "1"}, "memory_fraction must be in"),
    (ReplayConfig, {"mem_size": "0"}, "mem_size must be >= 1"),
])
def test_bad_options_are_named(config, options, message):
    with pytest.raises(ValueError, match=message):
        from_options(config, options, "strategy")


@pytest.mark.slow
def test_include_text_without_the_base_split_says_how_to_fix_it(stream, cache_dir):
    strat = make(Replay, stream, cache_dir, base=False)
    with pytest.raises(ValueError, match="include-text=false"):
        strat.learn(stream.experiences[0].without_test())
    assert ReplayConfig().split(32) == (24, 8) and ReplayConfig(memory_fraction=0.5).split(4) == (2, 2)
    with pytest.raises(ValueError, match="at least 2"):
        ReplayConfig().split(1)


def test_lwf_positions_masks():
    """Which next-token predictions LwF distils: row = [p p p a a pad], tokens at real text positions."""
    from cl_bench.strategies.avalanche_cl.glue import MixedBatch, positions_mask

    labels = torch.tensor([[-100, -100, -100, 7, 8, -100]])
    tokens = torch.tensor([[True, True, True, True, True, False]])
    x = MixedBatch([], labels, tokens)
    # position t predicts token t + 1
    assert positions_mask(x, "all").tolist() == [[True, True, True, True, False]]
    assert positions_mask(x, "answer").tolist() == [[False, False, True, True, False]]
    assert positions_mask(x, "prompt").tolist() == [[True, True, False, False, False]]


@pytest.mark.slow
def test_a_stream_exported_to_avalanche_trains_with_avalanches_own_strategy(cache_dir, stream):
    """avalanche_benchmark: the stream as avalanche experiences, trained by avalanche's EWC as a user would."""
    import torch
    from avalanche.training import EWC

    from cl_bench.interop.avalanche import avalanche_benchmark, avalanche_parts
    from cl_bench.models.encoders import build_encoder
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.base import load_base
    from cl_bench.models.multimodal import MultimodalLM
    from cl_bench.strategies.avalanche_cl.glue import quiet_evaluator

    base = load_base("mixtral-tiny", stream, torch.device("cpu"), cache_dir, PretrainConfig(steps=5, batch_size=8),
                     progress=False)
    mm = MultimodalLM(base.lm, base.tokenizer, {m: build_encoder(m) for m in stream.modalities})
    bench = avalanche_benchmark(stream, mm, limit=8)
    assert [len(bench.train_stream), len(bench.valid_stream), len(bench.test_stream)] == [3, 3, 3]
    assert [e.task_label for e in bench.train_stream] == [0, 1, 2]
    vision = bench.train_stream[1].dataset
    assert len(vision) == 8 and list(vision.targets) == [stream.tasks[1].answer_set.index(a)
                                                        for a in stream.tasks[1].train["answer"][:8]]
    module, criterion = avalanche_parts(mm)
    before = {k: v.clone() for k, v in mm.lm.state_dict().items()}
    opt = torch.optim.SGD([p for p in mm.parameters() if p.requires_grad], lr=1e-2)
    strategy = EWC(model=module, optimizer=opt, criterion=criterion, ewc_lambda=10.0, train_mb_size=4,
                   train_epochs=1, eval_mb_size=8, device="cpu", evaluator=quiet_evaluator())
    for exp in bench.train_stream:
        strategy.train(exp)
    assert len(strategy.plugins[0].saved_params) == 3  # EWC consolidated after each experience
    assert any(not torch.equal(before[k], v) for k, v in mm.lm.state_dict().items())
    strategy.eval(bench.test_stream)  # avalanche's eval loop runs on every task's test items


@pytest.mark.parametrize("statement", ["from cl_bench.strategies.avalanche_cl import glue",
                                       "import cl_bench.interop.avalanche_data"])
def test_importing_avalanche_through_clbench_warns_nothing(statement):
    """avalanche-lib imports qpsolvers (for GEM, unused here), which warns on every run where no QP solver is
    installed: the glue (the strategies' first avalanche import) and the interop's data module (a sweep's or an
    avalanche user's first) keep that out of the output (the republish's sweep log had it once)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", statement], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr.splitlines()[-1:]
