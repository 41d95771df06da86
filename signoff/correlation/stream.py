"""Stream an OCSF file through the correlator in bounded chunks: a batch per case per chunk.

Memory stays bounded by `chunk_alerts` whatever the file size (400,000+ alerts), and each chunk
gives one batch per case: exactly what one signal-with-start carries. Every line lands in exactly
one place: a case batch, `duplicates` (uid already seen in this stream), or `rejected`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from signoff.correlation.correlator import Correlator, annotate
from signoff.models import Alert
from signoff.sources import Rejected
from signoff.sources.ocsf import iter_ocsf_raw

CHUNK_ALERTS = 20_000


@dataclass
class CaseBatch:
    case_id: str
    opened: bool  # the case was opened in this chunk (its first alert is in `alerts`)
    alerts: list[Alert] = field(default_factory=list)  # `joined_because` set
    raw: list[str] = field(default_factory=list)  # the input lines, one per alert


@dataclass
class Chunk:
    batches: dict[str, CaseBatch]  # case id → batch, in order of first appearance
    rejected: list[Rejected]
    duplicates: int
    lines: int

    @property
    def accepted(self) -> int:
        return sum(len(b.alerts) for b in self.batches.values())


def iter_chunks(
    path: str | Path, correlator: Correlator, *, chunk_alerts: int = CHUNK_ALERTS
) -> Iterator[Chunk]:
    """Parse + correlate `path`, yielding a `Chunk` every `chunk_alerts` lines (and at the end)."""
    chunk = Chunk(batches={}, rejected=[], duplicates=0, lines=0)
    for item, text in iter_ocsf_raw(path):
        chunk.lines += 1
        if isinstance(item, Rejected):
            chunk.rejected.append(item)
        else:
            assignment = correlator.assign(item)
            if assignment.duplicate:
                chunk.duplicates += 1
            else:
                batch = chunk.batches.get(assignment.case_id)
                if batch is None:
                    batch = chunk.batches[assignment.case_id] = CaseBatch(
                        assignment.case_id, assignment.opened
                    )
                batch.alerts.append(annotate(item, assignment))
                batch.raw.append(text)
        if chunk.lines >= chunk_alerts:
            yield chunk
            chunk = Chunk(batches={}, rejected=[], duplicates=0, lines=0)
    if chunk.lines:
        yield chunk
