"""Threat-intel enrichers: VirusTotal (file hashes, URLs, domains) and AbuseIPDB (public IPs).

Each is active only when its key is configured (SIGNOFF_VIRUSTOTAL_API_KEY, SIGNOFF_ABUSEIPDB_API_KEY,
or their _FILE variants); otherwise it returns nothing and calls nobody. Lookups are capped per
case and cached per process (VirusTotal's public API allows ~4 requests a minute). A vendor
failure becomes a fact saying so: enrichment never blocks a case.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict

from activities.enrichers import enricher
from connectors.abuseipdb import AbuseIpdb
from connectors.http import ConnectorError, configured
from connectors.virustotal import VirusTotal
from signoff.models import Entity

HASH = re.compile(r"^(?:[A-Fa-f0-9]{32}|[A-Fa-f0-9]{40}|[A-Fa-f0-9]{64})$")
VT_PER_CASE = 4
ABUSE_PER_CASE = 10


class _Cache(OrderedDict[tuple[str, str], str]):
    def __init__(self, size: int = 2048) -> None:
        super().__init__()
        self.size = size

    def put(self, key: tuple[str, str], value: str) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


_VT_CACHE = _Cache()
_ABUSE_CACHE = _Cache()


def vt_indicators(entities: tuple[Entity, ...]) -> list[tuple[str, str]]:
    """(kind, value) pairs VirusTotal can look up, most useful first, without duplicates."""
    found: list[tuple[str, str]] = []
    for entity in entities:
        values = [entity.value, *(v for k, v in entity.attributes.items() if k.lower() in ("sha256", "sha1", "md5"))]
        if entity.type in ("file", "process"):
            found += [("file", v.lower()) for v in values if HASH.match(v)]
        elif entity.type == "url" and entity.value.startswith(("http://", "https://")):
            found.append(("url", entity.value))
        elif entity.type in ("domain", "dns"):
            found.append(("domain", entity.value.lower()))
    return list(dict.fromkeys(found))


def public_ips(entities: tuple[Entity, ...]) -> list[str]:
    ips = []
    for entity in entities:
        if entity.type != "ip":
            continue
        try:
            address = ipaddress.ip_address(entity.value)
        except ValueError:
            continue
        if address.is_global:
            ips.append(str(address))
    return list(dict.fromkeys(ips))


@enricher("virustotal")
async def virustotal(entities: tuple[Entity, ...]) -> dict[str, str]:
    if not configured("virustotal", "api_key"):
        return {}
    facts: dict[str, str] = {}
    todo = vt_indicators(entities)[:VT_PER_CASE]
    if not todo:
        return facts
    client = VirusTotal.from_env()
    try:
        for kind, value in todo:
            key = f"virustotal {kind} {value}"
            if (kind, value) in _VT_CACHE:
                facts[key] = _VT_CACHE[(kind, value)]
                continue
            try:
                verdict = await client.lookup(kind, value)
            except ConnectorError as exc:
                facts[key] = f"lookup failed: {exc}"
                continue
            text = verdict.summary if verdict else "unknown to VirusTotal"
            _VT_CACHE.put((kind, value), text)
            facts[key] = text
    finally:
        await client.aclose()
    return facts


@enricher("abuseipdb")
async def abuseipdb(entities: tuple[Entity, ...]) -> dict[str, str]:
    if not configured("abuseipdb", "api_key"):
        return {}
    facts: dict[str, str] = {}
    todo = public_ips(entities)[:ABUSE_PER_CASE]
    if not todo:
        return facts
    client = AbuseIpdb.from_env()
    try:
        for ip in todo:
            key = f"abuseipdb {ip}"
            if ("ip", ip) in _ABUSE_CACHE:
                facts[key] = _ABUSE_CACHE[("ip", ip)]
                continue
            try:
                report = await client.check(ip)
            except ConnectorError as exc:
                facts[key] = f"lookup failed: {exc}"
                continue
            _ABUSE_CACHE.put(("ip", ip), report.summary)
            facts[key] = report.summary
    finally:
        await client.aclose()
    return facts


def clear_caches() -> None:
    _VT_CACHE.clear()
    _ABUSE_CACHE.clear()
