"""End to end on the shared AIT scenario: `ingest_path(..., "ocsf")` into a real dev server on
durable SQLite with a worker process; every alert reaches exactly one case workflow once.

Slow (a few minutes on 2 cores): `make test-large` / `pytest -m slow`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from signoff.bench.correlation import run_correlation_e2e

AIT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ait"
DATA = AIT / "russellmitchell.ocsf.jsonl.gz"
LABELS = AIT / "russellmitchell.labels.csv.gz"


@pytest.mark.slow
async def test_every_alert_reaches_one_case_workflow_once() -> None:
    if not DATA.is_file() or not LABELS.is_file():
        pytest.fail(f"the AIT scenario is missing under {AIT}: CI must provide ../shared/data/ait")
    result = await run_correlation_e2e(DATA, LABELS, settle_timeout=600)
    assert result["lines"] == result["alerts"] + result["rejected"] == 45_544
    assert result["unaccounted"] == 0 and result["double_counted"] == 0
    assert result["alerts_signalled"] == result["alerts"]  # what the histories received
    assert result["cases_signalled_mismatch"] == 0
    assert result["alerts_in_workflows"] == result["alerts"]  # what the workflows hold
    assert result["cases_with_count_mismatch"] == 0 and result["cases_not_answering"] == 0
    assert result["alerts_per_case"] >= 100 and result["mixed_case_share"] <= 0.01
