"""The base model as a benchmark artefact: `clbench base curve` (pre-training steps against validation accuracy),
`clbench base build` (pre-train and ship a preset's bases in the package) and `clbench base ls`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cl_bench.cli import options as opt


@click.group()
def base() -> None:
    """The shipped base models: list them, measure the pre-training curve, build them."""


@base.command(name="ls")
def ls_bases() -> None:
    """List the base models shipped in the package (preset, base seed, steps, text accuracy, sha256)."""
    from cl_bench.run.shipped import manifest

    entries = manifest()
    if not entries:
        click.echo("no shipped base models")
    for e in entries:
        click.echo(f"{e['name']:<24} preset {e['preset']}, base seed {e['pretrain']['seed']}, "
                   f"{e['pretrain']['steps']} steps: text train {e['text_train']:.3f}, val {e['text_val']:.3f}; "
                   f"{e.get('stored_dtype', 'float32')} weights sha256 {e['weights_sha256'][:12]}")


def _common(f):
    for deco in reversed((opt.stream(), opt.model(), opt.cache_dir(), opt.field_option(opt.RunConfig, "device"),
                          click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
                                       help="torch CPU threads (pre-training is bit-reproducible for a given "
                                            "count)"))):
        f = deco(f)
    return f


def _setup(stream, cache_dir, device, threads):
    from cl_bench.run import threads as th
    from cl_bench.run.device import resolve_device
    from cl_bench.streams import resolve

    th.apply(threads)
    dev = resolve_device(device)
    _, built = resolve.load(stream, {}, None, Path(cache_dir) if cache_dir else None, progress=False)
    return dev, built


@base.command()
@_common
@click.option("--step-counts", default="400,800,1600,3200", show_default=True,
              help="comma-separated pre-training lengths, each a whole run from the same initialisation")
@click.option("--base-seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="the curve's JSON file")
def curve(stream, model, cache_dir, device, threads, step_counts, base_seed, out) -> None:
    """Pre-training length against the text task's validation accuracy and loss (no test item is scored)."""
    from cl_bench.config import PretrainConfig
    from cl_bench.errors import UsageError
    from cl_bench.results import atomic_write_json
    from cl_bench.run.base import plateau, pretrain_curve

    try:
        counts = [int(s) for s in step_counts.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--step-counts {step_counts!r}: give whole numbers separated by commas, e.g. 400,800")
    dev, built = _setup(stream, cache_dir, device, threads)
    cfg = PretrainConfig(seed=base_seed)
    setting = {"preset": model, "stream": stream,
               "pretrain": {"batch_size": cfg.batch_size, "lr": cfg.lr, "seed": base_seed}, "threads": threads}
    path = Path(out)
    doc = json.loads(path.read_text()) if path.exists() else {}
    points = doc.get("points", []) if {k: doc.get(k) for k in setting} == setting else []
    done = {p["steps"] for p in points}
    if done:
        click.echo(f"{out}: {len(done)} length(s) measured before ({sorted(done)}); going on with the others")
    click.echo(f"pre-training {model} on {stream}'s text task at {counts} steps (batch {cfg.batch_size}, "
               f"lr {cfg.lr}, base seed {base_seed}, {threads} threads)")
    rule = ("the fewest steps within 0.01 of the best validation accuracy and 0.02 of the lowest validation loss")
    for steps in counts:
        if steps in done:
            continue
        points += pretrain_curve(model, built, [steps], cfg, dev, echo=click.echo)
        points.sort(key=lambda p: p["steps"])
        # written after every length: an interrupted curve goes on from there
        atomic_write_json(path, {**setting, "points": points, "plateau_steps": plateau(points), "rule": rule})
    click.echo(f"plateau: {plateau(points)} steps ({rule}); written to {out}")


@base.command()
@_common
@click.option("--base-seeds", default="0,1,2", show_default=True, help="comma-separated base seeds to build")
@opt.pretrain_steps()
@click.option("--into", type=click.Path(file_okay=False), default=None,
              help="directory to write the bases and manifest.json into (default: the package's cl_bench/bases)")
@click.option("--store", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="the weights' dtype on disk: bfloat16 halves a larger preset's files (the rounded weights are then "
                   "the base, their text accuracy measured on them)")
def build(stream, model, cache_dir, device, threads, base_seeds, pretrain_steps, into, store) -> None:
    """Pre-train the preset's base for each base seed and ship it: its files go to cl_bench/bases/<preset>-base<N>/
    and the sha256 of every file to cl_bench/bases/manifest.json. For maintainers: the shipped bases are what
    every run with the default pre-training starts from, on every machine."""
    from cl_bench.config import PretrainConfig
    from cl_bench.run.base import ship
    from cl_bench.run.shipped import BASES_DIR

    dev, built = _setup(stream, cache_dir, device, threads)
    target = Path(into) if into else BASES_DIR
    for seed in opt.seed_list(base_seeds):
        entry = ship(model, built, PretrainConfig(steps=pretrain_steps, seed=seed), dev, target, store=store)
        click.echo(f"{entry['name']}: text train {entry['text_train']:.3f}, val {entry['text_val']:.3f} after "
                   f"{entry['pretrain']['steps']} steps ({entry['pretrain_seconds']:.0f} s, {threads} threads); "
                   f"weights sha256 {entry['weights_sha256'][:12]} -> {target / entry['name']}")


COMMANDS = (base,)
