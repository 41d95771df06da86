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
from signoff.scoring.features import FEATURE_NAMES, cross_features, fit_history, vector
from signoff.scoring.scorer import Scorer
from signoff.scoring.train import TrainedModel, TrainParams, cases_from_guide, train
from signoff.sources.guide import read_guide

SLICE = Path(__file__).parent / "data" / "guide_slice.csv"
REPO = Path(__file__).resolve().parent.parent
SMALL = TrainParams(rounds=20, folds=3)


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
    # the predicted grade follows the model's decision rule; confidence is its calibrated probability
    assert result.probabilities[result.predicted.value] == result.confidence
    probs = np.asarray([[result.probabilities[c] for c in ("TruePositive", "BenignPositive", "FalsePositive")]])
    decided = scorer.bundle.calibration.decide(probs, vector(alerts, scorer.bundle.stats).reshape(1, -1))
    assert ["TruePositive", "BenignPositive", "FalsePositive"][int(decided[0])] == result.predicted.value
    assert result.benign_confidence == pytest.approx(1.0 - result.probabilities["TruePositive"])
    x = vector(alerts, scorer.bundle.stats)
    assert result.feature_hash == __import__("hashlib").sha256(x.tobytes()).hexdigest()
    # the vector itself is recorded, exactly: its bytes are the scored float32 vector
    assert __import__("base64").b64decode(result.feature_vector) == x.astype("<f4").tobytes()
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


def _cross(keys: dict[str, list[str]], org: str, stats) -> dict[str, float]:  # type: ignore[no-untyped-def]
    names = [n for n in FEATURE_NAMES if n.startswith("hist_xorg_")]
    return dict(zip(names, cross_features(keys, org, stats), strict=True))


def test_cross_organisation_features_leave_the_own_organisation_out() -> None:
    # detector "guide:9": org A graded it TruePositive twice, org B BenignPositive once
    keys = [{"rule": ["guide:9"]}, {"rule": ["guide:9"]}, {"rule": ["guide:9"]}, {"rule": ["guide:5"]}]
    stats = fit_history(keys, [0, 0, 1, 2], ["A", "A", "B", "C"], range(4))
    prior = stats.prior
    own_a = _cross({"rule": ["guide:9"]}, "A", stats)  # only B votes: BenignPositive
    assert own_a["hist_xorg_rule_orgs"] == 1.0
    assert own_a["hist_xorg_rule_bp"] == pytest.approx((1.0 + prior[1]) / 2.0)
    own_b = _cross({"rule": ["guide:9"]}, "B", stats)  # only A votes: TruePositive (one vote, not two)
    assert own_b["hist_xorg_rule_orgs"] == 1.0
    assert own_b["hist_xorg_rule_tp"] == pytest.approx((1.0 + prior[0]) / 2.0)
    new = _cross({"rule": ["guide:9"]}, "Z", stats)  # a never-seen organisation gets both votes
    assert new["hist_xorg_rule_orgs"] == 2.0
    assert new["hist_xorg_rule_tp"] == pytest.approx((1.0 + prior[0]) / 3.0)
    assert new["hist_xorg_rule_tp_max"] == new["hist_xorg_rule_tp"]
    only_c = _cross({"rule": ["guide:5"]}, "C", stats)  # a key only its own organisation has: the prior
    assert only_c["hist_xorg_rule_orgs"] == 0.0
    assert only_c["hist_xorg_rule_tp"] == pytest.approx(prior[0])
    # no keys at all (e.g. an OCSF case without these attributes): the prior, support 0
    empty = _cross({}, "", stats)
    assert empty["hist_xorg_attr_orgs"] == 0.0 and empty["hist_xorg_attr_fp"] == pytest.approx(prior[2])
    # the statistics survive the artifact round trip with the same values
    again = type(stats).from_json(json.loads(json.dumps(stats.to_json())))
    assert cross_features({"rule": ["guide:9"]}, "A", again) == cross_features({"rule": ["guide:9"]}, "A", stats)


def test_decision_rule_biases_only_the_regime_they_belong_to() -> None:
    probs = np.asarray([[0.30, 0.45, 0.25], [0.30, 0.45, 0.25]])
    known = np.asarray([True, False])
    decided = artifact.decide(probs, known, (0.0, 0.0, 0.0), (0.0, -0.5, 0.0))
    assert decided.tolist() == [1, 0]  # known: plain argmax; unseen: BenignPositive handicapped


def test_decision_bias_is_fitted_to_raise_macro_f1() -> None:
    from signoff.scoring.train import fit_decision_bias

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    probs = np.full((600, 3), 0.2)
    probs[np.arange(600), labels] = 0.3  # the right grade a bit higher...
    probs[:, 1] += 0.15  # ...but BenignPositive inflated for every case: argmax says BP always
    probs /= probs.sum(axis=1, keepdims=True)
    assert metrics.macro_f1(labels, probs.argmax(axis=1)) < 0.3
    bias = fit_decision_bias(probs, labels)
    assert bias[0] == 0.0 and bias[1] < 0
    assert metrics.macro_f1(labels, (np.log(probs) + np.asarray(bias)).argmax(axis=1)) == pytest.approx(1.0)
    assert metrics.macro_f1(labels, probs.argmax(axis=1)) == pytest.approx(metrics.classification(labels, probs.argmax(axis=1))[0])


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


def test_worker_processes_give_the_same_model(cases, trained: TrainedModel) -> None:  # type: ignore[no-untyped-def]
    parallel = train(cases, SMALL, {"sha256": "slice"}, jobs=2)
    assert parallel.model_id == trained.model_id
    assert json.dumps(parallel.manifest, sort_keys=True) == json.dumps(trained.manifest, sort_keys=True)


def test_grouped_cv_report_is_the_same_for_any_number_of_processes(cases) -> None:  # type: ignore[no-untyped-def]
    from signoff.scoring.cv import cv_report, outer_folds

    params = TrainParams(rounds=8, folds=3, bags=2)
    one = cv_report(cases, params, k=3, jobs=1)
    two = cv_report(cases, params, k=3, jobs=2)
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    for grouping in ("incident", "org"):
        report = one[f"{grouping}_grouped"]
        assert report["incidents"] == len(cases) and len(report["per_fold"]) == 3
        assert sum(f["incidents"] for f in report["per_fold"]) == len(cases)
        assert 0.0 <= report["auto_closed_share"] <= 1.0 and 0.0 <= report["ece"] <= 1.0
    assert one["incident_grouped"]["macro_f1"] > 0.7  # the slice's new incidents are learnable
    held_out_orgs = [{cases.orgs[i] for i in test} for test in outer_folds(cases, "org", 3, params.seed + 100)]
    assert all(a.isdisjoint(b) for n, a in enumerate(held_out_orgs) for b in held_out_orgs[n + 1 :])
    assert [f["unseen_org_share"] for f in one["org_grouped"]["per_fold"]] == [1.0, 1.0, 1.0]


def test_merged_booster_is_the_average_of_its_bags() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = rng.integers(0, 3, 400)
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "eta": 0.3, "subsample": 0.7, "nthread": 1}
    bags = [xgb.train({**params, "seed": seed}, xgb.DMatrix(x, label=y), num_boost_round=15) for seed in range(3)]
    merged = artifact.merge_boosters(bags)
    margin = merged.inplace_predict(x, predict_type="margin")
    mean = np.mean([b.inplace_predict(x, predict_type="margin") for b in bags], axis=0)
    assert np.abs(margin - mean).max() < 1e-5
    assert np.abs(margin - bags[0].inplace_predict(x, predict_type="margin")).max() > 1e-2  # not just one bag
    contribs = merged.predict(xgb.DMatrix(x), pred_contribs=True)
    assert np.abs(contribs.sum(axis=-1) - margin).max() < 1e-4  # explanations add up to the merged score
    assert merged.num_boosted_rounds() == 3 * 15
    with pytest.raises(ValueError, match="share base_score"):
        artifact.merge_boosters([bags[0], xgb.train({**params, "num_class": 4}, xgb.DMatrix(x, label=y), 2)])


def test_trained_model_averages_its_bags(trained: TrainedModel) -> None:
    assert SMALL.bags > 1
    assert trained.bundle.booster.num_boosted_rounds() == SMALL.bags * SMALL.rounds


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
