"""Score a case: alerts → features → xgboost → calibrated probabilities + TreeSHAP explanation.

Deterministic: the booster runs single-threaded, the calibration is plain float64 numpy, so the
same alerts and the same model id give the same bytes in any process. A model is loaded once per
process (per model id) and shared; prediction is serialised by a lock (it is microseconds).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np
import xgboost as xgb

from signoff.models import Alert, Contribution, ScoreResult
from signoff.scoring import artifact, model_store, recorded_vector
from signoff.scoring.artifact import Bundle
from signoff.scoring.features import CLASSES, FEATURE_NAMES, SCHEMA_VERSION, vector

TOP_CONTRIBUTIONS = 8
FEATURE_SCHEMA = recorded_vector.schema_id(SCHEMA_VERSION, FEATURE_NAMES)

_cache: dict[str, Scorer] = {}
_cache_lock = threading.Lock()


class Scorer:
    def __init__(self, model_id: str, bundle: Bundle) -> None:
        self.model_id = model_id
        self.bundle = bundle
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_id: str | None = None) -> Scorer:
        """The scorer for `model_id`; None means the active model (else the shipped default).

        Cached per process: a worker loads each model once.
        """
        resolved = model_store.resolve(model_id) if model_id else model_store.active_model_id()
        with _cache_lock:
            scorer = _cache.get(resolved)
            if scorer is None:
                blob = model_store.read_artifact(resolved)
                scorer = cls(resolved, artifact.load(blob))
                _cache[resolved] = scorer
            return scorer

    @classmethod
    def from_bytes(cls, blob: bytes) -> Scorer:
        return cls(artifact.sha256(blob), artifact.load(blob))

    def features(self, alerts: Sequence[Alert]) -> np.ndarray:
        return vector(alerts, self.bundle.stats)

    def _dmatrix(self, x: np.ndarray) -> xgb.DMatrix:
        return xgb.DMatrix(x, feature_names=list(FEATURE_NAMES), nthread=self.bundle.nthread)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n, 3) for feature rows `x` (float32)."""
        with self._lock:
            raw = self.bundle.booster.inplace_predict(np.ascontiguousarray(x, dtype=np.float32))
        raw = np.asarray(raw, dtype=np.float64).reshape(len(x), len(CLASSES))
        return self.bundle.calibration.apply(raw, x)

    def contributions(self, x: np.ndarray, class_index: int) -> list[Contribution]:
        with self._lock:
            contribs = self.bundle.booster.predict(self._dmatrix(x), pred_contribs=True)
        values = np.asarray(contribs).reshape(len(CLASSES), len(FEATURE_NAMES) + 1)[class_index, :-1]
        order = sorted(range(len(FEATURE_NAMES)), key=lambda i: (-abs(float(values[i])), FEATURE_NAMES[i]))
        return [
            Contribution(feature=FEATURE_NAMES[i], value=float(x[0, i]), contribution=float(values[i]))
            for i in order[:TOP_CONTRIBUTIONS]
            if values[i] != 0.0
        ]

    def result(self, x: np.ndarray, probs: np.ndarray, explain: bool = True) -> ScoreResult:
        predicted = int(self.bundle.calibration.decide(probs.reshape(1, -1), x.reshape(1, -1))[0])
        raw = np.ascontiguousarray(x, dtype="<f4").tobytes()  # little-endian on every machine
        return ScoreResult(
            model_id=self.model_id,
            feature_hash=hashlib.sha256(raw).hexdigest(),
            feature_vector=recorded_vector.encode(raw),
            feature_schema=FEATURE_SCHEMA,
            probabilities={c.value: float(probs[i]) for i, c in enumerate(CLASSES)},
            predicted=CLASSES[predicted],
            confidence=float(probs[predicted]),
            benign_confidence=float(1.0 - probs[0]),
            contributions=tuple(self.contributions(x.reshape(1, -1), predicted)) if explain else (),
        )

    def rescore(self, feature_vector: str) -> ScoreResult:
        """The score of a recorded feature vector (`ScoreResult.feature_vector`): an auditor's check
        that the recorded probabilities come from this model and these features."""
        x = np.frombuffer(recorded_vector.decode(feature_vector), dtype="<f4").astype(np.float32).reshape(1, -1)
        if x.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"the vector has {x.shape[1]} features; this model reads {len(FEATURE_NAMES)}")
        return self.result(x[0], self.probabilities(x)[0])

    def score(self, alerts: Sequence[Alert]) -> ScoreResult:
        x = self.features(alerts).reshape(1, -1)
        return self.result(x[0], self.probabilities(x)[0])

    def score_many(self, cases: Sequence[Sequence[Alert]], explain: bool = False) -> list[ScoreResult]:
        """Score many cases in one batch (evaluation). Each row's numbers equal `score`'s."""
        if not cases:
            return []
        return self.score_rows(np.vstack([self.features(alerts) for alerts in cases]), explain)

    def score_rows(self, x: np.ndarray, explain: bool = False) -> list[ScoreResult]:
        """Score feature rows `x` (from `features`) in one batch."""
        probs = self.probabilities(x)
        return [self.result(x[i], probs[i], explain) for i in range(len(x))]


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
