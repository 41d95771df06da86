"""What an ingest signal may carry: alerts in full within a byte budget, under Temporal's 2 MB limit.

An alert's size is set by whoever wrote it (1,000 observables of 1,000 characters fit in one OCSF
line). QA10: three such alerts for one host made the case's signal-with-start 2.7 MB; Temporal
refused it ("Blob data size exceeds limit"), the ingest stopped there, and every later alert of the
file (or of the SIEM pull's window, retried as a whole) was never delivered, run after run.

And a case holds its first 50 alerts in full (its timeline), which its `status` query and its
result return: fifteen ~256 KB alerts for one host, over five ingests, made the case's view 4 MB.
`signoff show`, `signoff approve` and the chat bridge failed on it ("Blob data size exceeds limit"),
and the verdict could never be recorded: the workflow's completion was refused, task after task.

So an alert goes into a case with at most `ALERT_BUDGET` bytes (50 of them stay far below Temporal's
2 MB): a bigger one keeps the entities that fit (a long title and long attribute values are cut
first) and says so in its attributes (`OVERSIZE_ATTRIBUTE`); the alert store keeps the whole record.
A rule name is cut to `RULE_CHARS` (a rule is a detector's id; with no analytic the title stands in).
A signal carries alerts in full only up to `SIGNAL_BUDGET` bytes; the others travel as counts.
Nothing is lost, and every cut is visible in the case's history and audit.
"""

from __future__ import annotations

from collections.abc import Sequence

from signoff.models import Alert

SIGNAL_BUDGET = 1_000_000  # bytes of alerts in full per signal (Temporal refuses payloads over 2 MB)
ALERT_BUDGET = 16_000  # one alert in a case (x 50 in its timeline); ordinary alerts are 1-3 KB
TITLE_CHARS = 1024  # an oversize alert's title, and each attribute value, past this are cut
RULE_CHARS = 256
RULES_BUDGET = 100_000  # the per-rule counts of a batch (rule names are alert content too)
OVERSIZE_ATTRIBUTE = "signoff_oversize"
OTHER_RULES = "(other rules)"


def _size(alert: Alert) -> int:
    return len(alert.model_dump_json())


def fit_alert(alert: Alert) -> Alert:
    """The alert itself, or, when it is over `ALERT_BUDGET` (or its rule over `RULE_CHARS`), a copy
    that fits, with a note of what was cut."""
    size = _size(alert)
    if size <= ALERT_BUDGET and len(alert.rule) <= RULE_CHARS:
        return alert
    cuts: list[str] = []
    update: dict[str, object] = {}
    if len(alert.rule) > RULE_CHARS:
        update["rule"] = alert.rule[:RULE_CHARS]
        cuts.append(f"rule cut from {len(alert.rule)} characters")
    if size > ALERT_BUDGET:
        title = alert.title if len(alert.title) <= TITLE_CHARS else alert.title[:TITLE_CHARS]
        attributes = {k[:TITLE_CHARS]: v[:TITLE_CHARS] for k, v in alert.attributes.items()}
        if title != alert.title:
            cuts.append(f"title cut from {len(alert.title)} characters")
        if attributes != alert.attributes:
            cuts.append("attribute values cut")
        bare = alert.model_copy(update={**update, "title": title, "attributes": attributes, "entities": ()})
        used = _size(bare) + 300  # and the note
        kept = []
        for entity in alert.entities:
            cost = len(entity.model_dump_json()) + 1
            if used + cost > ALERT_BUDGET:
                break
            kept.append(entity)
            used += cost
        if len(kept) < len(alert.entities):
            cuts.append(f"{len(kept)} of its {len(alert.entities)} entities carried into the case")
        update.update(title=title, attributes=attributes, entities=tuple(kept))
    note = f"{size} bytes as delivered: " + "; ".join(cuts) + "; the whole record is in the alert store"
    fitted: Alert = alert.model_copy(update=update)
    return fitted.model_copy(update={"attributes": {**fitted.attributes, OVERSIZE_ATTRIBUTE: note}})


def carried(alerts: Sequence[Alert], at_most: int) -> tuple[Alert, ...]:
    """The first alerts (at most `at_most`) that fit `SIGNAL_BUDGET` together; always at least one."""
    out: list[Alert] = []
    used = 0
    for alert in alerts[:at_most]:
        fitted = fit_alert(alert)
        size = _size(fitted)
        if out and used + size > SIGNAL_BUDGET:
            break
        out.append(fitted)
        used += size
    return tuple(out)


def rule_counts(alerts: Sequence[Alert], sampled: Sequence[Alert]) -> dict[str, int]:
    """Alerts per rule over the batch (rule names cut as `fit_alert` cuts them). Past `RULES_BUDGET`
    (thousands of distinct, long rule names), the rarest rules are counted together under
    `OTHER_RULES`, less the sampled alerts of those rules (the case counts those by their own rule),
    so the case's totals still add up."""
    counts: dict[str, int] = {}
    for alert in alerts:
        rule = alert.rule[:RULE_CHARS]
        counts[rule] = counts.get(rule, 0) + 1
    if sum(len(r) + 16 for r in counts) <= RULES_BUDGET:
        return counts
    kept: dict[str, int] = {}
    used = 0
    for rule, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if used + len(rule) + 16 > RULES_BUDGET - 64:
            break
        kept[rule] = count
        used += len(rule) + 16
    others = sum(c for r, c in counts.items() if r not in kept) - sum(1 for a in sampled if a.rule not in kept)
    if others > 0:
        kept[OTHER_RULES] = others
    return kept
