import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

MAX_WORKERS = 4  # each worker builds the session's fixtures (streams, bases) once: more workers gain little


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per CPU this process may use, at most MAX_WORKERS."""
    from cl_bench.run.threads import available_cpus

    return min(MAX_WORKERS, available_cpus())


def pytest_configure(config):
    """Under pytest-xdist each worker keeps to its own share of the CPUs (its affinity mask), so that the runs of
    two workers do not each take every core (a run takes the CPUs available to its process: cl_bench.run.threads)
    and oversubscribe the machine. The runs, their subprocesses and Ray's workers inherit the mask."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    index, count = int(worker.removeprefix("gw")), int(count)
    if len(cpus) >= count:
        os.sched_setaffinity(0, set(cpus[index::count]))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One data/model cache for the whole session: the stream is built once."""
    return tmp_path_factory.mktemp("clbench-cache")


@pytest.fixture
def register_strategies():
    """register_strategies({name: "module:Class", ...}): test strategies registered for the test, removed after."""
    from cl_bench import registry

    added: list[str] = []

    def register(targets: dict[str, str]) -> None:
        for name, target in targets.items():
            registry.strategies.register(name, target, origin="tests")
            added.append(name)

    yield register
    for name in added:
        registry.strategies.unregister(name)


@pytest.fixture(scope="session")
def small():
    """The small stream of tests/helpers_streams.py, registered as "small-numbers" for the session."""
    from cl_bench import registry

    registry.streams.register("small-numbers", "helpers_streams:SmallNumbers", origin="tests")
    yield
    registry.streams.unregister("small-numbers")


@pytest.fixture(scope="session")
def stream(cache_dir, small):
    """small-numbers built (vision-audio's tasks, 32 training items each): what most tests need of a stream, in
    seconds; a test about the shipped stream's own data takes `full_stream`."""
    from cl_bench.streams import resolve

    return resolve.load("small-numbers", cache_dir=cache_dir, progress=False)[1]


@pytest.fixture(scope="session")
def full_stream(cache_dir):
    """vision-audio as shipped (its first build takes about a minute on one core)."""
    from cl_bench.task_streams.vision_audio import VisionAudio

    return VisionAudio().build(cache_dir, progress=False)


@pytest.fixture(scope="session")
def every_strategy(cache_dir, small):
    """Each registered strategy run once on the small stream (1 step a stage, row-0 sharing off), with what every
    AdamW it stepped held: {name: (result document, [facts per optimizer])}. Shared by test_precision (optimizer
    states) and test_shared (row 0), so that the strategies run once."""
    import torch

    from cl_bench import registry
    from cl_bench.config import Budget
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run import shared
    from cl_bench.run.base import load_base
    from cl_bench.run.runner import RunConfig, run
    from cl_bench.streams import resolve

    # the base pre-trained (and cached) first: its optimizer is not a strategy's
    load_base("mixtral-tiny", resolve.load("small-numbers", cache_dir=cache_dir, progress=False)[1],
              torch.device("cpu"), cache_dir, PretrainConfig(steps=20), progress=False)
    mp = pytest.MonkeyPatch()
    mp.setenv(shared.ENV, "0")
    stepped = []
    original = torch.optim.AdamW.__init__

    def record(self, params, *a, **kw):
        original(self, params, *a, **kw)
        mine = [p for g in self.param_groups for p in g["params"]]
        frozen = sum(not p.requires_grad for p in mine)

        def facts(opt, args, kwargs):
            held = [p for p in mine if p in opt.state]
            stepped.append({"params": len(mine), "numel": sum(p.numel() for p in mine), "frozen": frozen,
                            "with_state": len(held),
                            "states_match": all({k: v.shape for k, v in opt.state[p].items() if k != "step"}
                                                == {"exp_avg": p.shape, "exp_avg_sq": p.shape} for p in held),
                            "float32": all(opt.state[p]["exp_avg"].dtype == torch.float32 for p in held)})
        self.register_step_post_hook(facts)

    mp.setattr(torch.optim.AdamW, "__init__", record)
    out = {}
    try:
        for name in registry.strategies.names():
            stepped.clear()
            doc, _ = run(RunConfig(stream="small-numbers", strategy=name, device="cpu",
                                   budget=Budget(steps=4, batch_size=8), pretrain=PretrainConfig(steps=20),
                                   results_dir=str(cache_dir / "every-strategy"), cache_dir=str(cache_dir)),
                         progress=False, echo=lambda s: None)
            out[name] = (doc, list(stepped))
    finally:
        mp.undo()
    return out
