"""The two tiers of the suite: `pytest -m "not slow"` (the fast tier) and the full `pytest`. The `slow` marker
(pyproject.toml) must keep selecting something, or the fast tier silently becomes the whole suite again."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# two files that import little (collecting the whole suite imports every library: most of 20 s): one all slow
# (a module-level pytestmark), one all fast
SLOW, FAST = "tests/test_robustness.py", "tests/test_tiers.py"


def test_the_slow_marker_selects_some_tests_and_leaves_some_out():
    command = [sys.executable, "-m", "pytest", "-m", "slow", "--collect-only", "-q", "-p", "no:cacheprovider", "-n", "0",
               SLOW, FAST]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "PYTEST_ADDOPTS": ""})
    # exit 5 is pytest's "no tests collected": the marker selects nothing
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    counts = re.search(r"(\d+)/(\d+) tests? collected \((\d+) deselected\)", out.stdout)
    assert counts, out.stdout[-2000:]
    slow, total, fast = map(int, counts.groups())
    assert slow > 0 and fast > 0 and slow + fast == total
    assert {line.split("::")[0] for line in out.stdout.splitlines() if "::" in line} == {SLOW}


def test_the_slow_tier_is_a_minority_of_the_files():
    """Most test files hold fast tests; the slow ones are marked, per test or per module. (Counted from the source:
    the subprocess above would have to import the whole suite to count them.)"""
    files = sorted((ROOT / "tests").glob("test_*.py"))
    marked = [f for f in files if "pytest.mark.slow" in f.read_text()]
    whole = [f for f in marked if re.search(r"^pytestmark = pytest\.mark\.slow", f.read_text(), re.M)]
    assert 10 <= len(marked) < len(files) and len(whole) < len(files) / 4, (len(marked), len(whole), len(files))
