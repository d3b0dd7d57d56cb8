"""A run's key: the hash of everything that changes its results, and the result file's path that carries it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cl_bench import __version__
from cl_bench.models.lm import PRESETS
from cl_bench.streams import base as streams
from cl_bench.streams.data import stable_hash


def identity(config, strategy, stream_obj, stream, base, cache: Path, threads: int | None = None) -> dict:
    """What the run key hashes: the configuration's result-changing fields, the data, the strategy's resolved
    options, the base model, the CPU thread count (`threads`; None on a GPU) and (only where they differ from
    the defaults, so that default runs keep their keys) the stream's options, a stream file's content, the task
    order and encoders' files."""
    from cl_bench.models.pretrained import is_model_dir
    from cl_bench.run.base import checkpoint_key

    data = stable_hash([(t.name, len(t.train), len(t.val), list(t.test["prompt"]), list(t.test["answer"]))
                        for t in stream.tasks])
    ident = {"clbench": __version__, "config": config.identity(), "data": data,
             "strategy_options": dataclasses.asdict(strategy.config),
             "base": base.info.get("key"), "base_path": base.info.get("path")}
    if threads is not None:  # float sums on the CPU differ across thread counts
        ident["threads"] = threads
    changes = streams.changed_options(stream_obj)
    if changes:
        ident["stream_options"] = changes
    if hasattr(stream_obj, "file_key"):  # a stream file: its content and its data files
        ident["stream_file"] = stream_obj.file_key()
    if stream.order != tuple(type(stream_obj).tasks):
        ident["order"] = list(stream.order)
    # An encoder given by directory: a fingerprint of its files, as for a local checkpoint
    encoder_files = {m: checkpoint_key(Path(n).expanduser(), cache) for m, n in sorted(config.encoders.items())
                     if is_model_dir(n)}
    if encoder_files:
        ident["encoder_files"] = encoder_files
    return ident


def model_name(config) -> str:
    """The base model's short name: the preset, or the checkpoint directory's name."""
    return config.model if config.model in PRESETS else Path(config.model).name


def result_path(config, stream_name: str, key: str) -> Path:
    """results_dir/runs/<stream>/<strategy>/<model>-seed<N>-<key[:8]>.json"""
    return (Path(config.results_dir) / "runs" / stream_name / config.strategy
            / f"{model_name(config)}-seed{config.seed}-{key[:8]}.json")
