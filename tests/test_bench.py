"""Smoke test of `signoff bench`: every scenario runs end to end with a few cases and prints one
sane JSON object per line. Speed is not asserted here (docs/benchmarks.md has the numbers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMMON = ("scenario", "cases", "seconds", "cases_per_s", "machine")


def bench(scenario: str, cases: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "signoff.cli", "bench", "--scenario", scenario, "--cases", str(cases), "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"signoff bench --scenario {scenario} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    for key in COMMON:
        assert key in result, f"{scenario}: no {key!r} in {result}"
    assert result["scenario"] == scenario
    assert result["cases"] == cases
    assert result["seconds"] > 0
    assert result["cases_per_s"] > 0
    assert result["machine"]["nproc"] >= 1
    return result


def test_pipeline_compares_with_bare_temporal() -> None:
    r = bench("pipeline", 6)
    assert r["baseline_cases_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["cases_per_s"] / r["baseline_cases_per_s"], rel=0.02)
    # The governed cases ran their activities, and the baseline ran as many.
    assert r["activities_per_case"] >= 3
    assert r["baseline_activities_per_case"] == round(r["activities_per_case"])
    assert r["same_mix_activities_per_case"] == round(r["scheduled_activities_per_case"]) + round(
        r["local_activities_per_case"])
    assert r["same_mix_cases_per_s"] > 0 and r["ratio_same_mix"] > 0
    assert sum(r["statuses"].values()) == r["cases"]
    assert r["cpu_ms_per_case"]["total"] > 0 and r["baseline_cpu_ms_per_case"]["total"] > 0


def test_approval_latency() -> None:
    r = bench("approval", 3)
    assert 0 < r["p50_s"] <= r["p99_s"] <= r["max_s"]
    assert r["update_accept_p50_s"] > 0


def test_rollback_of_five_actions() -> None:
    r = bench("rollback", 2)
    assert r["actions_per_case"] == 5
    assert 0 < r["p50_s"] <= r["p99_s"] <= r["max_s"]


def test_scoring() -> None:
    r = bench("scoring", 20)
    assert 0 < r["single_p50_ms"] <= r["single_p99_ms"]
    assert r["batch_cases_per_s"] > 0
    assert isinstance(r["explanation_ms_per_case"], float)
    assert len(r["model_id"]) == 64


def test_waiting_cases_listed_by_status() -> None:
    r = bench("waiting", 5)
    assert r["listed"] == 5
    assert r["worker_rss_mb"] > 0 and r["list_seconds"] > 0 and r["count_seconds"] > 0


def test_unknown_scenario_fails_clearly() -> None:
    proc = subprocess.run([sys.executable, "-m", "signoff.cli", "bench", "--scenario", "nope", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "unknown scenario" in proc.stderr


def test_correlation_is_dispatched_when_present() -> None:
    from signoff.bench import available

    if (REPO / "signoff" / "bench" / "correlation.py").exists():
        assert "correlation" in available()


def test_all_runs_correlation_only_where_its_data_is(tmp_path: Path) -> None:
    """A clean clone has no AIT scenario beside it: `signoff bench` (`make bench`) ran pipeline,
    approval, rollback and scoring, then failed on correlation's missing file."""
    from signoff.bench import planned

    missing = tmp_path / "ait" / "russellmitchell.ocsf.jsonl.gz"
    names, skipped = planned("all", ait=missing)
    assert names == ["pipeline", "approval", "rollback", "scoring"]
    assert skipped and str(missing) in skipped and "--data" in skipped
    own = tmp_path / "mine.ocsf.jsonl"
    own.write_text("")
    assert planned("all", data=own, ait=missing) == (["pipeline", "approval", "rollback", "scoring", "correlation"], None)
    missing.parent.mkdir()
    missing.write_bytes(b"")
    assert planned("all", ait=missing) == (["pipeline", "approval", "rollback", "scoring", "correlation"], None)
    assert planned("correlation", ait=tmp_path / "nothing") == (["correlation"], None)  # asked for: its own error
