"""The short seeded chaos run of CI: five node processes, five writers, every kind of fault, then the checker.

It fails on any lost, duplicated, phantom or stale write, any diverged pair, stalled replica, unexpected full
resync, unexpected death or traceback. The long runs are `scripts/chaos` (see docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import report
from tests.chaos.harness import Settings, run

SEED = 20261129
pytestmark = pytest.mark.timeout(150)


def test_short_seeded_chaos_run_loses_nothing(tmp_path: Path) -> None:
    settings = Settings(SEED, seconds=25, rate=5.0, fault_every=(1.0, 3.0), converge_within=40, workdir=tmp_path)
    result = run(settings)
    print(report.table(result))
    assert result["faults_total"] >= 5, result["fault_log"]
    assert all(count > 0 for count in result["proxied_connections"].values()), result["proxied_connections"]
    for figure in ("lost", "duplicated", "phantom", "stale", "diverged_pairs"):
        assert result[figure] == 0, (figure, result["examples"])
    assert result["ok"], report.table(result)
