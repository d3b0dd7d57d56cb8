"""The plug-in template (examples/plugin-template): installed as a plug-in author would, then listed,
validated and run through the clbench command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here is an end-to-end run

TEMPLATE = Path(__file__).parent.parent / "examples" / "plugin-template"


def clbench(args, env, cwd, stdout_only=False):
    out = subprocess.run([sys.executable, "-c", "from cl_bench.cli import main; main()", *args], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=600)
    return out.returncode, (out.stdout if stdout_only and out.returncode == 0 else out.stdout + out.stderr)


def test_the_plugin_template_installs_lists_validates_and_runs(tmp_path, cache_dir):
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(TEMPLATE)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    rc, out = clbench(["ls", "-v"], env, tmp_path)
    assert rc == 0, out
    for line in ("last-layer", "Trains the projector and the LM's last decoder layer", "[package clbench-tally]",
                 "tally-numbers", "tasks: tally (tally)", "-s train-inputs=... (default 600)",
                 "a row of 32 cells with k tally marks", "windows (default) = clbench_tally.modality:TallyWindows"):
        assert line in out
    # the stream at the size the run below uses: its data is built once
    rc, out = clbench(["validate", "--stream", "tally-numbers", "-s", "train-inputs=200", "--cache-dir",
                       str(cache_dir)], env, tmp_path)
    assert rc == 0 and "stream tally-numbers: well formed" in out, out
    rc, out = clbench(["validate", "--strategy", "last-layer", "--stream", "tally-numbers", "-s", "train-inputs=200",
                       "--cache-dir", str(cache_dir)], env, tmp_path)
    assert rc == 0 and "last-layer: the contract holds" in out, out
    # the plan counts what the template's footprint says it trains, not a full fine-tuning
    rc, out = clbench(["plan", "--stream", "tally-numbers", "-s", "train-inputs=200", "--strategy",
                       "last-layer,full-ft", "--device", "cpu", "--json", "--cache-dir", str(cache_dir)], env, tmp_path,
                      stdout_only=True)
    assert rc == 0, out
    plans = {p["strategy"]: p for p in json.loads(out)}
    assert plans["last-layer"]["parameters"]["trainable"] < plans["full-ft"]["parameters"]["trainable"] / 2
    assert not any("full fine-tuning" in n for n in plans["last-layer"]["notes"])
    rc, out = clbench(["run", "--stream", "tally-numbers", "--strategy", "last-layer", "-s", "train-inputs=200",
                       "--steps", "2", "--batch-size", "4", "--pretrain-steps", "5", "--eval-limit", "32",
                       "--device", "cpu", "--cache-dir", str(cache_dir), "--results-dir", str(tmp_path / "res"), "-q"],
                      env, tmp_path)
    assert rc == 0, out
    (f,) = (tmp_path / "res" / "runs" / "tally-numbers" / "last-layer").glob("*.json")
    doc = json.loads(f.read_text())
    assert doc["status"] == "complete" and doc["stream"]["options"] == {"train_inputs": 200, "seed": 0}
    assert doc["stream"]["tasks"][1]["encoder"] == "clbench_tally.modality:TallyWindows"
    assert doc["stages"][0]["cost"]["trainable"] > 0
    sources = doc["environment"]["sources"]  # the plug-in's distribution and version, recorded
    assert {k: sources["strategy"][k] for k in ("distribution", "version")} == {"distribution": "clbench-tally",
                                                                              "version": "0.1.0"}
    assert sources["stream"]["name"] == "tally-numbers" and sources["stream"]["distribution"] == "clbench-tally"
