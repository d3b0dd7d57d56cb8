"""The house's floors: no import runs back up, no circle, the core never imports a built-in plug-in, and the
core runs with the edges (reporting, engines, cli) missing."""

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "cl_bench"


def test_import_contracts_hold():
    """pyproject.toml's import-linter contracts: the floors as layers, and no circle inside any package."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "lint-imports (import-linter, a test extra) is not installed"
    out = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in out.stdout


def built_in_imports(source: str) -> list[str]:
    """Every import of cl_bench.strategies or cl_bench.task_streams in `source`, at any depth (function-level
    imports included): import-linter cannot see these packages, which live outside cl_bench/ on disk."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found += [f"line {node.lineno}: {n}" for n in names
                  if n.split(".")[:2] in (["cl_bench", "strategies"], ["cl_bench", "task_streams"])]
    return sorted(set(found))


def test_the_check_finds_a_function_level_import_of_a_built_in():
    source = textwrap.dedent("""
        import os
        def f():
            from cl_bench.strategies.moextend import surgery
            import cl_bench.task_streams.vision_audio
        from cl_bench import strategies
    """)
    assert built_in_imports(source) == ["line 4: cl_bench.strategies.moextend",
                                        "line 4: cl_bench.strategies.moextend.surgery",
                                        "line 5: cl_bench.task_streams.vision_audio", "line 6: cl_bench.strategies"]


def test_the_core_never_imports_a_built_in_plug_in():
    """The core reaches built-in strategies and streams only through the registry's entry points."""
    offenders = {str(f.relative_to(ROOT)): hits for f in sorted(CORE.rglob("*.py"))
                 if (hits := built_in_imports(f.read_text()))}
    assert offenders == {}


@pytest.mark.slow
def test_the_core_runs_without_reporting_engines_and_cli(tmp_path, cache_dir, small):
    """A run, start to result file, in a process where importing cl_bench.reporting, .engines or .cli fails."""
    script = textwrap.dedent(f"""
        import sys
        for edge in ("cl_bench.reporting", "cl_bench.engines", "cl_bench.cli"):
            sys.modules[edge] = None  # importing it, or anything under it, now raises ImportError
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from cl_bench import registry
        from cl_bench.config import Budget
        from cl_bench.models.lm import PretrainConfig
        from cl_bench.run.runner import RunConfig, run

        registry.streams.register("small-numbers", "helpers_streams:SmallNumbers", origin="tests")
        doc, path = run(RunConfig(stream="small-numbers", strategy="align-only", device="cpu",
                                  budget=Budget(steps=1, batch_size=8), pretrain=PretrainConfig(steps=20),
                                  eval_limit=4, results_dir={str(tmp_path / "results")!r},
                                  cache_dir={str(cache_dir)!r}), progress=False)
        print(doc["status"], len(doc["accuracy_matrix"]))
        print(sorted(m for m in sys.modules if m.startswith(("cl_bench.reporting", "cl_bench.engines",
                                                              "cl_bench.cli")) and sys.modules[m] is not None))
    """)
    env = {**os.environ, "CLBENCH_SHARED_CACHE": "0"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[:2] == ["complete 3", "[]"]


def test_blocking_an_edge_is_seen(tmp_path):
    """The blocking above is real: a module that imports an edge fails to import when the edge is blocked."""
    script = ("import sys; sys.modules['cl_bench.reporting'] = None\n"
              "import cl_bench.reporting.leaderboard")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 1 and "ModuleNotFoundError" in out.stderr


@pytest.mark.parametrize("package", ["strategies", "task_streams"])
def test_built_ins_import_only_public_and_api_names(package):
    """Built-in plug-ins stay plug-ins: they import nothing from the core's command line, engines or reporting."""
    hits = []
    for f in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                    ("cl_bench.cli", "cl_bench.engines", "cl_bench.reporting", "cl_bench.run")):
                hits.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert hits == []
