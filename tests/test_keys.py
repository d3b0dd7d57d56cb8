"""Run keys that see a plug-in's code: its distribution, version and files are keyed; clbench's own built-ins are
keyed as before (by clbench's version), so that their runs keep their keys."""

import importlib
import sys
import textwrap
from types import SimpleNamespace

import pytest

from cl_bench import registry
from cl_bench.run import keys
from cl_bench.run.config import RunConfig
from cl_bench.streams.data import stable_hash

STRATEGY = '''
from cl_bench import Strategy


class Mine(Strategy):
    """A plug-in strategy."""

    def learn(self, experience):
        return {"lr": LR}
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """install(files, version): a plug-in package "kplug" (files: relative path -> text) with a distribution
    "kplug-dist" of `version`, importable; returns the imported kplug.strat module."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(files: dict, version: str = "1.0"):
        for rel, text in files.items():
            (tmp_path / "kplug" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "kplug" / rel).write_text(textwrap.dedent(text))
        dist = tmp_path / "kplug_dist-1.0.dist-info"
        dist.mkdir(exist_ok=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: kplug-dist\nVersion: {version}\n")
        (dist / "top_level.txt").write_text("kplug\n")
        for name in [m for m in sys.modules if m == "kplug" or m.startswith("kplug.")]:
            del sys.modules[name]
        keys._package_source.cache_clear()  # a new process, as far as the key is concerned
        importlib.invalidate_caches()
        import kplug.strat

        return kplug.strat

    yield install
    for name in [m for m in sys.modules if m == "kplug" or m.startswith("kplug.")]:
        del sys.modules[name]
    keys._package_source.cache_clear()


def identity(strategy, tmp_path, stream_obj=None):
    """keys.identity of `strategy` on vision-audio (unbuilt: no data, a stand-in base)."""
    from cl_bench.task_streams.vision_audio import VisionAudio

    stream_obj = stream_obj or VisionAudio()
    stream = SimpleNamespace(tasks=(), mixed=(), order=tuple(type(stream_obj).tasks))
    base = SimpleNamespace(info={"key": "base", "path": None})
    return keys.identity(RunConfig(), strategy, stream_obj, stream, base, tmp_path, threads=1)


def test_a_plugins_code_and_version_are_in_its_run_key(plugin, tmp_path):
    files = {"__init__.py": "", "strat.py": STRATEGY.replace("LR", "1e-3"), "util/helpers.py": "X = 1\n"}
    mod = plugin(files)
    first = identity(mod.Mine(), tmp_path)
    source = first["strategy_source"]
    assert source["module"] == "kplug" and source["distribution"] == "kplug-dist" and source["version"] == "1.0"
    assert len(source["files"]) == 16 and "stream_source" not in first  # vision-audio is a built-in
    assert identity(mod.Mine(), tmp_path) == first  # the same code: the same key

    changed = plugin({**files, "strat.py": STRATEGY.replace("LR", "1e-4")})
    assert stable_hash(identity(changed.Mine(), tmp_path)) != stable_hash(first)
    # any file of the package counts, not only the class's module
    helper = plugin({**files, "util/helpers.py": "X = 2\n"})
    assert identity(helper.Mine(), tmp_path)["strategy_source"]["files"] != source["files"]
    # another release of the same files is another run too
    released = plugin(files, version="1.1")
    again = identity(released.Mine(), tmp_path)
    assert again["strategy_source"] == {**source, "version": "1.1"} and stable_hash(again) != stable_hash(first)


def test_the_source_is_hashed_once_per_process(plugin, tmp_path):
    files = {"__init__.py": "", "strat.py": STRATEGY.replace("LR", "1e-3")}
    mod = plugin(files)
    first = identity(mod.Mine(), tmp_path)["strategy_source"]
    (tmp_path / "kplug" / "strat.py").write_text("# edited after import\n")
    # the process runs the code it imported: its key does not move under it
    assert identity(mod.Mine(), tmp_path)["strategy_source"] == first


def test_a_single_module_plugin_stream_is_keyed_by_its_file(tmp_path, monkeypatch):
    from cl_bench import Stream

    monkeypatch.syspath_prepend(str(tmp_path))
    text = 'from cl_bench import Stream\n\n\nclass S(Stream):\n    name = "s"\n    tasks = {"vision": "image"}\n'
    (tmp_path / "kplug_single.py").write_text(text)
    keys._package_source.cache_clear()
    try:
        import kplug_single

        assert issubclass(kplug_single.S, Stream)
        full_ft = registry.strategies.get("full-ft")()
        source = identity(full_ft, tmp_path, stream_obj=kplug_single.S())["stream_source"]
        # no installed distribution provides a module registered at run time: its files alone are keyed
        assert source["module"] == "kplug_single" and source["distribution"] is None and source["version"] is None
        assert source["files"] == keys.source_files("kplug_single")
        (tmp_path / "kplug_single.py").write_text(text + "# changed\n")
        assert keys.source_files("kplug_single") != source["files"]
    finally:
        sys.modules.pop("kplug_single", None)
        keys._package_source.cache_clear()


@pytest.mark.parametrize("name", ["full-ft", "lora"])
def test_builtin_runs_keep_their_keys(name, tmp_path):
    """Built-ins are clbench's own code (keyed by its version): the identity holds what it held before."""
    strategy = registry.strategies.get(name)()
    ident = identity(strategy, tmp_path)
    assert set(ident) == {"clbench", "config", "data", "strategy_options", "base", "base_path", "threads"}
    assert keys.plugin_source(type(strategy).__module__) is None
    assert keys.plugin_source("cl_bench.task_streams.vision_audio") is None
