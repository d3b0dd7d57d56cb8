"""The two tiers of the suite: `pytest -m "not slow"` (the fast tier) and the full `pytest`. The `slow` marker
(pyproject.toml) must keep selecting something, or the fast tier silently becomes the whole suite again."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_slow_marker_selects_some_tests_and_leaves_some_out():
    command = [sys.executable, "-m", "pytest", "-m", "slow", "--collect-only", "-q", "-p", "no:cacheprovider"]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "PYTEST_ADDOPTS": ""})
    # exit 5 is pytest's "no tests collected": the marker selects nothing
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    counts = re.search(r"(\d+)/(\d+) tests? collected \((\d+) deselected\)", out.stdout)
    assert counts, out.stdout[-2000:]
    slow, total, fast = map(int, counts.groups())
    assert slow > 0 and fast > 0 and slow + fast == total
