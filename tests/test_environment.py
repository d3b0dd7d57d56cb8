"""What the machine does wrong: unknown devices, directories that cannot be written, a full disk, what killed
processes left behind, and a run that diverges after a finished stage. Each gets one line naming the problem
and the fix; nothing false is written and nothing finished is lost."""

import errno
import json
import os
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cl_bench import registry
from cl_bench.cli import main
from cl_bench.results import STALE_SECONDS, atomic_write_text

TINY = ["--steps", "2", "--batch-size", "4", "--pretrain-steps", "5", "--eval-limit", "16", "-q", "--device", "cpu"]
SMALL = ["--stream", "small-numbers", *TINY]  # the session's small stream (conftest's `small` fixture)
FIXTURES = Path(__file__).parent / "fixtures" / "results"


def one_line_error(out, code: int = 1) -> str:
    assert out.exit_code == code, out.output
    assert "Traceback" not in out.output and out.output.count("Error:") == 1, out.output
    return out.output


@pytest.mark.parametrize("command", [["run", "-q"], ["leaderboard", "--results-dir", str(FIXTURES)],
                                     ["plot", "--results-dir", str(FIXTURES)], ["compare", "full-ft", "mmer"],
                                     ["publish"], ["tune", "--strategies", "full-ft"]])
def test_an_unknown_device_is_a_usage_error(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where run, publish and tune would write by default
    out = CliRunner().invoke(main, [*command, "--device", "tpu"])
    assert "Invalid value for '--device': 'tpu' is not a device; use auto, cpu, cuda or cuda:N" in \
        one_line_error(out, 2)
    assert list(tmp_path.iterdir()) == []


def test_the_device_forms(monkeypatch):
    import torch

    from cl_bench.config import device_problem
    from cl_bench.run.runner import RunConfig
    from cl_bench.run.device import resolve_device

    assert [device_problem(d) for d in ("auto", "cpu", "cuda", "cuda:1")] == [None] * 4
    assert all(device_problem(d) for d in ("tpu", "cuda:", "cuda:x", "gpu", "CPU"))
    with pytest.raises(ValueError, match="RunConfig.device: 'mps0' is not a device"):
        RunConfig(device="mps0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"--device cuda:2 was asked for, but torch sees 2 GPU\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="torch sees no CUDA GPU; use --device auto or cpu"):
        resolve_device("cuda")


def test_an_unwritable_results_directory_is_said_before_the_run(tmp_path, monkeypatch):
    """Before the data are built or the base model pre-trained (the cache stays empty)."""
    cache = tmp_path / "cache"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = CliRunner().invoke(main, ["run", *TINY, "--cache-dir", str(cache), "--results-dir", str(blocker / "res")])
    assert f"results directory {blocker / 'res'}: Not a directory; choose another with --results-dir" in \
        one_line_error(out)
    res = tmp_path / "res"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p).startswith(str(res)) else
                        real_access(p, mode, **kw))  # a directory of another user's (the suite may run as root)
    out = CliRunner().invoke(main, ["run", *TINY, "--cache-dir", str(cache), "--results-dir", str(res)])
    assert f"results directory {res} cannot be written; make it writable or choose another with --results-dir" in \
        one_line_error(out)
    assert not cache.exists() and not list(res.rglob("*.json"))


def test_an_unwritable_cache_gets_one_line_naming_it(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = CliRunner().invoke(main, ["run", *TINY, "--cache-dir", str(blocker / "cache"),
                                    "--results-dir", str(tmp_path / "res")])
    assert f"{blocker / 'cache'}" in (text := one_line_error(out)) and "Not a directory" in text
    cache = tmp_path / "cache"
    real_mkdir = Path.mkdir

    def refuse(self, *a, **kw):
        if str(self).startswith(str(cache)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", refuse)
    out = CliRunner().invoke(main, ["run", *TINY, "--cache-dir", str(cache), "--results-dir", str(tmp_path / "res")])
    text = one_line_error(out)
    assert f"{cache}" in text and "Permission denied; make it writable (or readable), or choose another directory" \
        in text
    assert not list((tmp_path / "res").rglob("*.json"))


def _leftovers(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]


@pytest.mark.slow
def test_a_full_disk_loses_nothing_and_writes_nothing_false(tmp_path, cache_dir, small, monkeypatch):
    """The disk fills while the result is written: one line saying so, no result and no temporary file; the
    finished stages stay saved, so the same command on a freed disk resumes them and completes."""
    res = tmp_path / "res"
    real_fsync = os.fsync

    def full_for_results(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(res)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_for_results)
    args = ["run", *SMALL, "--cache-dir", str(cache_dir), "--results-dir", str(res), "--seed", "11"]
    out = CliRunner().invoke(main, args)
    assert "No space left on device; free some disk space, or choose a directory on another disk" in \
        one_line_error(out)
    assert not list(res.rglob("*.json")) and _leftovers(res) == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert "holds every stage; writing its result" in out.output  # both stages were saved: only the result is written
    (f,) = res.rglob("*.json")
    assert json.loads(f.read_text())["status"] == "complete"


@pytest.mark.slow
def test_a_full_disk_while_saving_a_stage_keeps_the_stages_before(tmp_path, cache_dir, small, monkeypatch):
    res = tmp_path / "res"
    real_fsync, saves = os.fsync, []

    def full_at_stage_2(fd):  # each evaluation saves a checkpoint and a state.json into the cache's runs/
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(cache_dir / "runs")):
            saves.append(fd)
            if len(saves) > 4:  # the base's and stage 1's are saved, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_at_stage_2)
    args = ["run", *SMALL, "--cache-dir", str(cache_dir), "--results-dir", str(res), "--seed", "12"]
    assert "free some disk space" in one_line_error(CliRunner().invoke(main, args))
    assert not list(res.rglob("*.json"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0 and "resuming after stage 1 of 2" in out.output, out.output
    assert len(saves) == 5 and _leftovers(res, cache_dir / "runs") == []


def _aged(path: Path, is_dir: bool = False) -> Path:
    path.mkdir(parents=True) if is_dir else (path.parent.mkdir(parents=True, exist_ok=True), path.write_text("x"))
    old = time.time() - STALE_SECONDS - 60
    os.utime(path, (old, old))
    return path


@pytest.mark.slow
def test_what_killed_processes_left_is_removed_and_live_work_is_not(tmp_path, cache_dir, small, monkeypatch):
    speech = tmp_path / "tmp"
    speech.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(speech))
    res = tmp_path / "res"
    runs = res / "runs" / "small-numbers" / "full-ft"
    stale = [_aged(runs / ".other-seed3-0123abcd.json.x1y2.tmp"), _aged(speech / "clbench-speech-abc", True),
             _aged(cache_dir / "models" / "mixtral-tiny-0123.tmp-k9", True),
             _aged(cache_dir / "data" / "numbers" / "audio-0123.tmp-k9", True)]
    live = [runs / ".other-seed4-0123abcd.json.x1y2.tmp", speech / "clbench-speech-def",
            cache_dir / "models" / "mixtral-tiny-0123.tmp-z1"]
    live[0].write_text("x"), live[1].mkdir(), live[2].mkdir()
    out = CliRunner().invoke(main, ["run", *SMALL, "--cache-dir", str(cache_dir), "--results-dir", str(res),
                                    "--seed", "13"])
    assert out.exit_code == 0, out.output
    assert [p.exists() for p in stale] == [False] * 4 and [p.exists() for p in live] == [True] * 3
    for p in live[1:]:
        p.rmdir()


def test_an_atomic_write_removes_killed_writers_copies_of_its_file(tmp_path):
    """The leaderboard, the generated docs pages and figures are rewritten in place: a killed writer's copy goes on
    the next write."""
    old = _aged(tmp_path / ".leaderboard.md.abc123.tmp")
    fresh = tmp_path / ".leaderboard.md.def456.tmp"  # another writer's, still being written
    fresh.write_text("x")
    other = _aged(tmp_path / ".strategies.md.abc123.tmp")  # another file's: its own writer sweeps it
    atomic_write_text(tmp_path / "leaderboard.md", "# board\n")
    assert (tmp_path / "leaderboard.md").read_text() == "# board\n"
    assert not old.exists() and fresh.exists() and other.exists()


@pytest.fixture
def audio_lr():
    registry.strategies.register("audio-lr", "helpers_strategies:AudioLr", origin="tests")
    yield
    registry.strategies.unregister("audio-lr")


@pytest.mark.slow
def test_a_run_diverging_after_a_finished_stage_keeps_it(tmp_path, cache_dir, small, audio_lr):
    """Stage 2 diverges: the same command resumes stage 1's saved state and stops the same way (nothing is
    trained twice, nothing written); with the option set back the run completes."""
    res = tmp_path / "res"
    common = ["run", "--strategy", "audio-lr", *SMALL, "--cache-dir", str(cache_dir), "--results-dir", str(res)]
    message = "strategy 'audio-lr' diverged in stage 2 (audio)"
    first = one_line_error(CliRunner().invoke(main, [*common, "-o", "audio-lr=1e38"]))
    assert message in first and "likely cause: audio-lr=1e+38 (default 3e-05)" in first
    assert "No result file was written (finished stages stay resumable)" in first
    again = CliRunner().invoke(main, [*common, "-o", "audio-lr=1e38"])
    assert message in one_line_error(again) and "resuming after stage 1 of 2" in again.output
    assert not list(res.rglob("*.json"))
    out = CliRunner().invoke(main, [*common, "-o", "audio-lr=1e-4"])
    assert out.exit_code == 0, out.output
    (f,) = res.rglob("*.json")
    doc = json.loads(f.read_text())
    assert doc["status"] == "complete" and doc["config"]["strategy_options"]["audio_lr"] == 1e-4
