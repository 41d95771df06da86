"""The safety curve a SOC lead reads before setting a threshold says what the threshold risks at its
95% bound and whether the data can back any threshold at all.

Lead-pass finding (lead12): on the demo slice (42 true positives) the page showed the operating point
at 0% left of the 0.5% budget line, with the 95% bound (6.88%) off the zoomed axis and not in the
text, so a 51% auto-close rate looked safe; it also dropped the "training data" warning, and the
backtest page said "0/0 true positives" with no threshold in force.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from signoff.cli.model import app
from signoff.cli.policy import _write_backtest_report
from signoff.scoring import metrics
from signoff.scoring.evaluate import write_safety_report
from signoff.scoring.scorer import clear_cache

DEMO = Path(__file__).parents[1] / "signoff" / "data" / "guide_demo.csv"
runner = CliRunner()


def _curve(n: int, tp_share: float) -> list[metrics.SafetyPoint]:
    rng = np.random.default_rng(5)
    is_tp = rng.random(n) < tp_share
    benign = np.clip(np.where(is_tp, rng.beta(2, 8, n), rng.beta(8, 2, n)), 0, 1)
    return metrics.safety_curve(benign, is_tp)


def _last_tick(page: str) -> float:
    return float(re.findall(r'class="xtick"[^>]*>([^<]*)%<', page)[-1]) / 100


def test_few_true_positives_the_bound_is_drawn_and_said_over_budget(tmp_path: Path) -> None:
    curve = _curve(200, 0.21)
    n_tp = curve[0].tp_total
    path = tmp_path / "curve.html"
    write_safety_report(path, curve, "ab" * 32, 0.993, 0, n_tp, 0.51, risk_budget=0.005,
                        warning="200 of 200 incidents were in the model's training data")
    page = path.read_text()
    upper = metrics.clopper_pearson_upper(0, n_tp)
    assert f"95% upper bound {upper:.2%} of true positives auto-closed, over the risk budget 0.5%" in page
    assert 'id="infeasible"' in page and f"with {n_tp} true positives" in page and "at least 598" in page
    assert 'id="operating-upper"' in page and _last_tick(page) >= upper  # the bound is on the chart
    assert 'id="warning"' in page and "training data" in page


def test_enough_true_positives_within_budget_and_no_infeasible_note(tmp_path: Path) -> None:
    curve = _curve(3000, 0.3)
    n_tp = curve[0].tp_total
    path = tmp_path / "curve.html"
    write_safety_report(path, curve, "ab" * 32, 0.99, 0, n_tp, 0.3, risk_budget=0.005)
    page = path.read_text()
    assert n_tp >= 598 and "within the risk budget 0.5%" in page
    assert 'id="infeasible"' not in page and 'id="warning"' not in page
    assert _last_tick(page) == 0.02  # the zoom stays where decisions are made


def test_backtest_page_without_a_threshold_counts_all_reviewed_true_positives(tmp_path: Path) -> None:
    curve = [dict(threshold=t, would_auto_close=c, auto_close_share=c / 75, tp_closed=k, tp_total=19,
                  tp_closed_share=k / 19, tp_closed_upper95=metrics.clopper_pearson_upper(k, 19))
             for t, c, k in ((0.0, 75, 19), (0.5, 60, 2), (0.95, 44, 0))]
    doc = dict(curve=curve, rows=[], threshold_in_force=None, alert_type="phishing", scored=75, risk_budget=0.005)
    path = tmp_path / "bt.html"
    _write_backtest_report(path, doc)
    page = path.read_text()
    assert "true positives wrongly closed 0/19" in page and "with 19 true positives" in page
    assert 'id="operating-verdict"' not in page  # nothing closes: no operating bound to judge


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")  # no Temporal: the policy file's values
    monkeypatch.setenv("COLUMNS", "400")
    clear_cache()
    yield tmp_path / "home"
    clear_cache()


def test_evaluate_on_the_demo_slice_says_the_bound_is_over_the_budget(home: Path, tmp_path: Path) -> None:
    report = tmp_path / "curve.html"
    result = runner.invoke(app, ["evaluate", "--data", str(DEMO), "--format", "guide", "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "0/42 (95% upper bound 6.88%)" in result.stdout
    assert "the 95% upper bound 6.88% is over the risk budget 0.50%" in result.stdout
    assert "with 42 true positives no threshold can" in result.stdout and "at least 598" in result.stdout
    page = report.read_text()
    assert 'id="infeasible"' in page and 'id="warning"' in page and "training data" in page
    # per alert type too, each with its own bound (phishing: 19 true positives, none closed)
    result = runner.invoke(app, ["evaluate", "--data", str(DEMO), "--format", "guide", "--json"])
    phishing = json.loads(result.stdout.strip().splitlines()[-1])["thresholds_by_alert_type"]["phishing"]
    assert phishing["tp_wrongly_closed_upper95"] == metrics.clopper_pearson_upper(
        phishing["tp_wrongly_closed"], phishing["tp_total"]) and phishing["tp_total"] == 19
