"""Alert sources: parsers that turn external records into source-neutral `Alert`s.

Every parser accounts for every input record: it either lands in an alert/case or in a
`Rejected` entry with a specific reason (the dead-letter file is made from these).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Rejected(BaseModel):
    """One input record a parser refused, and why. `line` is the 1-based line in the input file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    line: int
    record: dict[str, str]
    reason: str


__all__ = ["Rejected"]
