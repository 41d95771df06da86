"""SIEM pull: fetch new alerts from Splunk (ES notables) or Elastic Security, hand them to ingest.

The activity maps each SIEM alert to an OCSF Detection Finding (class 2004), writes the batch to
`<SIGNOFF_HOME>/siem/<source>-<time>.jsonl` (a record of exactly what was pulled) and calls the
ordinary ingest (`signoff.ingest.ingest_path(..., "ocsf")`), so SIEM alerts are validated,
deduplicated (the same alert twice never opens two cases) and correlated like any other.
The cursor is the newest alert time seen; queries use `>=` and rely on ingest's deduplication, so
alerts sharing the cursor's millisecond are never lost.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from temporalio import activity

from activities.executors.base import application_error
from connectors.http import ConnectorError

Source = Literal["splunk", "elastic"]
SEVERITY_ID = {"informational": 1, "info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}


class PullRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: Source
    cursor_ms: int | None = None  # newest alert time already handed to ingest (ms since epoch)
    lookback_minutes: int = 60  # first run: how far back to look
    limit: int = 500
    task_queue: str | None = None  # where case workflows run (default: settings.task_queue())


class PullResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str
    fetched: int
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    cases_opened: int = 0
    cases_updated: int = 0
    cursor_ms: int | None = None
    batch_file: str = ""


# ---------------------------------------------------------------- SIEM records → OCSF findings


def _get(source: dict[str, Any], dotted: str) -> Any:
    """Read `a.b.c` from a flattened (`{"a.b.c": v}`) or nested document."""
    if dotted in source:
        return source[dotted]
    node: Any = source
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _ms(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.replace(".", "", 1).isdigit()):
        number = float(value)
        return int(number if number > 1e11 else number * 1000)
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def finding(*, source: str, uid: str, time_ms: int, title: str, rule: str, severity: str, product: str,
            host: str | None = None, user: str | None = None, src_ip: str | None = None,
            dst_ip: str | None = None, tactic: str | None = None) -> dict[str, Any]:
    """One OCSF 1.3 Detection Finding carrying what the SIEM said about the alert."""
    observables = []
    record: dict[str, Any] = {
        "activity_id": 1, "category_uid": 2, "class_uid": 2004, "type_uid": 200401, "status_id": 1,
        "severity_id": SEVERITY_ID.get(severity.lower(), 3), "time": time_ms, "message": title,
        "metadata": {"version": "1.3.0", "uid": uid, "product": {"name": product, "vendor_name": product}},
        "finding_info": {"uid": uid, "title": title, "data_sources": [source],
                         "analytic": {"uid": rule, "name": rule, "type_id": 1, "type": "Rule"}},
    }
    if tactic:
        record["finding_info"]["attacks"] = [{"tactic": {"name": tactic}}]
    if host:
        record["device"] = {"hostname": host, "name": host, "type_id": 0}
        observables.append({"name": "device.hostname", "type_id": 1, "value": host})
    if user:
        record["actor"] = {"user": {"name": user}}
        observables.append({"name": "actor.user.name", "type_id": 4, "value": user})
    for name, ip in (("src_endpoint.ip", src_ip), ("dst_endpoint.ip", dst_ip)):
        if ip:
            observables.append({"name": name, "type_id": 2, "value": ip})
    if observables:
        record["observables"] = observables
    return record


def from_splunk(row: dict[str, Any]) -> dict[str, Any] | None:
    uid, time_ms = row.get("event_id"), _ms(row.get("_time"))
    if not uid or time_ms is None:
        return None
    rule = str(row.get("rule_name") or row.get("search_name") or "splunk-notable")
    return finding(
        source="splunk", uid=f"splunk:{uid}", time_ms=time_ms, title=str(row.get("rule_title") or rule),
        rule=rule, severity=str(row.get("urgency") or row.get("severity") or "medium"), product="Splunk ES",
        host=row.get("dest") or row.get("dest_host"), user=row.get("user"), src_ip=row.get("src"),
        dst_ip=row.get("dest_ip"), tactic=row.get("mitre_tactic"),
    )


def from_elastic(hit: dict[str, Any]) -> dict[str, Any] | None:
    src = hit.get("_source") or {}
    uid, time_ms = hit.get("_id"), _ms(_get(src, "@timestamp"))
    if not uid or time_ms is None:
        return None
    rule = str(_get(src, "kibana.alert.rule.name") or "elastic-rule")
    threat = _get(src, "kibana.alert.rule.threat") or []
    tactic = None
    if isinstance(threat, list) and threat and isinstance(threat[0], dict):
        tactic = (threat[0].get("tactic") or {}).get("name")
    return finding(
        source="elastic", uid=f"elastic:{uid}", time_ms=time_ms, title=str(_get(src, "kibana.alert.reason") or rule),
        rule=str(_get(src, "kibana.alert.rule.uuid") or rule), severity=str(_get(src, "kibana.alert.severity") or "medium"),
        product="Elastic Security", host=_get(src, "host.name"), user=_get(src, "user.name"),
        src_ip=_get(src, "source.ip"), dst_ip=_get(src, "destination.ip"), tactic=tactic,
    )


async def fetch(req: PullRequest, since_ms: int) -> list[dict[str, Any]]:
    """OCSF findings for the SIEM's alerts at or after `since_ms`, oldest first."""
    if req.source == "splunk":
        from connectors.splunk import Splunk

        splunk = Splunk.from_env()
        try:
            rows = await splunk.search(f"search index=notable _time>{since_ms // 1000 - 1}",
                                       earliest=str(since_ms // 1000 - 1), count=req.limit)
        finally:
            await splunk.aclose()
        found = [from_splunk(r) for r in rows]
    else:
        from connectors.elastic import ElasticSecurity

        elastic = ElasticSecurity.from_env()
        since = datetime.fromtimestamp(since_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
        try:
            hits = await elastic.search_alerts({"range": {"@timestamp": {"gte": since}}}, size=req.limit,
                                               sort=[{"@timestamp": {"order": "asc"}}])
        finally:
            await elastic.aclose()
        found = [from_elastic(h) for h in hits]
    findings = [f for f in found if f is not None and f["time"] >= since_ms]
    return sorted(findings, key=lambda f: f["time"])


@activity.defn
async def pull_siem_alerts(req: PullRequest) -> PullResult:
    from signoff import settings
    from signoff.ingest import ingest_path

    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    since = req.cursor_ms if req.cursor_ms is not None else now_ms - req.lookback_minutes * 60_000
    try:
        findings = await fetch(req, since)
    except ConnectorError as exc:
        raise application_error(exc) from None
    if not findings:
        return PullResult(source=req.source, fetched=0, cursor_ms=req.cursor_ms)
    folder = settings.home() / "siem"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    path = folder / f"{req.source}-{stamp}-{activity.info().attempt}.jsonl"
    path.write_text("".join(json.dumps(f, sort_keys=True) + "\n" for f in findings))
    summary = await ingest_path(activity.client(), path, "ocsf", requested_by=f"siem-pull:{req.source}",
                                task_queue=req.task_queue)
    return PullResult(
        source=req.source, fetched=len(findings), accepted=summary.accepted, rejected=summary.rejected,
        duplicates=summary.duplicates, cases_opened=summary.cases_opened, cases_updated=summary.cases_updated,
        cursor_ms=max(f["time"] for f in findings), batch_file=str(path),
    )


ACTIVITIES = [pull_siem_alerts]
