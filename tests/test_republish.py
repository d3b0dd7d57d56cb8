"""results/republish.sh, the republish's commands: run with stand-ins for clbench and python that record each
command line, every recorded clbench command must parse as that command does, with the results folder and the
thread count on every sweep, and the strategies and options it names must exist."""

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from cl_bench import registry
from cl_bench.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _recorder(path: Path, log: Path) -> None:
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"with open({str(log)!r}, 'a') as f:\n"
                    "    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + '\\n')\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_the_republish_script_runs_its_commands_with_one_results_folder_and_thread_count(tmp_path):
    bin_dir, log = tmp_path / "bin", tmp_path / "commands.jsonl"
    bin_dir.mkdir()
    for name in ("clbench", "python"):
        _recorder(bin_dir / name, log)
    results, pages = tmp_path / "results", tmp_path / "pages"
    (pages / "docs").mkdir(parents=True)
    results.mkdir()
    for page in (pages / "docs" / "leaderboard.md", pages / "README.md", results / "README.md"):
        page.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RESULTS": str(results),
           "PAGES": str(pages)}
    done = subprocess.run(["bash", str(ROOT / "results" / "republish.sh")], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    commands = [json.loads(line) for line in log.read_text().splitlines()]
    sweeps = [c[2:] for c in commands if c[:2] == ["clbench", "sweep"]]
    assert len(sweeps) >= 10
    for args in sweeps:
        assert args[:4] == ["--results-dir", str(results), "--threads", "2"], args
        ctx = main.commands["sweep"].make_context("clbench sweep", list(args))  # the options parse as given
        names = ctx.params["strategies"].split(",")
        assert names == ["all"] or all(registry.strategies.entry(n) for n in names)
        for setting in ctx.params.get("sets") or ():
            key = setting.split("=")[0].replace("-", "_")
            assert any(key in {f.name for f in dataclasses.fields(registry.strategies.get(n).Config)}
                       for n in names), setting
    benches = [c for c in commands if c[0] == "python"]
    assert [c[1] for c in benches] == ["bench/ablations.py", "bench/mmer.py"]
    for c in benches:  # each writes its table into docs/strategies.md and its findings there and into the README
        assert [c[i + 1] for i, x in enumerate(c) if x == "--page"] == [f"{pages}/docs/strategies.md",
                                                                        f"{pages}/README.md"], c
    last = commands[-1]
    assert last[:2] == ["clbench", "publish"] and last.count("--page") == 3
    main.commands["publish"].make_context("clbench publish", list(last[2:]))
