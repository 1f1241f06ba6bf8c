"""The README's main job: `pynndb demo` runs a 3-node mesh under load with failures and ends identical."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(180)
def test_demo_ends_with_every_pair_identical(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pynndb", "demo", "--seconds", "1", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "diff(orders, orders_copy) == {}: yes" in done.stdout
    assert "diff(profiles_a, profiles_b) == {}: yes" in done.stdout
    assert "union of 3 sources" in done.stdout and "all replicas identical" in done.stdout
    assert "node c killed with SIGKILL" in done.stdout
