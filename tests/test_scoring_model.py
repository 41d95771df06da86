"""Deterministic training and scoring, calibration, threshold recommendation, explanations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from signoff.scoring import artifact, metrics
from signoff.scoring.features import FEATURE_NAMES, vector
from signoff.scoring.scorer import Scorer
from signoff.scoring.train import TrainedModel, TrainParams, cases_from_guide, train
from signoff.sources.guide import read_guide

SLICE = Path(__file__).parent / "data" / "guide_slice.csv"
REPO = Path(__file__).resolve().parent.parent
SMALL = TrainParams(rounds=40, folds=3)


@pytest.fixture(scope="module")
def cases():  # type: ignore[no-untyped-def]
    return cases_from_guide(read_guide(SLICE))


@pytest.fixture(scope="module")
def trained(cases) -> TrainedModel:  # type: ignore[no-untyped-def]
    return train(cases, SMALL, {"sha256": "slice"})


def test_training_twice_gives_the_same_bytes_and_id(cases, trained: TrainedModel) -> None:  # type: ignore[no-untyped-def]
    again = train(cases, SMALL, {"sha256": "slice"})
    assert again.artifact == trained.artifact
    assert again.model_id == trained.model_id == artifact.sha256(trained.artifact)
    assert json.dumps(again.manifest, sort_keys=True) == json.dumps(trained.manifest, sort_keys=True)
    other = train(cases, SMALL.model_copy(update={"seed": 8}), {"sha256": "slice"})
    assert other.model_id != trained.model_id


_SCORE_SCRIPT = """
import sys, json
from signoff.scoring.scorer import Scorer
from signoff.scoring.train import cases_from_guide
from signoff.sources.guide import read_guide
scorer = Scorer.from_bytes(open(sys.argv[1], "rb").read())
cases = cases_from_guide(read_guide(sys.argv[2]))
for alerts in cases.alerts[:25]:
    sys.stdout.write(scorer.score(alerts).model_dump_json() + "\\n")
"""


def test_scoring_in_two_processes_is_bit_identical(tmp_path: Path, trained: TrainedModel) -> None:
    model = tmp_path / "model.json"
    model.write_bytes(trained.artifact)
    outputs = [
        subprocess.run(
            [sys.executable, "-c", _SCORE_SCRIPT, str(model), str(SLICE)],
            cwd=REPO, capture_output=True, check=True,
        ).stdout
        for _ in range(2)
    ]  # fmt: skip
    assert outputs[0] == outputs[1]
    lines = outputs[0].decode().splitlines()
    assert len(lines) == 25
    first = json.loads(lines[0])
    assert first["model_id"] == trained.model_id
    # and the same bytes as this process computes
    scorer = Scorer.from_bytes(trained.artifact)
    cases = cases_from_guide(read_guide(SLICE))
    assert scorer.score(cases.alerts[0]).model_dump_json() == lines[0]


def test_batch_scores_equal_single_scores(cases, trained: TrainedModel) -> None:  # type: ignore[no-untyped-def]
    scorer = Scorer.from_bytes(trained.artifact)
    batch = scorer.score_many(cases.alerts[:40], explain=True)
    for alerts, result in zip(cases.alerts[:40], batch, strict=True):
        assert scorer.score(alerts) == result


def test_score_result_is_calibrated_probabilities_with_explanation(cases, trained: TrainedModel) -> None:  # type: ignore[no-untyped-def]
    scorer = Scorer.from_bytes(trained.artifact)
    alerts = cases.alerts[3]
    result = scorer.score(alerts)
    assert set(result.probabilities) == {"TruePositive", "BenignPositive", "FalsePositive"}
    assert abs(sum(result.probabilities.values()) - 1.0) < 1e-5
    assert result.confidence == max(result.probabilities.values())
    assert result.probabilities[result.predicted.value] == result.confidence
    assert result.benign_confidence == pytest.approx(1.0 - result.probabilities["TruePositive"])
    x = vector(alerts, scorer.bundle.stats)
    assert result.feature_hash == __import__("hashlib").sha256(x.tobytes()).hexdigest()
    assert 0 < len(result.contributions) <= 8
    sizes = [abs(c.contribution) for c in result.contributions]
    assert sizes == sorted(sizes, reverse=True)
    for c in result.contributions:
        assert c.feature in FEATURE_NAMES
        assert c.value == float(x[FEATURE_NAMES.index(c.feature)])
    # TreeSHAP: contributions of all features + bias add up to the predicted class's raw margin
    dm = xgb.DMatrix(x.reshape(1, -1), feature_names=list(FEATURE_NAMES))
    full = scorer.bundle.booster.predict(dm, pred_contribs=True).reshape(3, -1)
    margin = scorer.bundle.booster.predict(dm, output_margin=True).reshape(3)
    k = ["TruePositive", "BenignPositive", "FalsePositive"].index(result.predicted.value)
    assert float(full[k].sum()) == pytest.approx(float(margin[k]), abs=1e-4)


def test_calibration_is_fitted_out_of_fold_and_ece_is_within_bound(trained: TrainedModel) -> None:
    cv = trained.manifest["cv"]
    assert trained.manifest["calibration"]["method"].startswith("matrix scaling")
    # ECE of out-of-fold predictions, calibration map cross-fitted (never fitted on the case itself)
    assert 0.0 <= cv["ece"] <= 0.08
    assert 0.0 <= cv["ece_benign"] <= 0.08
    assert cv["macro_f1"] > 0.6
    oof = trained.manifest["oof"]
    assert len(oof["benign_confidence"]) == len(oof["true_positive"]) == trained.manifest["data"]["incidents"]


def test_ece_definition() -> None:
    probs = np.array([[0.9, 0.05, 0.05]] * 10)
    labels = np.array([0] * 9 + [1])
    assert metrics.ece_top_label(probs, labels) == pytest.approx(0.0)
    labels = np.array([0] * 5 + [1] * 5)
    assert metrics.ece_top_label(probs, labels) == pytest.approx(0.4)


def test_clopper_pearson_upper_bound() -> None:
    assert metrics.clopper_pearson_upper(0, 100) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert metrics.clopper_pearson_upper(0, 0) == 1.0
    assert metrics.clopper_pearson_upper(5, 5) == 1.0
    assert 0.01 < metrics.clopper_pearson_upper(1, 100) < 0.05


def test_threshold_recommendation_respects_the_budget() -> None:
    # 1000 TPs spread low, 1000 benign cases spread high; two TPs hide among the benign scores.
    tp_scores = np.linspace(0.0, 0.5, 998).tolist() + [0.95, 0.97]
    benign_scores = np.linspace(0.6, 0.999, 1000).tolist()
    scores = np.asarray(tp_scores + benign_scores)
    is_tp = np.asarray([True] * 1000 + [False] * 1000)
    # budget 0.5%: the bound with 0 TPs closed out of 1000 is 0.30%, with 1 it is 0.47%, with 2 0.63%
    rec = metrics.recommend_threshold(scores, is_tp, 0.005)
    assert rec.feasible
    assert rec.at.tp_wrongly_closed == 1
    assert rec.at.tp_wrongly_closed_upper95 <= 0.005
    assert 0.95 < rec.threshold < 0.951  # just above the second hidden TP
    assert rec.at.auto_closed == int((scores >= 0.95).sum()) - 1  # all but the TP at 0.95
    # one step lower would breach the budget
    lower = scores[scores < rec.threshold].max()
    assert metrics.safety_at(scores, is_tp, lower).tp_wrongly_closed_upper95 > 0.005
    # a tighter budget closes only above every TP
    tight = metrics.recommend_threshold(scores, is_tp, 0.004)
    assert tight.at.tp_wrongly_closed == 0 and tight.threshold > 0.97
    # an impossible budget: nothing is closed
    none = metrics.recommend_threshold(scores, is_tp, 0.001)
    assert not none.feasible and none.threshold == 1.0 and none.at.auto_closed == 0


def test_artifact_refuses_other_schema(trained: TrainedModel) -> None:
    doc = json.loads(trained.artifact)
    doc["feature_names"] = doc["feature_names"][:-1]
    with pytest.raises(artifact.ArtifactError, match="retrain"):
        artifact.load(artifact.canonical_json(doc))


def test_training_on_a_handful_of_cases_without_organisations(cases) -> None:  # type: ignore[no-untyped-def]
    """Retraining from analyst verdicts can start small and source-neutral (no org ids)."""
    from signoff.scoring.train import LabelledCases

    idx = list(range(12))
    small = LabelledCases(
        case_ids=[cases.case_ids[i] for i in idx],
        alerts=[tuple(a.model_copy(update={"attributes": {}}) for a in cases.alerts[i]) for i in idx],
        labels=cases.labels[idx],
        orgs=[""] * len(idx),
    )
    trained = train(small, TrainParams(rounds=10), {})
    result = Scorer.from_bytes(trained.artifact).score(cases.alerts[20])
    assert 0.0 < result.benign_confidence < 1.0
    # too few true positives to bound the risk: no threshold is recommended
    assert trained.manifest["recommended_threshold"]["feasible"] is False


@pytest.mark.slow
def test_shipped_default_model_is_reproducible_from_guide_dev() -> None:
    """Retraining on guide_dev.csv with the default params gives the shipped model's exact bytes."""
    from signoff.scoring import model_store

    data = REPO.parent / "shared" / "data" / "guide" / "guide_dev.csv"
    if not data.exists():
        pytest.fail(f"{data} is missing: the GUIDE development slice is needed for this test")
    again = train(cases_from_guide(read_guide(data)), TrainParams(), {})
    assert again.model_id == model_store.default_model_id()
