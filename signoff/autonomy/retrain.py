"""Building a candidate model from analysts' verdicts (numeric; activities and tests only).

Deterministic like the scorer's training: the labelled cases are sorted by case id (the latest
verdict of a case wins), the training parameters carry the seed, so the same verdicts (and base
data) give the same model bytes and id. The candidate is stored with its manifest and its drift
reference; it is NOT activated: it scores in shadow until a quorum promotes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from signoff.models import Alert, Verdict
from signoff.scoring.features import CLASSES, org_of
from signoff.scoring.train import LabelledCases, TrainParams, train


def labelled(items: Sequence[tuple[str, tuple[Alert, ...], Verdict]]) -> LabelledCases:
    """(case id, alerts, grade) → training cases, sorted by case id, one per case (the last one given wins)."""
    by_case: dict[str, tuple[tuple[Alert, ...], Verdict]] = {}
    for case_id, alerts, grade in items:
        if alerts:
            by_case[case_id] = (alerts, grade)
    ids = sorted(by_case)
    index = {c: i for i, c in enumerate(CLASSES)}
    return LabelledCases(
        case_ids=ids,
        alerts=[by_case[c][0] for c in ids],
        labels=np.asarray([index[by_case[c][1]] for c in ids], dtype=np.int64),
        orgs=[org_of(by_case[c][0]) for c in ids],
    )


def digest(cases: LabelledCases) -> str:
    """sha256 over (case id, alert uids, label) of the training cases: what the model was made from."""
    h = hashlib.sha256()
    for case_id, alerts, label in zip(cases.case_ids, cases.alerts, cases.labels.tolist(), strict=True):
        h.update(f"{case_id}|{','.join(a.uid for a in alerts)}|{label}\n".encode())
    return h.hexdigest()


def train_candidate(cases: LabelledCases, params: TrainParams, source: str,
                    extra: dict[str, Any] | None = None,
                    trained: dict[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """Train, store (artifact + manifest + drift reference) and return (model id, summary).

    `trained`: who trained it, when and why (`model_store.provenance`), recorded in the manifest."""
    from signoff.autonomy.drift import build_reference, save_reference
    from signoff.scoring import model_store

    if len(cases) < 10 or len(set(cases.labels.tolist())) < 2:
        raise ValueError(f"{len(cases)} labelled cases with {len(set(cases.labels.tolist()))} grades: too few to "
                         "train a candidate (needs at least 10 cases and two grades)")
    data = {"source": source, "sha256": digest(cases), "format": "verdicts", **(extra or {})}
    model = train(cases, params, data)
    model_store.save(model.model_id, model.artifact, model.manifest, trained=trained)
    reference = build_reference(cases.alerts, model.manifest["oof"]["benign_confidence"], model.model_id, source)
    save_reference(model.model_id, reference)
    cv = model.manifest["cv"]
    return model.model_id, {
        "model_sha256": model.model_id,
        "incidents": len(cases),
        "data_sha256": data["sha256"],
        "grades": model.manifest["data"]["grades"],
        "oof_macro_f1": cv["macro_f1"],
        "oof_ece": cv["ece"],
        # None when no threshold keeps the risk budget (too few true positives): nothing to recommend
        "recommended_threshold": cv["threshold"].get("threshold") if cv["threshold"].get("feasible", True) else None,
    }
