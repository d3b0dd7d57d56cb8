"""A run's key: the hash of everything that changes its results, and the result file's path that carries it."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sys
from pathlib import Path

from cl_bench import __version__
from cl_bench.models.lm import PRESETS
from cl_bench.streams import base as streams
from cl_bench.streams.data import stable_hash
from cl_bench.streams.experience import column


def identity(config, strategy, stream_obj, stream, base, cache: Path, threads: int | None = None) -> dict:
    """What the run key hashes: the configuration's result-changing fields, the data, the strategy's resolved
    options, the base model, the CPU thread count (`threads`; None on a GPU) and (only where they differ from
    the defaults, so that default runs keep their keys) the stream's options, a stream file's content, the task
    order, encoders' files and a plug-in strategy's or stream's code (`plugin_source`)."""
    from cl_bench.models.pretrained import is_model_dir
    from cl_bench.run.base import checkpoint_key

    data = stable_hash([(t.name, len(t.train), len(t.val), column(t.test, "prompt"), column(t.test, "answer"))
                        for t in stream.tasks])
    ident = {"clbench": __version__, "config": config.identity(), "data": data,
             "strategy_options": keyed_options(strategy.config),
             "base": base.info.get("key"), "base_path": base.info.get("path")}
    if stream.mixed and config.eval_split == "test":  # the mixed-modality probes' scores are in the result
        ident["mixed"] = stable_hash([(p.name, p.modality, column(p.test, "prompt"), column(p.test, "answer"))
                                      for p in stream.mixed])
    if threads is not None:  # float sums on the CPU differ across thread counts
        ident["threads"] = threads
    # A plug-in's code and version: another release or an edit of it is another run (clbench's own are keyed by
    # its version above, and its files by shared.code_fingerprint where row 0 and fits are stored)
    for what, obj in (("strategy", strategy), ("stream", stream_obj)):
        source = plugin_source(type(obj).__module__)
        if source is not None:
            ident[f"{what}_source"] = source
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


def keyed_options(config) -> dict:
    """A strategy's resolved options as the run key holds them: every option, except that one whose field says
    ``metadata={"keyed": "changed"}`` (an option added later, whose default is the behaviour from before it) is
    left out at its default, so that the runs made before it keep their keys."""
    out = dataclasses.asdict(config)
    for f in dataclasses.fields(config):
        if f.metadata.get("keyed") == "changed" and out[f.name] == f.default:
            del out[f.name]
    return out


def plugin_source(module: str) -> dict | None:
    """Where the code of module `module` comes from, for the run key: None for clbench's own (its core and its
    built-in strategies and streams, cl_bench.*); for a plug-in, its top-level module's distribution and version
    (None where no installed distribution provides it, e.g. a module registered at run time) and a hash of its
    files (`source_files`)."""
    top = module.split(".")[0]
    return None if top == "cl_bench" else _package_source(top)


@functools.cache  # per process: the code a process runs is the code it imported
def _package_source(top: str) -> dict:
    dists = _distributions(top)
    return {"module": top, "distribution": ", ".join(d.metadata["Name"] for d in dists) or None,
            "version": ", ".join(d.version for d in dists) or None, "files": source_files(top)}


def source_files(top: str) -> str | None:
    """A hash of the Python files of top-level module or package `top`: a package's every .py file under its
    folder(s), by relative path and content; a single module's file. None where it has no file (__main__ of
    `python -c`, a built-in module)."""
    import importlib.util

    mod = sys.modules.get(top)
    spec = getattr(mod, "__spec__", None) if mod is not None else importlib.util.find_spec(top)
    folders = list(getattr(mod, "__path__", None) or (spec.submodule_search_locations if spec else None) or [])
    if folders:  # a package (a namespace package may have several folders)
        files = sorted((f.relative_to(root).as_posix(), f) for root in map(Path, folders) for f in root.rglob("*.py"))
    else:
        origin = getattr(mod, "__file__", None) or (spec.origin if spec else None)
        if not origin or not Path(origin).is_file():
            return None
        files = [(Path(origin).name, Path(origin))]
    h = hashlib.sha256()
    for rel, f in files:
        data = f.read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]


def _distributions(top: str) -> list:
    """The installed distributions providing top-level module `top`: those that declare it (top_level.txt) or
    point a clbench entry point into it, else those whose file list holds it (slower: every RECORD is read)."""
    from importlib import metadata

    found = {}
    for d in metadata.distributions():
        name = d.metadata["Name"]
        declared = (d.read_text("top_level.txt") or "").split()
        if name and (top in declared or any(ep.group.startswith("clbench.") and ep.module.split(".")[0] == top
                                            for ep in d.entry_points)):
            found.setdefault(name, d)  # a distribution seen twice on sys.path counts once
    if not found:
        for name in metadata.packages_distributions().get(top, []):
            found.setdefault(name, metadata.distribution(name))
    return [found[n] for n in sorted(found)]


def model_name(config) -> str:
    """The base model's short name: the preset, or the checkpoint directory's name."""
    return config.model if config.model in PRESETS else Path(config.model).name


def result_path(config, stream_name: str, key: str) -> Path:
    """results_dir/runs/<stream>/<strategy>/<model>-seed<N>-<key[:8]>.json"""
    return (Path(config.results_dir) / "runs" / stream_name / config.strategy
            / f"{model_name(config)}-seed{config.seed}-{key[:8]}.json")
