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
    reg.register("noattr", "cl_bench.analysis.metrics:NoSuchThing")
    with pytest.raises(RegistryError, match="fails to import"):
        reg.get("nomod")
    with pytest.raises(RegistryError, match="has no attribute 'NoSuchThing'"):
        reg.get("noattr")


def test_third_party_entry_point_plugs_in(tmp_path, monkeypatch):
    """A package that declares an entry point is found without editing clbench."""
    pkg = tmp_path / "my_strats"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from cl_bench.api.strategy import Strategy

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


def _dist(root, name: str, entry_points: str, version: str = "1.0") -> None:
    d = root / f"{name.replace('-', '_')}-{version}.dist-info"  # as installers name it: the name ends at the first '-'
    d.mkdir()
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (d / "entry_points.txt").write_text(entry_points)


def test_duplicate_entry_points_refuse_only_that_name(tmp_path, monkeypatch):
    for name in ("pkga", "pkgb"):
        _dist(tmp_path, name, f"[clbench.streams]\nclash = {name}.mod:S\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry(registry.STREAM_GROUP, "stream")
    assert "vision-audio" in reg.entries() and "clash" not in reg.entries()  # every other name works
    with pytest.raises(RegistryError, match="registered twice") as e:
        reg.entry("clash")
    assert "pkga.mod:S (package pkga)" in str(e.value) and "pkgb.mod:S (package pkgb)" in str(e.value)
    assert [x.origin for x in reg.clashes()["clash"]] == ["package pkga", "package pkgb"]


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Install plug-in packages (dist-info + modules) into a fresh path, visible to the global registries."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(name, entry_points, modules):
        for mod, text in modules.items():
            (tmp_path / f"{mod}.py").write_text(textwrap.dedent(text))
        _dist(tmp_path, name, entry_points)
        for reg in (registry.strategies, registry.streams, registry.modalities):
            reg._cache = None

    yield install
    for reg in (registry.strategies, registry.streams, registry.modalities):
        reg._cache = None


BAD_CONFIG = '''
from cl_bench import Strategy, Stream


class Bad(Strategy):
    """A strategy whose Config is not a dataclass."""

    class Config:
        lr = 0.1

    def learn(self, experience):
        return {}


class NoBuild(Stream):
    """A stream without build."""

    name = "no-build"
    tasks = {"vision": "image"}
'''


def test_ls_marks_broken_plugins_and_clashes_and_lists_the_rest(plugins):
    from click.testing import CliRunner

    from cl_bench.cli import main

    plugins("broken-strats", "[clbench.strategies]\nbroken = broken_strats:Mine\nfull-ft = broken_strats:Mine\n"
                             "no-module = not_installed_xyz:Thing\n",
            {"broken_strats": "def oops(:\n    pass\n"})
    plugins("bad-config", "[clbench.strategies]\nbad-config = bad_config:Bad\n[clbench.streams]\n"
                          "no-build = bad_config:NoBuild\n", {"bad_config": BAD_CONFIG})
    for args in (["ls"], ["ls", "-v"]):
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 0, out.output
        lines = out.output.splitlines()
        line = next(l for l in lines if l.strip().startswith("broken "))
        assert "BROKEN: syntax error in" in line and "broken_strats.py, line 1" in line
        assert "[package broken-strats]" in line
        assert "BROKEN: module 'not_installed_xyz' is not installed" in next(l for l in lines if "no-module" in l)
        full_ft = [l for l in lines if l.strip().startswith("full-ft ")]  # the built-in, then the refused plug-in
        assert "REFUSED" not in full_ft[0] and "[package" not in full_ft[0]
        assert "REFUSED: strategy 'full-ft' from broken-strats 1.0 clashes with clbench's built-in" in full_ft[-1]
        assert any(l.strip().startswith("align-only ") for l in lines)  # the rest is listed
        assert any(l.strip().startswith("vision-audio ") for l in lines)
        assert "cannot be used (marked above)" in out.output
    # -v loads each entry: a Config that is not a dataclass and a stream without build are named, and ls goes on
    assert "not a dataclass; decorate it" in out.output and "does not implement build" in out.output
    assert "-s train-speakers=..." in out.output and "tubelets (default)" in out.output


def test_a_plugin_reusing_a_builtins_name_is_refused_alone(plugins):
    from cl_bench.strategies.full_ft import FullFineTuning

    plugins("my-plugin", "[clbench.strategies]\nfull-ft = my_plugin:Mine\nmine = my_plugin:Mine\n",
            {"my_plugin": "class Mine:\n    pass\n"})
    entry = registry.strategies.entry("full-ft")  # the built-in keeps its name
    assert (entry.dist, entry.target) == ("clbench", "cl_bench.strategies.full_ft:FullFineTuning")
    assert registry.strategies.get("full-ft") is FullFineTuning
    assert registry.strategies.get("mine").__module__ == "my_plugin"  # the plug-in's other names work
    assert "full-ft" not in registry.strategies.clashes()
    (refused,) = registry.strategies.refused()["full-ft"]
    assert (refused.dist, refused.target) == ("my-plugin", "my_plugin:Mine")
    assert registry.strategies.refusal(refused) == ("strategy 'full-ft' from my-plugin 1.0 clashes with clbench's "
                                                    "built-in 'full-ft'; rename it in your entry points")


def test_plugins_clashing_with_each_other_are_both_refused_and_named(plugins):
    from click.testing import CliRunner

    from cl_bench.cli import main

    for name in ("twin-a", "twin-b"):
        mod = name.replace("-", "_")
        plugins(name, f"[clbench.strategies]\ntwin = {mod}:T\n[clbench.streams]\nvision-audio = {mod}:S\n",
                {mod: "class T:\n    pass\n"})
    assert "twin" not in registry.strategies.entries()
    assert [e.dist for e in registry.strategies.clashes()["twin"]] == ["twin-a", "twin-b"]
    with pytest.raises(RegistryError, match=r"strategy 'twin' is registered twice: twin_a:T \(package twin-a\) and "
                                            r"twin_b:T \(package twin-b\); it is refused until one of them is renamed"):
        registry.strategies.entry("twin")
    # two plug-ins reusing a built-in's name: both refused, each named; the built-in keeps it
    assert registry.streams.entry("vision-audio").dist == "clbench"
    assert [e.dist for e in registry.streams.refused()["vision-audio"]] == ["twin-a", "twin-b"]
    out = CliRunner().invoke(main, ["run", "--strategy", "twin"])
    assert out.exit_code == 1 and "strategy 'twin' is registered twice" in out.output
    assert "Traceback" not in out.output


def test_ls_marks_refused_entries_in_one_line_and_v_says_where_they_point(plugins):
    from click.testing import CliRunner

    from cl_bench.cli import main

    plugins("my-plugin", "[clbench.strategies]\nlora = my_plugin:Lora\n", {"my_plugin": "class Lora:\n    pass\n"})
    for name in ("twin-a", "twin-b"):
        plugins(name, f"[clbench.strategies]\ntwin = {name.replace('-', '_')}:T\n", {})
    out = CliRunner().invoke(main, ["ls"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    lora = [l for l in lines if l.strip().startswith("lora ")]
    assert len(lora) == 2 and "LoRA" in lora[0] and "REFUSED" not in lora[0]  # the built-in, listed as usual
    assert lora[1].split(None, 1)[1] == ("REFUSED: strategy 'lora' from my-plugin 1.0 clashes with clbench's built-in "
                                         "'lora'; rename it in your entry points  [package my-plugin]")
    twin = next(l for l in lines if l.strip().startswith("twin "))
    assert "REFUSED: registered by twin-a 1.0 and twin-b 1.0" in twin
    assert "points at" not in out.output  # the full detail is -v's
    assert "2 registered entries cannot be used (marked above); the others work." in out.output
    out = CliRunner().invoke(main, ["ls", "-v"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    refused = next(i for i, l in enumerate(lines) if "REFUSED: strategy 'lora' from my-plugin" in l)
    assert lines[refused + 1].strip() == "points at my_plugin:Lora (package my-plugin)"
    twin = next(i for i, l in enumerate(lines) if l.strip().startswith("twin "))
    assert [l.strip() for l in lines[twin + 1:twin + 3]] == ["points at twin_a:T (package twin-a)",
                                                              "points at twin_b:T (package twin-b)"]


def test_a_plugin_failing_at_import_is_named_with_its_package(plugins):
    plugins("raising", "[clbench.strategies]\nraising = raising_mod:X\n", {"raising_mod": "raise RuntimeError('boom')\n"})
    with pytest.raises(RegistryError, match=r"'raising' \(package raising\) points at module 'raising_mod', which "
                                            r"fails to import: RuntimeError: boom; fix or uninstall raising"):
        registry.strategies.get("raising")
    assert registry.strategies.entry("raising").record() == {"name": "raising", "target": "raising_mod:X",
                                                             "distribution": "raising", "version": "1.0"}


def test_ls_imports_no_torch():
    code = ("import sys; from click.testing import CliRunner; from cl_bench.cli import main; "
            "r = CliRunner().invoke(main, ['ls']); assert r.exit_code == 0, r.output; print(r.output); "
            "assert 'torch' not in sys.modules, 'ls imported torch'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
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
    declared = registry.strategies.get("full-ft").tuning
    assert "tuning grid (clbench tune): " + "; ".join(f"{k.replace('_', '-')} in {', '.join(v)}"
                                                        for k, v in declared.items()) in grid
    assert any("-o router-init=... (default 'copy')" in l for l in lines)
