"""The model artifact: one canonical JSON file holding everything a score depends on.

booster (xgboost UBJSON, base64), the history statistics, the calibration map, the class order and
the feature schema. Its sha256 is the model id; the same training run produces the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb

from signoff.scoring.features import CLASSES, FEATURE_NAMES, SCHEMA_VERSION, HistoryStats, org_known

FORMAT = "signoff-triage/2"
EPS = 1e-6


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CalibrationMap:
    """Matrix scaling: calibrated = softmax(W · log(raw) + b)."""

    weights: tuple[tuple[float, ...], ...]
    bias: tuple[float, ...]

    @classmethod
    def identity(cls) -> CalibrationMap:
        n = len(CLASSES)
        return cls(tuple(tuple(1.0 if i == j else 0.0 for j in range(n)) for i in range(n)), (0.0,) * n)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        # Explicit sums in a fixed order (no BLAS): a row's result does not depend on the batch.
        logs = np.log(np.clip(raw.astype(np.float64), EPS, 1.0))
        weights = np.asarray(self.weights, dtype=np.float64)
        logits = np.empty_like(logs)
        for j in range(weights.shape[0]):
            acc = np.full(len(logs), self.bias[j], dtype=np.float64)
            for k in range(weights.shape[1]):
                acc = acc + logs[:, k] * weights[j, k]
            logits[:, j] = acc
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probs = exp / exp.sum(axis=1, keepdims=True)
        # Never exactly 0 or 1: a threshold of 1.0 then always means "close nothing".
        return np.clip(probs, EPS, 1.0 - EPS)

    def to_json(self) -> dict[str, Any]:
        return {"weights": [list(r) for r in self.weights], "bias": list(self.bias)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CalibrationMap:
        return cls(tuple(tuple(float(x) for x in r) for r in data["weights"]), tuple(float(x) for x in data["bias"]))


@dataclass(frozen=True)
class Calibration:
    """Two calibration maps, fitted out-of-fold: one for cases of organisations the model has
    history for, one for organisations it has never seen (their scores are less certain).

    The decision rule (`decide`) picks the grade with the highest log-probability plus a per-grade
    bias of the case's regime; the biases are fitted on out-of-fold predictions of the training data
    to maximise macro-F1 (zeros: plain argmax). They move the predicted grade only: the probabilities
    stay calibrated.
    """

    known: CalibrationMap
    unseen: CalibrationMap
    decision_known: tuple[float, ...] = (0.0,) * len(CLASSES)
    decision_unseen: tuple[float, ...] = (0.0,) * len(CLASSES)

    def apply(self, raw: np.ndarray, x: np.ndarray) -> np.ndarray:
        known = org_known(x)
        out = self.unseen.apply(raw)
        if known.any():
            out[known] = self.known.apply(raw[known])
        return out

    def decide(self, probs: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Predicted grade index per row of calibrated `probs` (feature rows `x` give the regime)."""
        return decide(probs, org_known(x), self.decision_known, self.decision_unseen)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "matrix_scaling_by_org_regime",
            "known": self.known.to_json(),
            "unseen": self.unseen.to_json(),
            "decision": {
                "rule": "argmax(log p + bias of the regime)",
                "known": list(self.decision_known),
                "unseen": list(self.decision_unseen),
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        decision = data["decision"]
        return cls(
            CalibrationMap.from_json(data["known"]),
            CalibrationMap.from_json(data["unseen"]),
            tuple(float(b) for b in decision["known"]),
            tuple(float(b) for b in decision["unseen"]),
        )


def decide(
    probs: np.ndarray, known: np.ndarray, bias_known: tuple[float, ...], bias_unseen: tuple[float, ...]
) -> np.ndarray:
    logs = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0))
    bias = np.where(np.asarray(known)[:, None], np.asarray(bias_known), np.asarray(bias_unseen))
    return np.asarray((logs + bias).argmax(axis=1), dtype=np.int64)


def merge_boosters(boosters: list[xgb.Booster]) -> xgb.Booster:
    """One booster whose margin is the mean of the given boosters' margins.

    Every tree of every booster is kept, its leaf values divided by the number of boosters, so
    prediction and TreeSHAP `pred_contribs` of the merged booster are exactly those of the average
    (up to float32 rounding), with nothing else to load or explain. The boosters must share their
    intercepts (`base_score`), which holds when they are trained on the same labels and weights.
    """
    docs = [json.loads(bytes(b.save_raw(raw_format="json"))) for b in boosters]
    if len({json.dumps(d["learner"]["learner_model_param"], sort_keys=True) for d in docs}) != 1:
        raise ValueError("boosters to merge must share base_score, classes and features")
    share = len(docs)
    trees: list[dict[str, Any]] = []
    tree_info: list[int] = []
    for doc in docs:
        model = doc["learner"]["gradient_booster"]["model"]
        for tree in model["trees"]:
            leaves = [child == -1 for child in tree["left_children"]]
            tree["split_conditions"] = [v / share if leaf else v for v, leaf in zip(tree["split_conditions"], leaves, strict=True)]
            tree["base_weights"] = [v / share for v in tree["base_weights"]]
            tree["id"] = len(trees)
            trees.append(tree)
        tree_info.extend(model["tree_info"])
    merged = docs[0]
    model = merged["learner"]["gradient_booster"]["model"]
    per_round = int(merged["learner"]["learner_model_param"]["num_class"]) or 1
    model["trees"] = trees
    model["tree_info"] = tree_info
    model["gbtree_model_param"]["num_trees"] = str(len(trees))
    model["iteration_indptr"] = list(range(0, len(trees) + 1, per_round))
    booster = xgb.Booster(params={"nthread": 1})
    booster.load_model(bytearray(json.dumps(merged).encode()))
    return booster


@dataclass(frozen=True)
class Bundle:
    booster: xgb.Booster
    stats: HistoryStats
    calibration: Calibration
    nthread: int = 1


def dump(bundle: Bundle) -> bytes:
    raw = bytes(bundle.booster.save_raw(raw_format="ubj"))
    return canonical_json(
        {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "classes": [c.value for c in CLASSES],
            "feature_names": list(FEATURE_NAMES),
            "history": bundle.stats.to_json(),
            "calibration": bundle.calibration.to_json(),
            "booster_ubj_base64": base64.b64encode(raw).decode(),
        }
    )


class ArtifactError(ValueError):
    pass


def load(data: bytes, nthread: int = 1) -> Bundle:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ArtifactError(f"model artifact is not JSON: {exc}") from exc
    if doc.get("format") != FORMAT:
        raise ArtifactError(f"model artifact format {doc.get('format')!r} is not {FORMAT!r}")
    if doc.get("feature_names") != list(FEATURE_NAMES) or doc.get("classes") != [c.value for c in CLASSES]:
        raise ArtifactError(
            "model artifact was trained with a different feature schema than this Signoff version; "
            "retrain it with `signoff model train`"
        )
    booster = xgb.Booster(params={"nthread": nthread})
    booster.load_model(bytearray(base64.b64decode(doc["booster_ubj_base64"])))
    return Bundle(
        booster=booster,
        stats=HistoryStats.from_json(doc["history"]),
        calibration=Calibration.from_json(doc["calibration"]),
        nthread=nthread,
    )
