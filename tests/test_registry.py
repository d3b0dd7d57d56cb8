import subprocess
import sys
import textwrap

import pytest

from cl_bench import registry
from cl_bench.registry import Registry, RegistryError


def test_builtins_are_registered_as_entry_points():
    entries = registry.strategies.entries()
    assert {"full-ft", "align-only"} <= set(entries)
    assert entries["full-ft"].origin == "package clbench"
    assert "vision-audio" in registry.streams.entries()


def test_unknown_name_suggests_close_match():
    with pytest.raises(RegistryError, match=r"unknown strategy 'ful-ft'\. Did you mean 'full-ft'"):
        registry.strategies.get("ful-ft")


def test_duplicate_registration_names_both_origins():
    reg = Registry(registry.STRATEGY_GROUP, "strategy")
    with pytest.raises(RegistryError) as e:
        reg.register("full-ft", "mypkg.mod:Mine", origin="package mypkg")
    msg = str(e.value)
    assert "cl_bench.strategies.full_ft:FullFineTuning (package clbench)" in msg
    assert "mypkg.mod:Mine (package mypkg)" in msg


def test_bad_targets_give_clear_errors():
    reg = Registry("clbench.test-empty-group", "strategy")
    reg.register("nomod", "no_such_module_xyz:Thing")
    reg.register("noattr", "cl_bench.metrics:NoSuchThing")
    with pytest.raises(RegistryError, match="fails to import"):
        reg.get("nomod")
    with pytest.raises(RegistryError, match="has no attribute 'NoSuchThing'"):
        reg.get("noattr")


def test_third_party_entry_point_plugs_in(tmp_path, monkeypatch):
    """A package that declares an entry point is found without editing clbench."""
    pkg = tmp_path / "my_strats"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from cl_bench.strategy import Strategy

        class Mine(Strategy):
            """My own strategy, from another package."""

            def learn(self, experience):
                return {}
    '''))
    dist = tmp_path / "my_strats-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-strats\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[clbench.strategies]\nmine = my_strats:Mine\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry(registry.STRATEGY_GROUP, "strategy")
    entry = reg.entry("mine")
    assert entry.origin == "package my-strats"
    assert entry.summary() == "My own strategy, from another package."
    assert reg.get("mine").__name__ == "Mine"


def test_duplicate_entry_points_from_two_packages(tmp_path, monkeypatch):
    for name in ("pkga", "pkgb"):
        d = tmp_path / f"{name}-1.0.dist-info"
        d.mkdir()
        (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (d / "entry_points.txt").write_text(f"[clbench.streams]\nclash = {name}.mod:S\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RegistryError, match="registered twice") as e:
        Registry(registry.STREAM_GROUP, "stream").entries()
    assert "pkga.mod:S (package pkga)" in str(e.value) and "pkgb.mod:S (package pkgb)" in str(e.value)


def test_ls_imports_no_torch():
    code = ("import sys; from click.testing import CliRunner; from cl_bench.cli import main; "
            "r = CliRunner().invoke(main, ['ls']); assert r.exit_code == 0, r.output; print(r.output); "
            "assert 'torch' not in sys.modules, 'ls imported torch'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "full-ft" in out.stdout and "align-only" in out.stdout and "vision-audio" in out.stdout


def test_ls_verbose_shows_each_strategys_declaration():
    from click.testing import CliRunner

    from cl_bench.cli import main

    out = CliRunner().invoke(main, ["ls", "-v"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    mmer = lines[lines.index(next(l for l in lines if l.strip().startswith("mmer "))) + 1]
    assert "past validation items yes" in mmer and "LM chosen by modality at test yes" in mmer
    full = lines[lines.index(next(l for l in lines if l.strip().startswith("full-ft "))) + 1]
    assert "past training items no" in full and "budget equal" in full
    grid = lines[lines.index(next(l for l in lines if l.strip().startswith("full-ft "))) + 2]
    assert "tuning grid (clbench tune): lr in 1e-5, 3e-5, 1e-4, 3e-4, 1e-3" in grid
    assert any("-o router-init=... (default 'copy')" in l for l in lines)
