"""What a SOC lead reads from model evaluation: the threshold actually used (none when thresholds differ
by alert type, per-type figures that add up), infeasible recommendations shown as "none", the what-if
autonomy note, and readable pictures (safety curve zoomed to the risk budget, dated drift chart)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from policies import load_policy
from policies.loader import default_policy_path
from signoff.autonomy.models import AlertTypeState, DriftFinding, DriftReport, GovernanceState
from signoff.autonomy.report import write_html
from signoff.cli.model import app
from signoff.scoring import metrics, model_store
from signoff.scoring.evaluate import evaluate, recommended_for, write_safety_report
from signoff.scoring.scorer import clear_cache
from signoff.sources.guide import read_guide

SLICE = Path(__file__).parent / "data" / "guide_slice.csv"
NONE = "none (infeasible: keep humans in the loop)"
runner = CliRunner()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")  # no Temporal: the policy file's values, said so
    clear_cache()
    yield tmp_path / "home"
    clear_cache()


def _invoke(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def _json(args: list[str]) -> dict:
    return json.loads(_invoke(args).strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    """A model trained on ~200 incidents (a few seconds): too few true positives for any threshold
    to keep a 0.5% budget at the 95% bound. Returns (model id, store, `model train` text output)."""
    store = tmp_path_factory.mktemp("tiny")
    data = store / "tiny.csv"
    data.write_text("".join(SLICE.read_text().splitlines(keepends=True)[:251]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIGNOFF_HOME", str(store))
        mp.setenv("COLUMNS", "200")
        text = _invoke(["train", "--data", str(data), "--format", "guide"])
    (model_id,) = [p.name for p in (store / "models").iterdir() if p.is_dir()]
    return model_id, store, text


def _use(home: Path, tiny: tuple[str, Path, str]) -> str:
    model_id, store, _ = tiny
    shutil.copytree(store / "models" / model_id, home / "models" / model_id)
    return model_id


def _policy_file(tmp_path: Path, thresholds: dict[str, float], on_the_loop: tuple[str, ...] = ()) -> Path:
    policy = yaml.safe_load(default_policy_path().read_text())
    for name, rule in policy["alert_types"].items():
        rule["threshold"] = thresholds.get(name)
        rule["autonomy"] = "on_the_loop" if name in on_the_loop else "in_the_loop"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def _adds_up(out: dict) -> None:
    per_type = out["thresholds_by_alert_type"].values()
    for t in per_type:
        assert {"threshold", "source", "set_by", "incidents", "auto_closed", "tp_wrongly_closed", "tp_total"} <= set(t)
    assert sum(t["incidents"] for t in per_type) == out["incidents"]
    assert sum(t["auto_closed"] for t in per_type) == out["auto_closed"]
    assert sum(t["tp_wrongly_closed"] for t in per_type) == out["tp_wrongly_closed"]
    assert sum(t["tp_total"] for t in per_type) == out["tp_total"]
    assert out["auto_closed_share"] == pytest.approx(out["auto_closed"] / out["incidents"])


# --- thresholds that differ by alert type --------------------------------------------------------


def test_mixed_thresholds_give_no_single_threshold_and_per_type_figures(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The QA case: phishing at 0.1 (policy), the other types at the recommendation (shipped model)."""
    monkeypatch.setenv("SIGNOFF_POLICY", str(_policy_file(tmp_path, {"phishing": 0.1}, on_the_loop=("phishing",))))
    args = ["evaluate", "--data", str(SLICE), "--format", "guide", "--report", str(tmp_path / "c.html")]
    out = _json([*args, "--json"])
    assert out["threshold"] is None and out["threshold_source"] == "mixed"
    by_type = out["thresholds_by_alert_type"]
    recommended = recommended_for(model_store.default_model_id(), 0.005)
    assert recommended.feasible
    phishing = by_type["phishing"]
    assert (phishing["threshold"], phishing["source"], phishing["set_by"], phishing["autonomy"]) == (
        0.1, "policy", "policy file", "on_the_loop")
    for name, t in by_type.items():
        if name != "phishing":
            assert (t["threshold"], t["source"], t["set_by"]) == (recommended.threshold, "recommended", None)
    _adds_up(out)
    # the wrongly closed true positives are where the low threshold is, and the text says so per type
    assert phishing["tp_wrongly_closed"] > 0
    assert out["autonomy_note"].startswith("what-if: every alert type auto-closes at its threshold")
    assert "only types on the loop do: phishing (" in out["autonomy_note"]
    assert "policy file" in out["autonomy_note"]  # Temporal unreachable: the file's autonomy
    monkeypatch.setenv("COLUMNS", "200")
    text = _invoke(args)
    assert "thresholds differ by alert type (mixed):" in text
    assert re.search(
        rf"phishing +0\.1000 \(policy, set by policy file\): {phishing['incidents']} incidents, auto-closed "
        rf"{phishing['auto_closed']}, true positives wrongly closed {phishing['tp_wrongly_closed']}/{phishing['tp_total']}",
        text,
    ), text
    assert f"all alert types: auto-closed {out['auto_closed_share']:.1%}" in text
    assert "what-if: every alert type auto-closes" in text
    assert "(mixed): auto-closed" not in text  # no single number stands for several thresholds


def test_several_policy_values_and_live_governance(home: Path, tmp_path: Path) -> None:
    """Unit level, with the live state overlaid: several policy thresholds (source "policy") are still
    no single threshold; set_by says who; the autonomy note reads live governance."""
    policy = load_policy(_policy_file(tmp_path, {name: 0.999 for name in ("malware", "phishing", "network_intrusion",
                                                                          "compromised_account", "suspicious_activity")}))
    live = GovernanceState(revision=7, alert_types={
        "phishing": AlertTypeState(threshold_set=True, threshold=0.2, threshold_by="carol",
                                   autonomy="on_the_loop", autonomy_by="dave"),
        "malware": AlertTypeState(autonomy="on_the_loop", autonomy_by="dave"),
    })  # fmt: skip
    read = read_guide(SLICE)
    out = evaluate(read, policy=policy, report=tmp_path / "r.html", live=live)
    assert out["threshold"] is None and out["threshold_source"] == "policy"
    by_type = out["thresholds_by_alert_type"]
    assert (by_type["phishing"]["threshold"], by_type["phishing"]["set_by"]) == (0.2, "carol")
    assert (by_type["malware"]["threshold"], by_type["malware"]["set_by"]) == (0.999, "policy file")
    assert by_type["malware"]["autonomy"] == "on_the_loop" and by_type["network_intrusion"]["autonomy"] == "in_the_loop"
    _adds_up(out)
    assert "only types on the loop do: malware, phishing (autonomy from live governance (revision 7))" in out["autonomy_note"]
    # one threshold for every type: the number itself, as before
    same = evaluate(read, policy=policy, report=tmp_path / "s.html", live=None)
    assert same["threshold"] == 0.999 and same["threshold_source"] == "policy"
    assert "no type does: every alert type is in the loop" in same["autonomy_note"]
    _adds_up(same)


# --- infeasible recommendations -----------------------------------------------------------------


def test_infeasible_recommendation_closes_nothing_and_says_none(
    home: Path, tiny: tuple[str, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_id = _use(home, tiny)
    assert recommended_for(model_id, 0.005).feasible is False
    args = ["evaluate", "--data", str(SLICE), "--format", "guide", "--model", model_id[:12],
            "--report", str(tmp_path / "c.html")]  # fmt: skip
    out = _json([*args, "--json"])
    assert out["threshold"] is None and out["threshold_source"] == "recommended (infeasible)"
    assert out["recommended_threshold"]["feasible"] is False
    assert (out["auto_closed"], out["auto_closed_share"], out["tp_wrongly_closed"]) == (0, 0.0, 0)
    assert out["tp_total"] > 0
    assert out["tp_wrongly_closed_upper95"] == pytest.approx(metrics.clopper_pearson_upper(0, out["tp_total"]))
    for t in out["thresholds_by_alert_type"].values():
        assert (t["threshold"], t["source"], t["auto_closed"]) == (None, "recommended (infeasible)", 0)
    _adds_up(out)
    monkeypatch.setenv("COLUMNS", "200")
    text = _invoke(args)
    assert f"threshold {NONE}" in text and "1.0000" not in text
    assert "auto-closed 0.0%, true positives wrongly closed 0/" in text
    page = (tmp_path / "c.html").read_text()
    assert f"threshold {NONE}" in page
    # a policy threshold still applies where one is set; the other types stay without one
    monkeypatch.setenv("SIGNOFF_POLICY", str(_policy_file(tmp_path, {"phishing": 0.5})))
    mixed = _json([*args, "--json"])
    assert mixed["threshold"] is None and mixed["threshold_source"] == "mixed"
    assert mixed["thresholds_by_alert_type"]["phishing"]["auto_closed"] == mixed["auto_closed"] > 0
    _adds_up(mixed)


def test_train_and_list_say_none_when_infeasible(home: Path, tiny: tuple[str, Path, str]) -> None:
    model_id, _, train_text = tiny
    assert f"recommended threshold: {NONE}" in train_text and "recommended threshold 1.0000" not in train_text
    _use(home, tiny)
    listed = {m["model_id"]: m for m in map(json.loads, _invoke(["list", "--json"]).splitlines())}
    assert listed[model_id]["recommended_threshold_feasible"] is False
    assert listed[model_store.default_model_id()]["recommended_threshold_feasible"] is True
    table = runner.invoke(app, ["list"], env={"COLUMNS": "250"}).stdout
    row = next(line for line in table.splitlines() if model_id[:16] in line)
    assert NONE in row and "1.0000" not in row


# --- pictures -----------------------------------------------------------------------------------


def _curve() -> list[metrics.SafetyPoint]:
    import numpy as np

    rng = np.random.default_rng(3)
    is_tp = rng.random(2000) < 0.3
    benign = np.clip(np.where(is_tp, rng.beta(2, 8, 2000), rng.beta(8, 2, 2000)), 0, 1)
    return metrics.safety_curve(benign, is_tp)


def _ticks(page: str, kind: str) -> list[str]:
    return re.findall(rf'class="{kind}"[^>]*>([^<]*)<', page)


def test_safety_report_zooms_to_the_budget_with_ticks_budget_line_and_operating_point(tmp_path: Path) -> None:
    curve = _curve()
    path = tmp_path / "deep" / "er" / "curve.html"
    write_safety_report(path, curve, "ab" * 32, 0.9123, 1, 600, 0.41, risk_budget=0.005)
    page = path.read_text()
    assert "<svg" in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert _ticks(page, "xtick") == ["0%", "0.5%", "1%", "1.5%", "2%"]  # 0 .. max(4 x 0.5%, 2%)
    assert _ticks(page, "ytick") == ["0%", "20%", "40%", "60%", "80%", "100%"]
    assert 'id="risk-budget"' in page and "risk budget 0.5%" in page and 'stroke-dasharray="6 4"' in page
    assert 'id="operating-point"' in page and "threshold 0.9123" in page
    assert "operating point" in page and "95% upper bound" in page  # the legend
    # the curve is clipped to the zoomed axis: no polyline point right of the plot area
    for points in re.findall(r'<polyline points="([^"]*)"', page):
        xs = [float(p.split(",")[0]) for p in points.split()]
        assert xs and max(xs) <= 720 - 30 + 1e-6
    # a larger budget or an operating point further right widens the axis to include them
    write_safety_report(path, curve, "ab" * 32, 0.5, 120, 600, 0.8, risk_budget=0.05)
    wide = path.read_text()
    assert _ticks(wide, "xtick")[-1] in ("20%", "25%", "30%") and "risk budget 5%" in wide
    # the backtest's call (no budget): still a page, without a budget line
    write_safety_report(path, curve, "", None, 0, 10, 0.0, title="Signoff backtest", population="reviewed cases")
    plain = path.read_text()
    assert 'id="risk-budget"' not in plain and "threshold none set" in plain and _ticks(plain, "xtick")


def _reports(start: datetime, hours: float, n: int) -> list[DriftReport]:
    return [
        DriftReport(at=start + timedelta(hours=hours * i), model_id="m" * 64, reference="training", window="24h",
                    findings=(DriftFinding(alert_type="phishing", cases=50, verdicts=5, feature_psi_max=0.05 * i,
                                           score_psi=0.02 * i, override_rate=0.1),),
                    policy_thresholds={"feature_psi": 0.25, "score_psi": 0.2, "override_rate": 0.3})
        for i in range(n)
    ]  # fmt: skip


def test_drift_report_has_dated_ticks_and_writes_into_new_directories(tmp_path: Path) -> None:
    start = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    path = write_html(_reports(start, 13, 10), tmp_path / "new" / "nested" / "drift.html")
    page = path.read_text()
    assert _ticks(page, "xtick") == ["2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25"]
    assert _ticks(page, "ytick") == ["0", "0.2", "0.4", "0.6"]
    hourly = write_html(_reports(start, 0.25, 5), tmp_path / "other" / "d.html").read_text()
    assert _ticks(hourly, "xtick") == ["11-20 09:30", "11-20 09:45", "11-20 10:00", "11-20 10:15", "11-20 10:30"]
    single = write_html(_reports(start, 1, 1), tmp_path / "one" / "d.html").read_text()
    assert _ticks(single, "xtick") == ["11-20 09:30"]
    assert "no drift checks yet" in write_html([], tmp_path / "empty" / "d.html").read_text()


def test_drift_report_marks_a_model_change_and_does_not_join_lines_across_it(tmp_path: Path) -> None:
    """Lead pass (lead12): checks before and after `model promote` measure against different models'
    references, but the chart joined them into one line with nothing marking the change."""
    start = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    reports = _reports(start, 1, 4)
    reports[2:] = [r.model_copy(update={"model_id": "n" * 64}) for r in reports[2:]]
    page = write_html(reports, tmp_path / "drift.html").read_text()
    assert page.count('class="model-change"') == 1 and "model nnnnnnnn" in page
    feature_lines = re.findall(r'<polyline points="([^"]*)" fill="none" stroke="#d62728"', page)
    assert [len(p.split()) for p in feature_lines] == [2, 2]  # one segment per model
    same = write_html(_reports(start, 1, 4), tmp_path / "same.html").read_text()
    assert 'class="model-change"' not in same
    assert [len(p.split()) for p in re.findall(r'<polyline points="([^"]*)" fill="none" stroke="#d62728"', same)] == [4]
