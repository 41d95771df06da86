"""GUIDE anonymises alert titles to numbers: a case titled "5" told an analyst nothing (docs12)."""

from __future__ import annotations

from pathlib import Path

from signoff.ingest import guide_case_title
from signoff.sources.guide import read_guide

DEMO = Path(__file__).resolve().parents[1] / "signoff" / "data" / "guide_demo.csv"


def test_guide_cases_are_titled_by_category_and_anonymised_ids() -> None:
    incidents = read_guide(DEMO).incidents[:50]
    assert incidents
    for incident in incidents:
        title = guide_case_title(incident)
        first = incident.alerts[0]
        assert first.title.isdigit()  # what made the old title unreadable
        assert title.startswith(incident.category) and f"GUIDE alert title {first.title}" in title
        assert f"detector {first.rule}" in title
        if len(incident.alerts) > 1:
            assert f"+{len(incident.alerts) - 1} more alert(s)" in title


def test_a_real_title_is_kept() -> None:
    incident = read_guide(DEMO).incidents[0]
    first = incident.alerts[0].model_copy(update={"title": "Suspicious inbox rule"})
    named = incident.model_copy(update={"alerts": (first, *incident.alerts[1:])})
    assert guide_case_title(named) == "Suspicious inbox rule"
