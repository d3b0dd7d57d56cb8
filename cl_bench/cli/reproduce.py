"""`clbench reproduce RESULT.json`: rerun a result file and say whether it came out the same."""

from __future__ import annotations

import sys
import tempfile

import click

from cl_bench.cli import options as opt


@click.command()
@click.argument("result", type=click.Path(exists=True, dir_okay=False))
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              help="where the rerun's file goes [default: a temporary directory, removed afterwards]")
@opt.cache_dir()
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads [default: the file's own count; results are bit-identical only at it]")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def reproduce(result, results_dir, cache_dir, threads, quiet) -> None:
    """Run RESULT.json's configuration again and compare: bit-identical, or the ACC difference in units of the
    seed-to-seed spread of the published files beside it (same configuration, other seeds). Exits 1 when the
    rerun is outside that spread (more than 2 standard deviations away).

    \b
    Example:
      clbench reproduce results/runs/vision-audio/full-ft/mixtral-tiny-seed0-*.json
    """
    from cl_bench.engines.reproduce import describe
    from cl_bench.engines.reproduce import reproduce as rerun

    with tempfile.TemporaryDirectory(prefix="clbench-reproduce-") as tmp:
        verdict = rerun(result, results_dir or tmp, cache_dir, threads, progress=not quiet)
    click.echo(describe(verdict))
    if not verdict["within_spread"]:
        sys.exit(1)


COMMANDS = (reproduce,)
