"""`signoff policy backtest`: what a threshold would have done to the cases analysts reviewed."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from signoff.autonomy.backtest import at_threshold, curve, lowest_within_budget
from signoff.autonomy.client import govern, signal_verdict
from signoff.autonomy.evidence import upper95
from signoff.autonomy.models import ThresholdChange
from signoff.cli import app
from signoff.models import Verdict
from tests.test_governance import _record, _state_with, trusting_worker

TP, BP, FP = Verdict.true_positive, Verdict.benign_positive, Verdict.false_positive


def test_a_hand_computed_backtest() -> None:
    scored = [(0.99, BP), (0.97, TP), (0.95, FP), (0.90, BP), (0.40, TP), (0.10, TP)]
    p = at_threshold(scored, 0.95)
    assert (p.scored, p.would_auto_close, p.tp_total, p.tp_closed) == (6, 3, 3, 1)
    assert p.auto_close_share == pytest.approx(0.5) and p.tp_closed_share == pytest.approx(1 / 3)
    assert p.miss_rate == pytest.approx(1 / 3)
    assert p.tp_closed_upper95 == pytest.approx(upper95(1, 3)) and p.miss_upper95 == pytest.approx(upper95(1, 3))
    none = at_threshold(scored, 1.0)
    assert (none.would_auto_close, none.tp_closed, none.miss_rate, none.miss_upper95) == (0, 0, None, None)
    assert at_threshold([], 0.5).auto_close_share is None


def _brute_force(scored: list[tuple[float, Verdict]], budget: float) -> float | None:
    ok = [t for t in sorted({b for b, _ in scored})
          if (p := at_threshold(scored, t)).tp_closed_upper95 is not None and p.tp_closed_upper95 <= budget]
    return min(ok) if ok else None


def test_lowest_within_budget_is_the_lowest_threshold_that_keeps_the_bound() -> None:
    rng = random.Random(5)
    for n_tp, budget in ((700, 0.005), (1500, 0.005), (400, 0.05), (60, 0.2)):
        scored = [(round(rng.random() ** 3, 3), TP) for _ in range(n_tp)]
        scored += [(round(1 - rng.random() ** 4, 3), rng.choice((BP, FP))) for _ in range(3 * n_tp)]
        best = lowest_within_budget(scored, budget)
        want = _brute_force(scored, budget)
        assert best is not None and best.threshold == want, (n_tp, budget)
        assert best.tp_closed_upper95 is not None and best.tp_closed_upper95 <= budget
    # 700 TPs at 0.5%: not one may be closed, so the threshold sits above the most benign-looking TP.
    scored = [(0.5, TP)] * 699 + [(0.93, TP)] + [(0.9, BP), (0.95, FP), (0.99, BP)]
    best = lowest_within_budget(scored, 0.005)
    assert best is not None and (best.threshold, best.would_auto_close, best.tp_closed) == (0.95, 2, 0)
    # Too few reviewed TPs for the bound to reach 0.5%: no threshold, said as None.
    assert lowest_within_budget([(0.99, BP), (0.2, TP)], 0.005) is None
    assert lowest_within_budget([(0.99, BP)], 0.005) is None


def test_the_curve_keeps_both_ends_and_thins_to_its_size() -> None:
    scored = [(i / 1000, TP if i % 3 == 0 else BP) for i in range(1000)]
    points = curve(scored, points=41)
    assert len(points) == 41 and points[0].threshold == 0.999 and points[-1].threshold == 0.0
    assert [p.would_auto_close for p in points] == sorted(p.would_auto_close for p in points)
    assert len(curve(scored[:5])) == 5


runner = CliRunner()


async def _cli(*args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return result.exit_code, result.output


async def test_policy_backtest_reads_the_reviewed_cases(dev_env: WorkflowEnvironment, task_queue: str,
                                                        policy_file: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("SIGNOFF_TASK_QUEUE", task_queue)
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIGNOFF_GOVERNANCE_CACHE_S", "0")
    monkeypatch.setenv("COLUMNS", "200")
    client = dev_env.client
    verdicts = [(0.99, BP), (0.97, TP), (0.95, FP), (0.90, BP), (0.40, TP), (0.10, TP)]
    async with trusting_worker(client, task_queue):
        await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.96, by="carol",
                                                              reason="from the OOF curve"), task_queue)
        for i, (benign, verdict) in enumerate(verdicts):
            await signal_verdict(client, _record(f"bt{i}", BP, benign, verdict, t=0.96), task_queue)
        await signal_verdict(client, _record("bt-unscored", None, None, TP), task_queue)
        await _state_with(client, task_queue, lambda s: len(s.recent.get("phishing", ())) == 7, "7 verdicts")

        report = tmp_path / "backtest.html"
        code, out = await _cli("policy", "backtest", "phishing", "--threshold", "0.92", "--json",
                               "--report", str(report))
        assert code == 0, out
        doc = json.loads(out.strip().splitlines()[-1])
        assert (doc["reviewed"], doc["scored"], doc["threshold_in_force"], doc["threshold_set_by"]) == \
            (7, 6, 0.96, "carol")
        rows = {r["label"]: r for r in doc["rows"]}
        in_force, tried = rows["in force (set by carol)"], rows["tried"]
        assert (in_force["would_auto_close"], in_force["tp_closed"], in_force["tp_total"]) == (2, 1, 3)
        assert (tried["threshold"], tried["would_auto_close"], tried["tp_closed"]) == (0.92, 3, 1)
        # 3 reviewed TPs cannot back a 0.5% budget: said, not a made-up threshold.
        assert doc["lowest_within_budget"] is None and "more reviewed cases are needed" in doc["caveats"][0]
        page = report.read_text()
        assert "<svg" in page and "phishing: 6 reviewed cases" in page

        # A (very) loose budget: 1 of 3 TPs closed has a bound of 86.5% <= 90%, 2 of 3 one of 98.3%.
        code, out = await _cli("policy", "backtest", "phishing", "--risk-budget", "0.9", "--json")
        doc = json.loads(out.strip().splitlines()[-1])
        assert code == 0 and doc["lowest_within_budget"] == 0.90 and not doc["caveats"]
        code, out = await _cli("policy", "backtest", "phishing", "--risk-budget", "0.9")
        assert code == 0 and "lowest within 90.00% of TPs" in out and "0.900000" in out, out
        code, out = await _cli("policy", "backtest", "phishing", "--threshold", "1.5")
        assert code != 0 and "between 0 and 1" in out
        code, out = await _cli("policy", "backtest", "no_such_type")
        assert code != 0 and "unknown alert type" in out
