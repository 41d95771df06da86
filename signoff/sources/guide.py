"""Microsoft GUIDE evidence rows → one case per incident (`OrgId` + `IncidentId`).

GUIDE (arXiv:2407.09017, CDLA-Permissive-2.0) has one row per evidence item: an incident has
several alerts, an alert has several evidence rows. Identifiers are anonymised integers and each
identifier column uses one anonymised value to mean "no value" (`SENTINELS`); those never become
entity values or attributes.

Every input row lands in exactly one incident or in `rejected` with a specific reason.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from signoff.models import Alert, Entity, Verdict
from signoff.sources import Rejected

GUIDE_COLUMNS: tuple[str, ...] = (
    "Id", "OrgId", "IncidentId", "AlertId", "Timestamp", "DetectorId", "AlertTitle", "Category",
    "MitreTechniques", "IncidentGrade", "ActionGrouped", "ActionGranular", "EntityType",
    "EvidenceRole", "DeviceId", "Sha256", "IpAddress", "Url", "AccountSid", "AccountUpn",
    "AccountObjectId", "AccountName", "DeviceName", "NetworkMessageId", "EmailClusterId",
    "RegistryKey", "RegistryValueName", "RegistryValueData", "ApplicationId", "ApplicationName",
    "OAuthApplicationId", "ThreatFamily", "FileName", "FolderPath", "ResourceIdName", "ResourceType",
    "Roles", "OSFamily", "OSVersion", "AntispamDirection", "SuspicionLevel", "LastVerdict",
    "CountryCode", "State", "City", "Usage",
)  # fmt: skip
REQUIRED_COLUMNS: tuple[str, ...] = (
    "OrgId", "IncidentId", "AlertId", "Timestamp", "DetectorId", "AlertTitle", "Category",
    "IncidentGrade", "EntityType", "EvidenceRole",
)  # fmt: skip

# The anonymised value GUIDE uses for "absent" in each identifier column (its most frequent value).
SENTINELS: dict[str, str] = {
    "DeviceId": "98799", "Sha256": "138268", "IpAddress": "360606", "Url": "160396",
    "AccountSid": "441377", "AccountUpn": "673934", "AccountObjectId": "425863",
    "AccountName": "453297", "DeviceName": "153085", "NetworkMessageId": "529644",
    "RegistryKey": "1631", "RegistryValueName": "635", "RegistryValueData": "860",
    "ApplicationId": "2251", "ApplicationName": "3421", "OAuthApplicationId": "881",
    "FileName": "289573", "FolderPath": "117668", "ResourceIdName": "3586", "OSFamily": "5",
    "OSVersion": "66", "CountryCode": "242", "State": "1445", "City": "10630",
}  # fmt: skip

ENTITY_TYPES: dict[str, str] = {
    "Machine": "host", "User": "account", "Ip": "ip", "Url": "url", "File": "file",
    "Process": "process", "Mailbox": "mailbox", "MailMessage": "mail_message",
    "MailCluster": "mail_cluster", "CloudApplication": "cloud_app",
    "CloudLogonRequest": "cloud_logon_request", "CloudLogonSession": "cloud_logon_session",
    "RegistryKey": "registry_key", "RegistryValue": "registry_value", "Malware": "malware",
    "AzureResource": "cloud_resource", "AmazonResource": "cloud_resource",
    "GoogleCloudResource": "cloud_resource", "OAuthApplication": "oauth_app",
    "SecurityGroup": "security_group", "ActiveDirectoryDomain": "ad_domain",
    "GenericEntity": "generic", "BlobContainer": "blob_container", "Blob": "blob",
    "Nic": "nic", "IoTDevice": "iot_device",
}  # fmt: skip

# Which column identifies an entity of each type (first one holding a real value wins).
VALUE_COLUMNS: dict[str, tuple[str, ...]] = {
    "host": ("DeviceId", "DeviceName"),
    "account": ("AccountSid", "AccountObjectId", "AccountUpn", "AccountName"),
    "mailbox": ("AccountUpn", "AccountObjectId", "AccountSid", "AccountName"),
    "cloud_logon_request": ("AccountObjectId", "AccountUpn", "IpAddress"),
    "cloud_logon_session": ("AccountObjectId", "AccountUpn", "IpAddress"),
    "ip": ("IpAddress",),
    "url": ("Url",),
    "file": ("Sha256", "FileName"),
    "process": ("Sha256", "FileName"),
    "mail_message": ("NetworkMessageId",),
    "mail_cluster": ("EmailClusterId",),
    "cloud_app": ("ApplicationId", "ApplicationName"),
    "oauth_app": ("OAuthApplicationId", "ApplicationName"),
    "registry_key": ("RegistryKey",),
    "registry_value": ("RegistryValueName", "RegistryKey"),
    "cloud_resource": ("ResourceIdName",),
    "malware": ("ThreatFamily",),
}

# Evidence columns kept as entity attributes (source-neutral names the scorer reads).
ATTRIBUTE_COLUMNS: dict[str, str] = {
    "SuspicionLevel": "suspicion_level", "LastVerdict": "last_verdict", "ThreatFamily": "threat_family",
    "OSFamily": "os_family", "OSVersion": "os_version", "CountryCode": "country_code",
    "State": "state", "City": "city", "AntispamDirection": "antispam_direction", "Roles": "roles",
    "ResourceType": "resource_type", "DeviceId": "device_id", "DeviceName": "device_name",
    "Sha256": "sha256", "IpAddress": "ip_address", "Url": "url", "AccountSid": "account_sid",
    "AccountUpn": "account_upn", "AccountObjectId": "account_object_id", "AccountName": "account_name",
    "NetworkMessageId": "network_message_id", "EmailClusterId": "email_cluster_id",
    "RegistryKey": "registry_key", "RegistryValueName": "registry_value_name",
    "RegistryValueData": "registry_value_data", "ApplicationId": "application_id",
    "ApplicationName": "application_name", "OAuthApplicationId": "oauth_application_id",
    "FileName": "file_name", "FolderPath": "folder_path", "ResourceIdName": "resource_id_name",
    "ActionGrouped": "action_grouped", "ActionGranular": "action_granular",
}  # fmt: skip

ROLES = {"impacted": "impacted", "related": "related", "": ""}
MAX_FIELD_CHARS = 8192  # GUIDE values are short ids and titles; a bigger field is a payload dump
MAX_RECORD_CHARS = 2000  # how much of each field of a rejected row the dead letter keeps
CSV_FIELD_LIMIT = 64 << 20  # what the csv module may read in one field before giving up
GZIP_MAGIC = b"\x1f\x8b"


class GuideFormatError(ValueError):
    """The file is not a GUIDE CSV at all (no rows can be read from it)."""


class GuideIncident(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    case_id: str
    org_id: str
    incident_id: str
    category: str
    alerts: tuple[Alert, ...]
    grade: Verdict | None
    first_seen: datetime
    last_seen: datetime
    evidence_rows: int


class GuideRead(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    incidents: list[GuideIncident]
    rejected: list[Rejected]
    rows: int  # data rows read (accepted + rejected)

    @property
    def accepted(self) -> int:
        return sum(i.evidence_rows for i in self.incidents)


def case_id_for(org_id: str, incident_id: str) -> str:
    return f"guide-{org_id}-{incident_id}"


def alert_uid_for(org_id: str, alert_id: str) -> str:
    return f"guide-{org_id}-{alert_id}"


def _entity_type(raw: str) -> str:
    if raw in ENTITY_TYPES:
        return ENTITY_TYPES[raw]
    out = []
    for i, ch in enumerate(raw):
        if ch.isupper() and i and not raw[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _real(column: str, value: str) -> bool:
    return value != "" and SENTINELS.get(column) != value


def _parse_time(raw: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass
class _Row:
    line: int
    record: dict[str, str]
    time: datetime
    grade: Verdict | None


@dataclass
class _IncidentRows:
    org_id: str
    incident_id: str
    grade: Verdict | None
    grade_line: int
    rows: list[_Row] = field(default_factory=list)


def _validate(record: dict[str, str]) -> tuple[str | None, datetime | None, Verdict | None]:
    """(reason, time, grade): reason is None when the row is acceptable."""
    for column, value in record.items():
        if len(value) > MAX_FIELD_CHARS:
            return f"field {column} is {len(value)} characters, over the {MAX_FIELD_CHARS} limit", None, None
    for column in ("OrgId", "IncidentId", "AlertId"):
        value = record.get(column, "").strip()
        if not value:
            return f"missing {column}", None, None
        if not (value.isascii() and value.isdigit()):
            return f"{column} {value[:64]!r} is not a non-negative integer id", None, None
    for column in ("DetectorId", "EntityType"):
        if not record.get(column, "").strip():
            return f"missing {column}", None, None
    raw_time = record.get("Timestamp", "")
    if not raw_time.strip():
        return "missing Timestamp", None, None
    time = _parse_time(raw_time)
    if time is None:
        return (
            f"bad Timestamp {raw_time!r}: expected ISO 8601 with a zone, like 2024-06-11T03:53:30.000Z",
            None,
            None,
        )
    raw_grade = record.get("IncidentGrade", "").strip()
    grade: Verdict | None = None
    if raw_grade:
        try:
            grade = Verdict(raw_grade)
        except ValueError:
            return (
                f"unknown IncidentGrade {raw_grade!r}: expected TruePositive, BenignPositive, "
                "FalsePositive or empty",
                None,
                None,
            )
    role = record.get("EvidenceRole", "").strip().lower()
    if role not in ROLES:
        return f"unknown EvidenceRole {record.get('EvidenceRole')!r}: expected Impacted or Related", None, None
    return None, time, grade


def _records(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, str], str | None]]:
    """(line, record, reason) per data row; reason set for rows that are malformed as CSV."""
    # Oversized fields are rejected by `_validate` with their size; csv's own 128 KiB limit would
    # abort the read mid-row instead (a huge quoted field then splits into several "rows").
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise GuideFormatError("the file is empty: expected a GUIDE CSV header line") from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise GuideFormatError(
            f"not a GUIDE CSV: header lacks {', '.join(missing)} (expected the 46 GUIDE columns, "
            "starting with Id,OrgId,IncidentId,AlertId,Timestamp)"
        )
    previous_end = reader.line_num
    while True:
        line = previous_end + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit(): reject it, keep reading
            previous_end = reader.line_num
            yield line, {}, f"unreadable CSV row: {exc}"
            continue
        previous_end = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            yield line, {}, "empty row"
            continue
        if len(fields) != len(header):
            record = {header[i] if i < len(header) else f"_extra{i}": v for i, v in enumerate(fields)}
            yield line, record, f"wrong column count: expected {len(header)} fields, got {len(fields)}"
            continue
        yield line, dict(zip(header, fields, strict=True)), None


def _entity(record: dict[str, str]) -> Entity:
    kind = _entity_type(record.get("EntityType", "").strip())
    value = ""
    for column in VALUE_COLUMNS.get(kind, ()):
        if _real(column, record.get(column, "")):
            value = record[column]
            break
    attributes = {
        name: record[column].strip()
        for column, name in ATTRIBUTE_COLUMNS.items()
        if _real(column, record.get(column, "").strip())
    }
    attributes["evidence_id"] = record.get("Id", "")
    attributes["guide_entity_type"] = record.get("EntityType", "").strip()
    role = ROLES[record.get("EvidenceRole", "").strip().lower()]
    return Entity(type=kind, value=value, role=role, attributes=attributes)


def _mitre(raw: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for part in raw.split(";"):
        if part.strip():
            seen.setdefault(part.strip(), None)
    return tuple(seen)


def _build(group: _IncidentRows) -> GuideIncident:
    by_alert: dict[str, list[_Row]] = {}
    for row in group.rows:
        by_alert.setdefault(row.record.get("AlertId", "").strip(), []).append(row)
    alerts = []
    for alert_id, rows in by_alert.items():
        first = rows[0].record
        alerts.append(
            Alert(
                uid=alert_uid_for(group.org_id, alert_id),
                source="guide",
                time=min(r.time for r in rows),
                title=first.get("AlertTitle", "").strip(),
                rule=first.get("DetectorId", "").strip(),
                category=first.get("Category", "").strip(),
                mitre=_mitre(first.get("MitreTechniques", "")),
                entities=tuple(_entity(r.record) for r in rows),
                attributes={
                    "org_id": group.org_id,
                    "incident_id": group.incident_id,
                    "alert_id": alert_id,
                    "evidence_rows": str(len(rows)),
                },
            )
        )
    alerts.sort(key=lambda a: (a.time, a.uid))
    categories = Counter(a.category for a in alerts)
    category = sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    times = [r.time for r in group.rows]
    return GuideIncident(
        case_id=case_id_for(group.org_id, group.incident_id),
        org_id=group.org_id,
        incident_id=group.incident_id,
        category=category,
        alerts=tuple(alerts),
        grade=group.grade,
        first_seen=min(times),
        last_seen=max(times),
        evidence_rows=len(group.rows),
    )


def _row_digest(record: dict[str, str]) -> bytes:
    """What makes two rows exact duplicates, in 16 bytes (the rows themselves would double memory)."""
    return hashlib.blake2b("\x1f".join(record.values()).encode(), digest_size=16).digest()


def _slim(record: dict[str, str]) -> dict[str, str]:
    """An accepted row without its empty and "no value" fields, which nothing downstream reads:
    most GUIDE identifier columns hold their sentinel, so this keeps a large read in memory."""
    return {k: v for k, v in record.items() if v and SENTINELS.get(k) != v}


def parse_guide_lines(lines: Iterable[str]) -> GuideRead:
    incidents: dict[tuple[str, str], _IncidentRows] = {}
    rejected: list[Rejected] = []
    seen_rows: dict[bytes, int] = {}
    total = 0
    for line, record, reason in _records(lines):
        total += 1
        group: _IncidentRows | None = None
        time: datetime | None = None
        grade: Verdict | None = None
        if reason is None:
            reason, time, grade = _validate(record)
        if reason is None:
            key = _row_digest(record)
            if key in seen_rows:
                reason = f"exact duplicate of line {seen_rows[key]}"
            else:
                seen_rows[key] = line
        if reason is None:
            org_id, incident_id = record["OrgId"].strip(), record["IncidentId"].strip()
            group = incidents.get((org_id, incident_id))
            if group is None:
                group = incidents[(org_id, incident_id)] = _IncidentRows(org_id, incident_id, grade, line)
            elif grade != group.grade:
                reason = (
                    f"IncidentGrade {grade.value if grade else 'empty'} conflicts with "
                    f"{group.grade.value if group.grade else 'empty'} set on line {group.grade_line} "
                    f"for incident {org_id}/{incident_id}"
                )
        if reason is not None or group is None or time is None:
            kept = {k: v[:MAX_RECORD_CHARS] for k, v in record.items()}
            rejected.append(Rejected(line=line, record=kept, reason=reason or "unreadable row"))
            continue
        group.rows.append(_Row(line, _slim(record), time, grade))
    del seen_rows
    built = []
    for group in incidents.values():
        built.append(_build(group))
        group.rows = []  # the built incident holds what is needed: a large read keeps one copy, not two
    return GuideRead(incidents=built, rejected=rejected, rows=total)


def read_guide(path: str | Path) -> GuideRead:
    """Read a GUIDE CSV file, plain or gzipped (`.csv.gz`, recognised by its content).

    Raises `GuideFormatError` when the file is not GUIDE at all."""
    path = Path(path)
    gzipped = False
    try:
        with path.open("rb") as probe:
            gzipped = probe.read(2) == GZIP_MAGIC
        if gzipped:
            with gzip.open(path, "rt", newline="", encoding="utf-8-sig") as text:
                return parse_guide_lines(text)
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return parse_guide_lines(handle)
    except FileNotFoundError:
        raise GuideFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise GuideFormatError(f"{path} is a directory: pass a GUIDE CSV file") from None
    except UnicodeDecodeError as exc:
        what = "its gzipped content is" if gzipped else "it is"
        raise GuideFormatError(f"{path}: {what} not UTF-8 text ({exc}); export the CSV as UTF-8") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise GuideFormatError(f"{path} is a damaged gzip file ({exc}); compress the CSV again") from None
