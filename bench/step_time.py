"""Seconds per training step and trainable parameters of every strategy, on the vision stage.

Usage: python bench/step_time.py [--steps 30] [--strategies full-ft lora ...]

Each strategy is set up on the cached base model (mixtral-tiny, batch 32) and learns the
default stream's vision experience for --steps steps; the script prints the strategy's
own seconds_per_step (its training loop alone; MoExtend: the fine-tuning phase), the
trainable parameters after the stage and their fraction of all parameters, each
against full-ft. The first steps include warm-up costs, so use 30 or more.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--strategies", nargs="+", default=None)
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()

    import torch

    from cl_bench import registry
    from cl_bench.config import Budget, from_options
    from cl_bench.streams.data import default_cache_dir
    from cl_bench.models.encoders import build_encoder
    from cl_bench.models.lm import PretrainConfig
    from cl_bench.run.base import load_base
    from cl_bench.models.multimodal import MultimodalLM
    from cl_bench.run.runner import _quiet_libraries
    from cl_bench.api.strategy import RunContext

    _quiet_libraries()
    cpu = torch.device("cpu")
    cache = args.cache_dir or default_cache_dir()
    stream = registry.streams.get("vision-audio")().build(cache, progress=False)
    names = args.strategies or registry.strategies.names()
    rows = []
    for name in names:
        cls = registry.strategies.get(name)
        base = load_base("mixtral-tiny", stream, cpu, cache, PretrainConfig(), progress=False)
        torch.manual_seed(0)
        model = MultimodalLM(base.lm, base.tokenizer, {m: build_encoder(m) for m in ("image", "audio")})
        strategy = cls(from_options(cls.Config, {}, name))
        strategy.setup(model, RunContext(cpu, 0, Budget(steps=args.steps, batch_size=32), stream.name,
                                         tuple(t.info for t in stream.tasks), progress=False,
                                         base=stream.base.without_test()))
        t0 = time.perf_counter()
        stats = strategy.learn(stream.experiences[0].without_test())
        wall = time.perf_counter() - t0
        cost = strategy.cost()
        rows.append((name, stats.get("seconds_per_step"), cost.trainable, cost.total, wall))
        print(f"{name}: {stats.get('seconds_per_step')} s/step, trainable {cost.trainable:,} of {cost.total:,}, "
              f"learn() {wall:.1f} s", flush=True)
    ref = dict((r[0], r) for r in rows).get("full-ft")
    print(f"\n{args.steps} steps of batch 32 on the vision stage, torch threads {torch.get_num_threads()}\n")
    print("| strategy | s/step | vs full-ft | trainable | fraction of all parameters |")
    print("|---|---:|---:|---:|---:|")
    for name, sps, trainable, total, _ in rows:
        ratio = f"{sps / ref[1]:.2f}x" if ref and sps and ref[1] else "n/a"
        print(f"| {name} | {sps:.4f} | {ratio} | {trainable:,} | {trainable / total:.4f} |")


if __name__ == "__main__":
    main()
