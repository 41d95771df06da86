"""The shared AIT scenario (45,544 real alerts): every alert accounted for once, stable case ids,
and the correlation targets (>= 100 alerts per case, <= 1% of cases mixing attack and noise)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from signoff.alertstore import AlertStore
from signoff.correlation import Correlator, load_rules
from signoff.correlation.evaluate import evaluate, load_labels
from signoff.models import Alert
from signoff.sources import Rejected
from signoff.sources.ocsf import iter_ocsf

AIT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ait"
DATA = AIT / "russellmitchell.ocsf.jsonl.gz"
LABELS = AIT / "russellmitchell.labels.csv.gz"
LINES = 45_544


@pytest.fixture(scope="module")
def items() -> list[Alert | Rejected]:
    if not DATA.is_file() or not LABELS.is_file():
        pytest.fail(f"the AIT scenario is missing under {AIT}: CI must provide ../shared/data/ait")
    return list(iter_ocsf(DATA))


def test_every_line_is_an_alert_or_a_rejection(items: list[Alert | Rejected]) -> None:
    accepted = [i for i in items if isinstance(i, Alert)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert len(accepted) + len(rejected) == len(items) == LINES
    assert rejected == []  # the shared scenario is clean
    assert len({a.uid for a in accepted}) == LINES


def test_every_alert_joins_exactly_one_case_with_stable_ids(items: list[Alert | Rejected]) -> None:
    alerts = [i for i in items if isinstance(i, Alert)]
    one, two = Correlator(load_rules()), Correlator(load_rules())
    first = [one.assign(a) for a in alerts]
    second = [two.assign(a) for a in alerts]
    assert [a.case_id for a in first] == [a.case_id for a in second]
    assert [a.reason for a in first] == [a.reason for a in second]
    assert not any(a.duplicate for a in first)
    sizes = Counter(a.case_id for a in first)
    assert sum(sizes.values()) == LINES
    assert sum(a.opened for a in first) == len(sizes)  # one opening alert per case
    assert all(a.reason for a in first)


def test_correlation_targets_on_the_scenario(items: list[Alert | Rejected]) -> None:
    alerts = [i for i in items if isinstance(i, Alert)]
    correlator = Correlator(load_rules())
    pairs = [(a.uid, correlator.assign(a).case_id) for a in alerts]
    m = evaluate(pairs, load_labels(LABELS), lines=len(items), rejected=0)
    assert m["unaccounted"] == 0 and m["double_counted"] == 0 and m["labelled_not_assigned"] == 0
    assert m["alerts_per_case"] >= 100, m
    assert m["mixed_case_share"] <= 0.01, m


def test_store_holds_each_alert_once_even_when_ingested_twice(
    items: list[Alert | Rejected], tmp_path: Path
) -> None:
    alerts = [i for i in items if isinstance(i, Alert)]
    correlator = Correlator(load_rules())
    placed = [(correlator.assign(a).case_id, a, None) for a in alerts]
    with AlertStore(tmp_path / "alerts.db") as store:
        assert store.put_assigned(placed) == LINES
        again = Correlator(load_rules())  # a second ingest of the same file: same cases, nothing new
        assert store.put_assigned([(again.assign(a).case_id, a, None) for a in alerts]) == 0
        assert store.count() == LINES
        by_case = Counter(case for case, _, _ in placed)
        assert sorted(store.case_ids()) == sorted(by_case)
        case_id, size = by_case.most_common(1)[0]
        assert store.count(case_id) == size == len(store.uids(case_id))
        assert dict(store.iter_assignments()) == {a.uid: case for case, a, _ in placed}
