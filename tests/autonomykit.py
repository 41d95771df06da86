"""Helpers for autonomy / drift / model-lifecycle tests: an isolated model store, small real models
trained on the committed GUIDE slice (tests/data/guide_slice.csv, see its NOTICE), held-out incidents."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from signoff.models import Alert, CaseInput
from signoff.sources.guide import GuideIncident, read_guide

SLICE = Path(__file__).parent / "data" / "guide_slice.csv"


@cache
def graded() -> list[GuideIncident]:
    return [i for i in read_guide(SLICE).incidents if i.grade is not None]


def split() -> tuple[list[GuideIncident], list[GuideIncident]]:
    """(train, held out): every other graded incident, in file order."""
    incidents = graded()
    return incidents[0::2], incidents[1::2]


def train_small(incidents: list[GuideIncident], seed: int = 7, rounds: int = 60) -> str:
    """Train and store a small real model (+ drift reference) in the current SIGNOFF_HOME; its id."""
    from signoff.autonomy.retrain import labelled, train_candidate
    from signoff.scoring.train import TrainParams

    cases = labelled([(i.case_id, i.alerts, i.grade) for i in incidents if i.grade is not None])
    model_id, _ = train_candidate(cases, TrainParams(seed=seed, rounds=rounds, folds=3), "guide_slice (test)")
    return model_id


def strip_verdicts(alerts: tuple[Alert, ...]) -> tuple[Alert, ...]:
    """The injected drift: a connector update stops sending the evidence's verdict fields."""
    dropped = ("last_verdict", "suspicion_level")
    return tuple(
        a.model_copy(update={"entities": tuple(
            e.model_copy(update={"attributes": {k: v for k, v in e.attributes.items() if k not in dropped}})
            for e in a.entities)})
        for a in alerts
    )


def case_of(incident: GuideIncident, alert_type: str, prefix: str, alerts: tuple[Alert, ...] | None = None) -> CaseInput:
    return CaseInput(case_id=f"{prefix}-{incident.case_id}", alert_type=alert_type, severity="medium",
                     title=incident.alerts[0].title, alerts=alerts if alerts is not None else incident.alerts)


@cache
def _small_model_files() -> tuple[str, bytes, dict, dict]:  # type: ignore[type-arg]
    from signoff.autonomy.drift import build_reference
    from signoff.autonomy.retrain import labelled
    from signoff.scoring.train import TrainParams, train

    incidents, _ = split()
    cases = labelled([(i.case_id, i.alerts, i.grade) for i in incidents if i.grade is not None])
    trained = train(cases, TrainParams(rounds=30, folds=3), {"name": "guide_slice (test)"})
    reference = build_reference(cases.alerts, trained.manifest["oof"]["benign_confidence"], trained.model_id,
                                "guide_slice (test)")
    return trained.model_id, trained.artifact, trained.manifest, reference


def install_small_model() -> str:
    """A small real model (trained once per test process) stored and made active in the current
    SIGNOFF_HOME's model store: tests that only need *a* score do not depend on the shipped model."""
    from signoff.autonomy.drift import save_reference
    from signoff.scoring import model_store

    model_id, blob, manifest, reference = _small_model_files()
    model_store.save(model_id, blob, manifest)
    save_reference(model_id, reference)
    if model_store.active_model_id() != model_id:
        model_store.promote(model_id, "test", "test model")
    return model_id
