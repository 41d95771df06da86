"""Benchmark inputs: real GUIDE incidents, and synthetic cases for the latency scenarios."""

from __future__ import annotations

import csv
import uuid
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from signoff.models import Alert, AlertBatch, CaseInput, Entity

REPO = Path(__file__).resolve().parents[2]


def guide_path() -> Path:
    """The full GUIDE dev set beside the repository (../shared), else the slice shipped with Signoff."""
    full = REPO.parent / "shared" / "data" / "guide" / "guide_dev.csv"
    if full.exists():
        return full
    return Path(str(resources.files("signoff").joinpath("data/guide_demo.csv")))


def slice_guide(source: Path, incidents: int, out: Path) -> int:
    """Write the evidence rows of the first `incidents` incidents (file order) to `out`.

    Returns how many incidents were written (fewer when the source has fewer).
    """
    keep: set[tuple[str, str]] = set()
    with source.open(newline="") as src, out.open("w", newline="") as dst:
        reader = csv.DictReader(src)
        assert reader.fieldnames is not None
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        for row in reader:
            key = (row.get("OrgId", ""), row.get("IncidentId", ""))
            if key not in keep:
                if len(keep) >= incidents:
                    continue
                keep.add(key)
            writer.writerow(row)
    return len(keep)


def guide_alert_sets(limit: int | None = None) -> list[tuple[Alert, ...]]:
    """The alerts of each GUIDE incident (for the scoring benchmark)."""
    from signoff.sources.guide import read_guide

    read = read_guide(guide_path())
    sets = [incident.alerts for incident in read.incidents if incident.alerts]
    return sets[:limit] if limit else sets


def account_case(tag: str, *, access_key: bool = False) -> tuple[CaseInput, AlertBatch]:
    """A compromised-account case: its playbook runs three low-tier steps, then waits for approval
    of `disable_account` (and `deactivate_access_key` when the case carries a key)."""
    case_id = f"bench-{tag}-{uuid.uuid4().hex[:12]}"
    entities = [Entity(type="account", value=f"user-{case_id}", role="impacted")]
    if access_key:
        entities.append(Entity(type="access_key", value=f"AKIA{uuid.uuid4().hex[:16].upper()}", role="impacted"))
    alert = Alert(
        uid=f"{case_id}-a1", source="bench", time=datetime(2024, 6, 1, 12, 0, tzinfo=UTC),
        title="Suspicious sign-in from an unfamiliar location", rule="bench-R1", category="CredentialAccess",
        severity="high", entities=tuple(entities),
    )
    inp = CaseInput(case_id=case_id, alert_type="compromised_account", severity="high",
                    title="benchmark case", requested_by="signoff-ingest")
    return inp, AlertBatch(case_id=case_id, alerts=(alert,))
