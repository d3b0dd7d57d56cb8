"""bench/gpu_check.sh in CPU mode: the same path as on a GPU (random mid-size Mixtral saved as a checkpoint, the
plan, the run, the leaderboard's metrics on the device) with a tiny budget, and its one table."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("device", "model", "dtype", "budget", "steps/s", "planned peak", "measured peak", "measured/planned", "ACC")


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_prints_its_table():
    env = {**os.environ, "CLBENCH_GPU_CHECK_DEVICE": "cpu", "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(ROOT / "bench/gpu_check.sh"), "--threads", "1"], capture_output=True,
                         check=False, text=True, env=env, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    table = dict(re.match(r"(\S+(?: \S+)?)\s{2,}(.*)", ln).groups() for ln in lines[-len(KEYS):])
    assert tuple(table) == KEYS
    assert table["device"].startswith("cpu") and table["dtype"] == "float32"
    assert table["model"].startswith("mixtral-medium shape, random weights, ")
    assert table["budget"] == "2 steps x 8 per stage, 2 stages, 16 test items per task"
    assert float(table["steps/s"].split()[0]) > 0
    # the plan from `clbench plan` and the one the run recorded agree
    planned = re.fullmatch(r"(.+) \(clbench plan; the run's recorded plan (.+)\)", table["planned peak"])
    assert planned and planned.group(1) == planned.group(2)
    assert "process max RSS" in table["measured peak"] and table["measured/planned"].startswith("n/a")
    # ACC as the run computed it and as the leaderboard recomputes it on the device: the same number
    acc = re.fullmatch(r"([\d.]+) \(run\), ([\d.]+) \(leaderboard metrics on cpu\)", table["ACC"])
    assert acc and acc.group(1) == acc.group(2) and 0.0 <= float(acc.group(1)) <= 1.0


def test_gpu_mode_without_a_gpu_says_how_to_check_on_the_cpu(monkeypatch):
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    monkeypatch.delenv(gpu_check.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="pass --cpu"):
        gpu_check.main([])
