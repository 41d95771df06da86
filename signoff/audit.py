"""The audit trail: every governance event, from workflow histories, as hash-chained JSON Lines.

Sources: every CaseWorkflow history (live in Temporal, or archived when it closed), every
GovernanceWorkflow history (autonomy, thresholds, models, drift demotions, analysts' feedback),
and the CLI's `audit/refused.jsonl` (refused updates never reach Temporal's history).

File format (`signoff-audit/1`), one JSON object per line:
  line 1: an `audit_header` record; then one record per event in time order; last line: an
  `audit_digest` record (record count, sha256 over every record hash). Every record carries
  `seq` (0, 1, 2, ...), `prev` (the previous record's hash; 64 zeros for the header) and `hash`
  = sha256 of the record's canonical JSON without `hash`. Editing, deleting, inserting or
  reordering any line breaks a hash or a link, and `verify` names the line and what happened.
  Each export's digest is also appended to `audit/exports.jsonl`, so a file rewritten end to end
  (every hash recomputed) no longer matches the digest recorded when it was exported. Where neither
  that ledger nor the signing key (`SIGNOFF_AUDIT_KEY`) is at hand, `verify` says the intact file is
  NOT ANCHORED: its own hashes cannot show a rewrite (docs/auditors.md §5).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from signoff import settings
from signoff.history import DecodedHistory, apply_archive_record, archived_runs, decode_history, read_archive
from signoff.models import ApprovalRecord

FORMAT = "signoff-audit/1"
GENESIS = "0" * 64
CASE_TYPE = "CaseWorkflow"
GOVERNANCE_TYPE = "GovernanceWorkflow"
RETRAIN_TYPE = "RetrainWorkflow"


# ---------------------------------------------------------------- hashing


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def chain_digest(hashes: Iterable[str]) -> str:
    h = hashlib.sha256()
    for one in hashes:
        h.update(one.encode())
    return h.hexdigest()


def audit_key() -> bytes | None:
    """Optional signing key for export digests: `SIGNOFF_AUDIT_KEY` or the file `SIGNOFF_AUDIT_KEY_FILE`.

    With it, a trail rewritten end to end (every hash recomputed) fails `verify` even without the
    export ledger: the rewriter cannot produce the digest's HMAC. Keep the key away from exporters'
    write access to the trail store. Never logged.
    """
    text = os.environ.get("SIGNOFF_AUDIT_KEY", "").strip()
    if not text:
        path = os.environ.get("SIGNOFF_AUDIT_KEY_FILE", "").strip()
        if path:
            try:
                text = Path(path).read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read SIGNOFF_AUDIT_KEY_FILE ({path}): {exc.strerror}") from None
    return text.encode() if text else None


def digest_hmac(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def audit_dir() -> Path:
    path = settings.home() / "audit"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- events from histories


def _iso(at: datetime | None) -> str:
    return at.astimezone(UTC).isoformat() if at else ""


def _event(at: str | None, kind: str, h: DecodedHistory, actor: str | None, **detail: Any) -> dict[str, Any]:
    return {"at": at or "", "kind": kind, "workflow_id": h.workflow_id, "run_id": h.run_id,
            "actor": actor or "", "detail": detail}


def case_events(h: DecodedHistory, voided_votes: tuple[ApprovalRecord, ...] | None = None) -> list[dict[str, Any]]:
    """`voided_votes`: a running case's voided rollback requests (`signoff.explain.live_rollback_votes`)."""
    from signoff.explain import explanation_from_history

    ex = explanation_from_history(h, voided_votes=voided_votes)
    ex["refused_attempts"] = []  # exported once, from the refused file itself
    if ex.get("undecodable"):
        # Recorded, not skipped: an auditor must see that this case exists and why it is unreadable.
        return [_event(ex["opened_at"], "case_undecodable", h, "", problems=ex["undecodable"],
                       hint="export with the codec key that encrypted it (SIGNOFF_CODEC_KEY, old keys after the new)")]
    case = ex["case"]
    events = [_event(ex["opened_at"], "case_opened", h, case.get("requested_by"), identity=ex["opened_via"],
                     alert_type=case.get("alert_type"), severity=case.get("severity"), title=case.get("title"),
                     alerts=ex["alerts"]["count"],
                     alert_uids=[a["uid"] for a in ex["alerts"]["alerts"] if not a.get("detached_to")],
                     **({"detached_from": ex["detached_from"]} if ex.get("detached_from") else {}))]
    if ex["enrichment"] is not None:
        # When the enrichment ran (QA8: this was the time of the case's last governance read, which can
        # come long after the actions it informed).
        enriched_at = ex.get("enriched_at") or (ex["governance"]["loaded_at"] if ex["governance"] else ex["opened_at"])
        events.append(_event(enriched_at, "enrichment", h,
                             "signoff", summary=ex["enrichment"].get("summary"), sources=ex["enrichment"].get("sources"),
                             facts=ex["enrichment"].get("facts")))
    if ex["decision"]:
        s = ex["score"] or {}
        gov = ex["governance"] or {}
        # Decided once enrichment and scoring both finished (they run side by side): the later of the two.
        inputs = [t for t in (s.get("scored_at"), ex.get("enriched_at")) if t]
        decided_at = max(inputs, key=_norm) if inputs else gov.get("loaded_at")
        events.append(_event(decided_at, "decision", h, "signoff",
                             decision=ex["decision"]["kind"], reason=ex["decision"]["reason"],
                             model_id=s.get("model_id"), feature_hash=s.get("feature_hash"),
                             # The vector itself: re-score it offline with the model artifact (docs/auditors.md §5).
                             feature_vector=s.get("feature_vector") or "", feature_schema=s.get("feature_schema") or "",
                             predicted=s.get("predicted"), confidence=s.get("confidence"),
                             benign_confidence=s.get("benign_confidence"), probabilities=s.get("probabilities"),
                             shadow=s.get("shadow") or [],
                             contributions=[c["text"] for c in s.get("contributions", [])],
                             policy_version=gov.get("policy_version"), autonomy=gov.get("autonomy"),
                             threshold=gov.get("threshold"), threshold_set_by=gov.get("threshold_set_by"),
                             autonomy_set_by=gov.get("autonomy_set_by"),
                             governance_revision=gov.get("governance_revision"),
                             governance_read_at=gov.get("loaded_at"),
                             governance_rechecks=gov.get("rechecks") or [],
                             scoring_problem=ex["scoring_problem"]))
    for a in ex["approvals"]:
        kind = ("approval" if a["decision"] == "approve" else "rejection") if a["outcome"] != "refused" else "refusal"
        if a["outcome"] == "voided":  # accepted, then voided before its step ran: it did not count
            kind = "approval_voided"
        if a["via"] == "signal" and a["outcome"] not in ("accepted", "refused", "voided"):
            # An open case's signal: the workflow has judged it, but only its state (not the history)
            # says how; never export it as an approval that may have been refused.
            kind = f"{a['decision']}_signal_undetermined"
        events.append(_event(a["at"], kind, h, a["approver"], step=a["step"], decision=a["decision"], via=a["via"],
                             reason=a["reason"], outcome=a["outcome"], refusal=a["refusal"], identity=a["identity"],
                             update_id=a["update_id"], signed=a["signed"],
                             **({"channel": a["channel"]} if a.get("channel") else {})))
    tiers = {st["step_id"]: st["tier"] for st in ((ex.get("final") or {}).get("steps") or [])}
    for act in ex["actions"]:
        # Who authorised it, in the same record (QA8): the approvals of its step that counted before it
        # ran; none for a low-tier step, which runs automatically by policy.
        approved_by = sorted({str(a["approver"]) for a in ex["approvals"]
                              if a["step"] == act["step_id"] and a["decision"] == "approve"
                              and a["outcome"] == "accepted" and (a["at"] or "") <= (act["started_at"] or "")})
        events.append(_event(act["completed_at"] or act["started_at"], "action" if not act["failure"] else "action_failed",
                             h, "signoff", step=act["step_id"], action=act["action"], target=act["target"],
                             before=act["before"], after=act["after"], outcome=act["outcome"], failure=act["failure"],
                             idempotency_key=act["idempotency_key"], tier=tiers.get(act["step_id"]),
                             approved_by=approved_by))
    for c in ex["compensations"]:
        events.append(_event(c["completed_at"] or c["started_at"], "compensation" if not c["failure"] else "compensation_failed",
                             h, "signoff", step=c["step_id"], action=c["action"], undoes=c["undoes"], target=c["target"],
                             restored=c["restored"], restore_to=c["restore_to"], outcome=c["outcome"], failure=c["failure"]))
    # Without the case's state (an open case: its history alone), what the case made of a signal is
    # unknown: export it as undetermined, never as a rollback or a verdict the case may have refused
    # (QA6: an unsigned, refused rollback signal was exported as a rollback_request, a refused close
    # signal as feedback).
    undetermined = (ex.get("final") or {}).get("status") is None
    for rb in ex["rollbacks"]:
        if rb.get("outcome") == "voided":  # counted, then dropped when the quorum was met: nothing undone by it
            events.append(_event(rb["at"], "rollback_request_voided", h, rb["requested_by"], via=rb["via"],
                                 reason=rb["reason"], refusal=rb["refusal"], identity=rb["identity"],
                                 result=rb["result"], signed=rb.get("signed", False)))
            continue
        if rb.get("refusal"):
            events.append(_event(rb["at"], "refusal", h, rb["requested_by"], decision="rollback", via=rb["via"],
                                 reason=rb["reason"], refusal=rb["refusal"], identity=rb["identity"],
                                 signed=rb.get("signed", False)))
            continue
        # a request counted towards a rollback quorum is its own kind: nothing was undone by it
        kind = "rollback_request" if rb.get("outcome") == "counted" else "rollback"
        if rb["via"] == "signal" and undetermined:
            kind = "rollback_signal_undetermined"
        events.append(_event(rb["at"], kind, h, rb["requested_by"], via=rb["via"], reason=rb["reason"],
                             identity=rb["identity"], result=rb["result"], signed=rb.get("signed", False),
                             seconds_to_last_compensation=rb["seconds_to_last_compensation"],
                             # QA9: who else the rollback quorum counted (the actor is the last to ask)
                             **({"quorum_with": rb["quorum_with"]} if rb.get("quorum_with") else {})))
    for problem in ex.get("unsigned_input", []):  # the case acted on none of it (policies/ingest_signing.py)
        events.append(_event(ex["opened_at"], "input_unsigned", h, "signoff", problem=problem))
    for b in ex.get("refused_batches", []):
        events.append(_event(b["at"], "alert_batch_refused", h, "signoff", alerts=b["alerts"],
                             alert_uids=b["alert_uids"], reason=b["reason"]))
    for e in ex["escalations"]:
        # an escalation's own `kind` (action_failed, approval_timeout, ...) must not collide with the event kind
        events.append(_event(e["at"], "escalation", h, "signoff",
                             **{("escalation_kind" if k == "kind" else k): v for k, v in e.items() if k != "at"}))
    for v in ex["verdicts"]:
        if v["accepted"] is False:
            events.append(_event(v["at"], "refusal", h, v["analyst"], decision="close", via=v["via"],
                                 verdict=v["verdict"], reason=v["reason"], refusal=v.get("refusal", ""),
                                 identity=v["identity"], signed=v.get("signed", False)))
            continue
        kind = "close_signal_undetermined" if v["accepted"] is None else "feedback"
        events.append(_event(v["at"], kind, h, v["analyst"], verdict=v["verdict"], reason=v["reason"],
                             via=v["via"], accepted=v["accepted"], identity=v["identity"], signed=v.get("signed", False)))
    for a in ex.get("assignments", []):
        events.append(_event(a["at"], "assignment", h, a["by"], assignee=a["assignee"], reason=a["reason"],
                             signed=a["signed"], identity=a["identity"], update_id=a["update_id"]))
    for r in ex.get("retries", []):
        events.append(_event(r["at"], "retry", h, r["requested_by"], reason=r["reason"], result=r["result"],
                             signed=r["signed"], identity=r["identity"], update_id=r["update_id"]))
    for n in ex.get("notes", []):
        events.append(_event(n["at"], "note", h, n["author"], text=n["text"], signed=n["signed"],
                             identity=n["identity"], update_id=n["update_id"]))
    for d in ex.get("detaches", []):
        # an alert taken out of the case (workflows/case_detach.py): who, why, where it went
        events.append(_event(d["at"], "detach", h, d["requested_by"], alert_uid=d["alert_uid"], reason=d["reason"],
                             new_case=d["new_case"], opened=d["opened"], skipped_steps=d["skipped_steps"],
                             acted_steps=d["acted_steps"], score_included=d["score_included"], signed=d["signed"],
                             identity=d["identity"], update_id=d["update_id"]))
    events.extend(_merge_events(ex, h))
    for r in ex.get("resets", []):
        # `temporal workflow reset` (QA7): this run replaced `base_run_id` from `event_id` on; the base run is
        # exported under its own run id, and what it recorded after that point is not part of this run.
        events.append(_event(r["at"], "workflow_reset", h, "temporal", base_run_id=r["base_run_id"],
                             reset_event_id=r["event_id"], reason=r["reason"],
                             note="the events this run copied from its base run before the reset point are in "
                                  "both runs' records; what the base run recorded after it was discarded"))
    if h.closed_at:
        final = ex.get("final") or {}
        events.append(_event(ex["closed_at"], "case_closed", h, "signoff", workflow=h.close,
                             status=final.get("status"), failure=h.failure))
    return events


def _merge_events(ex: dict[str, Any], h: DecodedHistory) -> list[dict[str, Any]]:
    """`signoff merge` (workflows/case_merge.py, signoff/merge_text.py): a `merge` event on both sides,
    in the source's export (`side: source`, who asked) and in the target's (`side: target`, what came)."""
    events = []
    if m := ex.get("merged_into"):
        events.append(_event(m["at"], "merge", h, m["requested_by"], side="source", source=h.workflow_id,
                             target=m["target"], reason=m["reason"], signed=m["signed"], identity=m["identity"],
                             update_id=m["update_id"], alerts=m["alerts"], skipped_steps=m["skipped_steps"],
                             acted_steps=m["acted_steps"], delivered=m["delivered"],
                             **({"handed_over_steps": m["handed_over_steps"]} if m.get("handed_over_steps") else {})))
    for f in ex.get("merged_from", []):
        events.append(_event(f["at"], "merge", h, f["requested_by"], side="target", source=f["source"],
                             target=h.workflow_id, reason=f["reason"], signed=f["signed"], identity=f["identity"],
                             update_id=f["update_id"], alerts=f["alerts_sent"], alert_uids=f["alert_uids"],
                             after_scoring=f["after_scoring"]))
    return events


_GOV_KINDS = {
    "set_autonomy": "autonomy_change",
    "set_threshold": "threshold_change",
    "revert_threshold": "threshold_change",
    "promote_model": "model_promotion",
    "rollback_model": "model_rollback",
    "set_candidate": "model_candidate",
    "drift_report": "drift_report",
}


# A person's governance changes: signed with their key where the policy asks for it (workflows/governance.py).
SIGNED_UPDATES = ("set_autonomy", "set_threshold", "revert_threshold", "promote_model", "rollback_model")


def _verdict_checks(h: DecodedHistory) -> dict[str, list[dict[str, Any]]]:
    """What the governance workflow's `verify_verdicts` activity found for each case, in order."""
    checks: dict[str, list[dict[str, Any]]] = {}
    for run in h.activities_named("verify_verdicts"):
        for check in run.result if isinstance(run.result, list) else []:
            if isinstance(check, dict):
                checks.setdefault(str(check.get("case_id")), []).append(check)
    return checks


def _drift_sender(req: dict[str, Any], identity: str) -> str:
    check = req.get("check_workflow_id")
    return f"drift check {check}" if check else f"unverified sender ({identity or 'unknown client'})"


def _resolved_models(h: DecodedHistory) -> dict[str, list[str]]:
    """The full model ids the governance workflow's `resolve_model` activity found, per id as typed, in order."""
    found: dict[str, list[str]] = {}
    for run in h.activities_named("resolve_model"):
        if isinstance(run.input, str) and isinstance(run.result, str):
            found.setdefault(run.input, []).append(run.result)
    return found


def key_id(public_key: str) -> str:
    """A signer's key id: the first 16 hex of sha256 over the raw Ed25519 public key (as in the policy)."""
    import base64

    try:
        raw = base64.b64decode(public_key, validate=True)
    except ValueError:
        raw = public_key.encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _policies_read(h: DecodedHistory, updates: list[Any]) -> dict[str, dict[str, Any]]:
    """The policy each person's governance change read (`governance_policy`: the first thing each of
    their handlers does, scheduled right after the change was accepted): the keys its token was
    verified against. Only those handlers are paired (others may not read the policy)."""
    runs = sorted((r for r in h.activities_named("governance_policy") if isinstance(r.result, dict)),
                  key=lambda r: r.event_id)
    taken: set[int] = set()
    found: dict[str, dict[str, Any]] = {}
    for upd in sorted((u for u in updates if u.name in SIGNED_UPDATES), key=lambda u: u.event_id):
        run = next((r for r in runs if r.event_id > upd.event_id and r.event_id not in taken), None)
        if run is not None:
            taken.add(run.event_id)
            found[upd.update_id] = run.result
    return found


def _signature(req: dict[str, Any], policy: dict[str, Any] | None, outcome: str) -> dict[str, Any]:
    """Whether a governance change was signed, and with which key: the token itself stays out of the
    export (like every token); its claims' times and the key id of the public key the workflow verified
    it against (the policy its handler read) go in."""
    from policies.signing import token_claims

    token = req.get("token")
    if not token:
        return {"signed": False}
    claims = token_claims(str(token)) or {}
    out: dict[str, Any] = {"signed": True}
    for claim, name in (("iat", "token_issued_at"), ("exp", "token_expires_at")):
        value = claims.get(claim)
        if isinstance(value, int):
            out[name] = datetime.fromtimestamp(value, UTC).isoformat()
    entry = ((policy or {}).get("approvers") or {}).get(req.get("by")) if policy else None
    public_key = entry.get("public_key") if isinstance(entry, dict) else None
    out["signer_key_id"] = key_id(public_key) if public_key else None
    # The handler verifies the token before it changes anything: an accepted signed change was verified;
    # a refused one says why in `refusal` (a bad token or, e.g., a missing role).
    out["signature_verified"] = True if outcome == "accepted" else None
    return out


def governance_events(h: DecodedHistory) -> list[dict[str, Any]]:
    events = []
    checks = _verdict_checks(h)
    resolved = _resolved_models(h)
    policies = _policies_read(h, h.updates)
    for upd in h.updates:
        kind = _GOV_KINDS.get(upd.name, f"governance_{upd.name}")
        req = upd.args[0] if upd.args and isinstance(upd.args[0], dict) else {}
        # A drift report is attributed to the check that sent it; the workflow verifies that claim.
        actor = req.get("by") or (_drift_sender(req, upd.identity) if upd.name == "drift_report" else "")
        outcome = "refused" if upd.failure else ("accepted" if upd.completed_at else "in progress")
        detail = {k: v for k, v in req.items() if k not in ("by", "token")}
        typed = req.get("model_id")
        if isinstance(typed, str) and resolved.get(typed):  # the model as typed (a prefix) and as it resolved
            detail["model_id_resolved"] = resolved[typed].pop(0)
        signature = _signature(req, policies.get(upd.update_id), outcome) if upd.name in SIGNED_UPDATES else {}
        events.append(_event(_iso(upd.accepted_at), kind, h, actor, update=upd.name, request=detail, outcome=outcome,
                             result=upd.result, refusal=upd.failure, identity=upd.identity, update_id=upd.update_id,
                             **signature))
    for sig in h.signals:
        req = sig.args[0] if sig.args and isinstance(sig.args[0], dict) else {}
        if sig.name == "record_verdict":
            # Counted only once checked against the case itself (forged verdicts are refused there).
            found = checks.get(str(req.get("case_id")), [])
            check = found.pop(0) if found else None
            outcome = ("not checked yet" if check is None
                       else f"refused: {check.get('refused')}" if check.get("refused") else "counted")
            events.append(_event(_iso(sig.at), "feedback_recorded", h, req.get("analyst"), case_id=req.get("case_id"),
                                 alert_type=req.get("alert_type"), verdict=req.get("verdict"),
                                 predicted=req.get("predicted"), model_id=req.get("model_id"), identity=sig.identity,
                                 outcome=outcome))
        else:
            events.append(_event(_iso(sig.at), f"governance_{sig.name}", h, req.get("by", ""), request=req,
                                 identity=sig.identity))
    return events


def policy_version_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Policy file changes (made by pull request) show up as the first decision under each version."""
    found = []
    current = None
    for e in sorted((e for e in events if e["kind"] == "decision"), key=lambda e: _norm(e["at"])):
        version = e["detail"].get("policy_version")
        if version and version != current:
            found.append({"at": e["at"], "kind": "policy_version_in_force", "workflow_id": e["workflow_id"],
                          "run_id": e["run_id"], "actor": "policy file / governance state",
                          "detail": {"policy_version": version, "previous": current,
                                     "governance_revision": e["detail"].get("governance_revision"),
                                     "first_case": e["workflow_id"]}})
            current = version
    return found


def model_store_events() -> list[dict[str, Any]]:
    """The model store's own append-only log (`models/promotions.jsonl`): every activation and rollback,
    including any made before the governance workflow existed."""
    try:
        from signoff.scoring import model_store
    except ImportError:
        return []
    try:
        entries = model_store.history()
    except (OSError, ValueError) as exc:
        return [{"at": "", "kind": "model_store_unreadable", "workflow_id": "", "run_id": "", "actor": "",
                 "detail": {"error": str(exc)}}]
    return [{"at": _iso(e.at), "kind": f"model_store_{e.action}", "workflow_id": "", "run_id": "", "actor": e.by,
             "detail": {"source": "models/promotions.jsonl", "model_id": e.model_id, "previous": e.previous,
                        "reason": e.reason}}
            for e in entries]


def model_artifact_events() -> list[dict[str, Any]]:
    """Every model in the store and the shipped default (QA8: a model update, `signoff model train`,
    left nothing in the trail until it was promoted): what its manifest says it was trained on (data
    sha256, rows, seed, parameters, library versions), and whether its artifact still hashes to its id
    (a swapped artifact shows as `artifact_matches_id: false`). Its manifest says who trained it, when
    and why (`trained_by`, `trained_at`, `reason`; a retraining also `requested_by`): `actor` and `at`
    are those; for a model stored before training was attributed, `actor` is empty and `at` the
    artifact file's time (`at_is` says which)."""
    try:
        from signoff.scoring import model_store
    except ImportError:
        return []
    try:
        models = model_store.list_models()
    except (OSError, ValueError) as exc:
        return [{"at": "", "kind": "model_store_unreadable", "workflow_id": "", "run_id": "", "actor": "",
                 "detail": {"error": str(exc)}}]
    events = []
    for info in models:
        folder = Path(info.path)
        artifact, manifest_path = folder / model_store.ARTIFACT, folder / model_store.MANIFEST
        try:
            actual = hashlib.sha256(artifact.read_bytes()).hexdigest()
            at = datetime.fromtimestamp(artifact.stat().st_mtime, UTC).isoformat()
            manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        except (OSError, ValueError) as exc:
            events.append({"at": "", "kind": "model_store_unreadable", "workflow_id": "", "run_id": "", "actor": "",
                           "detail": {"model_id": info.model_id, "error": str(exc)}})
            continue
        manifest = manifest if isinstance(manifest, dict) else {}
        trained_at = str(manifest.get("trained_at") or "")
        events.append({"at": trained_at or at, "kind": "model_stored", "workflow_id": "", "run_id": "",
                       "actor": str(manifest.get("trained_by") or ""),
                       "detail": {"source": "model store", "model_id": info.model_id, "shipped": info.shipped,
                                  "artifact_sha256": actual, "artifact_matches_id": actual == info.model_id,
                                  "data": manifest.get("data"), "seed": manifest.get("seed"),
                                  "params": manifest.get("params"), "format": manifest.get("format"),
                                  "libraries": manifest.get("libraries"),
                                  **{k: manifest.get(k) for k in ("trained_by", "trained_by_from", "requested_by",
                                                                  "reason", "trained_at", "trained_again")
                                     if k in manifest},
                                  "at_is": "when it was trained (its manifest)" if trained_at else
                                  "the artifact file's time: its manifest records no training time"}})
    return events


def retrain_events(h: DecodedHistory) -> list[dict[str, Any]]:
    """A `signoff model retrain` run (RetrainWorkflow): who asked, why, on what, and the candidate it made."""
    req = h.start_args[0] if h.start_args and isinstance(h.start_args[0], dict) else {}
    result = h.result if isinstance(h.result, dict) else {}
    outcome = "running" if h.close == "running" else ("candidate trained" if result else h.close)
    return [_event(_iso(h.started_at), "model_retrain", h, req.get("requested_by"), reason=req.get("reason"),
                   base_data=req.get("base_data"), seed=req.get("seed"), min_verdicts=req.get("min_verdicts"),
                   identity=h.start_identity, outcome=outcome, failure=h.failure,
                   model_id=result.get("model_id"), verdict_cases=result.get("verdict_cases"),
                   base_cases=result.get("base_cases"), finished_at=_iso(h.closed_at) or None)]


def refused_file_events(path: Path) -> list[dict[str, Any]]:
    from signoff.explain import refused_actor

    if not path.exists():
        return []
    events = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
        except ValueError:
            events.append({"at": "", "kind": "refused_file_unreadable", "workflow_id": "", "run_id": "", "actor": "",
                           "detail": {"line": n}})
            continue
        actor = refused_actor(rec) or ""
        detail = {k: v for k, v in rec.items() if k not in ("at", "kind", "case_id", "token")}
        events.append({"at": rec.get("at", ""), "kind": rec.get("kind", "refused"), "workflow_id": rec.get("case_id", ""),
                       "run_id": "", "actor": actor, "detail": {"source": "cli refused.jsonl", **detail}})
    return events


# ---------------------------------------------------------------- collecting histories


@dataclass
class Collected:
    histories: list[DecodedHistory] = field(default_factory=list)
    live: int = 0
    archived: int = 0


async def collect_histories(client: Client, types: tuple[str, ...] = (CASE_TYPE, GOVERNANCE_TYPE),
                            newest: int = 0) -> Collected:
    """Every run of the given workflow types: live histories plus archived ones Temporal no longer has;
    with `newest`, only that many, the most recently started (live ones fetched only if among them)."""
    found: dict[tuple[str, str], DecodedHistory] = {}
    out = Collected()
    query = " OR ".join(f"WorkflowType='{t}'" for t in types)
    listed = [(wf.start_time, wf.id, wf.run_id) async for wf in client.list_workflows(query)]
    if newest:
        listed = sorted(listed, reverse=True)[:newest]
    runs = [(workflow_id, run_id) for _, workflow_id, run_id in listed]
    gate = asyncio.Semaphore(16)

    async def fetch(workflow_id: str, run_id: str) -> DecodedHistory | None:
        async with gate:
            try:
                history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:  # deleted between list and fetch: the archive has it
                    return None
                raise
            return await decode_history(history, client.data_converter, source="live")

    for key, decoded_live in zip(runs, await asyncio.gather(*(fetch(w, r) for w, r in runs)), strict=True):
        if decoded_live is not None:
            found[key] = decoded_live
            out.live += 1
    for path in archived_runs():
        try:
            history, record = read_archive(path)
        except (OSError, ValueError, KeyError):
            continue
        key = (record["workflow_id"], record["run_id"])
        if key in found:
            continue
        decoded = await decode_history(history, client.data_converter, source="archive")
        if decoded.workflow_type not in types:
            continue
        found[key] = apply_archive_record(decoded, record)
        out.archived += 1
    out.histories = sorted(found.values(), key=lambda d: (d.started_at, d.workflow_id, d.run_id))
    if newest:
        out.histories = out.histories[-newest:]
    return out


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`2026-11-28T09:00:00Z`, `2026-11-28`, or a duration back from now: `90m`, `24h`, `7d`."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: int(match.group(1))})
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r} is neither an ISO time (2026-11-28T09:00:00Z) nor a duration (24h, 7d)") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def collect_events(client: Client, since: datetime | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from signoff.explain import live_rollback_votes
    from signoff.undo import UNDO_TYPE
    from signoff.undo_audit import undo_events

    collected = await collect_histories(client, (CASE_TYPE, GOVERNANCE_TYPE, UNDO_TYPE, RETRAIN_TYPE))
    gate = asyncio.Semaphore(16)

    async def votes(h: DecodedHistory) -> Any:
        async with gate:
            return await live_rollback_votes(client, h)

    # Side by side: each is a best-effort query, and a running case whose worker is gone waits it out.
    case_runs = [h for h in collected.histories if h.workflow_type == CASE_TYPE]
    live_votes = dict(zip([id(h) for h in case_runs], await asyncio.gather(*(votes(h) for h in case_runs)),
                          strict=True))
    events: list[dict[str, Any]] = []
    cases = governance = undos = retrains = 0
    for h in collected.histories:
        if h.workflow_type == CASE_TYPE:
            events += case_events(h, live_votes[id(h)])
            cases += 1
        elif h.workflow_type == UNDO_TYPE:  # a rollback after close: filed under its case's id
            events += undo_events(h)
            undos += 1
        elif h.workflow_type == RETRAIN_TYPE:
            events += retrain_events(h)
            retrains += 1
        else:
            events += governance_events(h)
            governance += 1
    events += policy_version_events(events)
    events += model_store_events()
    events += model_artifact_events()
    refused_path = audit_dir() / "refused.jsonl"
    events += refused_file_events(refused_path)
    if since is not None:
        cutoff = since.isoformat()
        events = [e for e in events if _norm(e["at"]) >= cutoff]
    events.sort(key=lambda e: (_norm(e["at"]), e["workflow_id"], e["kind"]))
    sources = {"case_runs": cases, "governance_runs": governance, "undo_runs": undos, "retrain_runs": retrains,
               "live_histories": collected.live,
               "archived_histories": collected.archived, "refused_file": str(refused_path)}
    return events, sources


def _norm(at: str) -> str:
    """ISO times compare as strings once they share one timezone notation."""
    if not at:
        return ""
    try:
        parsed = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return at
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


# ---------------------------------------------------------------- writing the chain


def chain(events: list[dict[str, Any]], header: dict[str, Any]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    prev = GENESIS
    for seq, body in enumerate([{"kind": "audit_header", **header}, *events]):
        rec = {"seq": seq, **body, "prev": prev}
        rec["hash"] = record_hash(rec)
        records.append(rec)
        prev = rec["hash"]
    digest: dict[str, Any] = {"seq": len(records), "kind": "audit_digest", "at": header["at"], "records": len(records),
                              "digest": chain_digest(r["hash"] for r in records), "prev": prev}
    key = audit_key()
    if key is not None:
        digest["hmac"] = digest_hmac(key, digest["digest"])
    digest["hash"] = record_hash(digest)
    records.append(digest)
    return records


async def export(client: Client, out: Path, since: datetime | None = None) -> dict[str, Any]:
    events, sources = await collect_events(client, since)
    now = datetime.now(UTC).isoformat()
    header = {"at": now, "format": FORMAT, "namespace": client.namespace,
              "since": since.isoformat() if since else None, "sources": sources}
    records = chain(events, header)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str) + "\n" for r in records))
    digest = records[-1]
    summary = {"file": str(out), "records": len(records), "events": len(events), "digest": digest["digest"],
               "header_hash": records[0]["hash"], "exported_at": now, **sources}
    with (audit_dir() / "exports.jsonl").open("a") as fh:
        fh.write(json.dumps(summary, sort_keys=True) + "\n")
    return summary


# ---------------------------------------------------------------- verifying


@dataclass
class Issue:
    line: int
    # edited | deleted | inserted | reordered | duplicated | truncated | rewritten | unsigned | malformed | vector_mismatch
    problem: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "problem": self.problem, "message": self.message}


@dataclass
class Verification:
    file: str
    records: int
    issues: list[Issue]
    digest: str | None
    ledger: str  # matched | differs | not_in_ledger (this installation never exported it) | unknown (no ledger)
    # What vouches for the file beyond its own hashes (QA8): "hmac" (the digest's HMAC checked with
    # SIGNOFF_AUDIT_KEY), "ledger" (its digest matches the one recorded when it was exported), both, or
    # "none": then an intact chain proves only that the file is consistent, not that it was never
    # rewritten end to end (anyone can recompute every hash).
    anchor: str = "none"
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def anchored(self) -> bool:
        return self.anchor != "none"

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "ok": self.ok, "records": self.records, "digest": self.digest,
                "ledger": self.ledger, "anchor": self.anchor, "anchored": self.anchored, "warnings": self.warnings,
                "issues": [i.as_json() for i in self.issues]}

    def summary(self) -> str:
        """One line for people: what was checked and what vouches for the file."""
        if not self.ok:
            return f"TAMPERED: {len(self.issues)} problem(s) in {self.file}"
        vouched = {"hmac+ledger": "its HMAC checks with SIGNOFF_AUDIT_KEY and its digest matches the one recorded "
                                  "at export",
                   "hmac": "its HMAC checks with SIGNOFF_AUDIT_KEY",
                   "ledger": "matches the digest recorded at export"}.get(self.anchor)
        head = f"OK: {self.records} record{'s' if self.records != 1 else ''}, chain intact, digest {self.digest}"
        return f"{head}; {vouched}" if vouched else f"{head}; NOT ANCHORED (see the warning)"


def _describe(rec: dict[str, Any]) -> str:
    what = f"record {rec.get('seq')} ({rec.get('kind')}"
    if rec.get("workflow_id"):
        what += f" {rec['workflow_id']}"
    return what + ")"


def verify_lines(lines: list[str], name: str = "") -> Verification:
    issues: list[Issue] = []
    recs: list[tuple[int, dict[str, Any]]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            issues.append(Issue(n, "malformed", f"line {n} is empty: a record was blanked out"))
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            issues.append(Issue(n, "edited", f"line {n} is not a JSON record: edited or corrupted"))
            continue
        recs.append((n, rec))
    edited: set[int] = set()
    for n, rec in recs:
        if rec.get("hash") != record_hash(rec):
            edited.add(n)
            issues.append(Issue(n, "edited", f"line {n}: {_describe(rec)} was edited: its content no longer matches its hash"))
    line_of: dict[str, int] = {}
    for n, rec in recs:
        h = str(rec.get("hash"))
        if h in line_of:
            issues.append(Issue(n, "duplicated", f"line {n} repeats line {line_of[h]} ({_describe(rec)}): an inserted copy"))
        else:
            line_of[h] = n
    chained_to = {str(rec.get("prev")) for _, rec in recs}
    reported: set[int] = set()
    for i, (n, rec) in enumerate(recs):
        link = str(rec.get("prev"))
        if i == 0:
            if link != GENESIS or rec.get("kind") != "audit_header":
                issues.append(Issue(n, "deleted", f"line {n}: the file does not start with its header record: "
                                                  f"records before {_describe(rec)} were deleted"))
            continue
        prev_rec = recs[i - 1][1]
        if link == str(prev_rec.get("hash")):
            continue
        pn = recs[i - 1][0]
        if pn in reported:
            # The line before was already named; this one is out of place too if it goes back in sequence.
            seq, pseq = rec.get("seq"), prev_rec.get("seq")
            if isinstance(seq, int) and isinstance(pseq, int) and seq < pseq:
                issues.append(Issue(n, "reordered", f"line {n}: {_describe(rec)} is out of order: it comes after "
                                                    f"record {pseq}"))
                reported.add(n)
            continue
        if link in line_of and line_of[link] > n:
            issues.append(Issue(n, "reordered", f"line {n}: {_describe(rec)} is out of order: the record it follows "
                                                f"in the chain is at line {line_of[link]}"))
            reported.add(n)
        elif i >= 2 and link == str(recs[i - 2][1].get("hash")) and str(prev_rec.get("hash")) not in chained_to:
            issues.append(Issue(pn, "inserted", f"line {pn}: {_describe(prev_rec)} was inserted: it is not part of the "
                                                f"chain (line {n} follows line {recs[i - 2][0]})"))
            reported.add(pn)
        elif link in line_of:
            issues.append(Issue(n, "reordered", f"line {n}: {_describe(rec)} follows line {line_of[link]} in the chain, "
                                                f"not line {pn}: records were moved"))
            reported.add(n)
        elif isinstance(rec.get("seq"), int) and isinstance(prev_rec.get("seq"), int) and rec["seq"] > prev_rec["seq"] + 1:
            first, last = prev_rec["seq"] + 1, rec["seq"] - 1
            which = f"record {first}" if first == last else f"records {first}..{last}"
            issues.append(Issue(n, "deleted", f"{which} deleted between line {pn} and line {n}"))
            reported.add(n)
        elif pn not in edited:
            issues.append(Issue(pn, "edited", f"line {pn}: {_describe(prev_rec)} was edited and re-hashed: line {n} "
                                              "chains to the hash it had when exported (or the lines from "
                                              f"line {n} on come from another export, spliced in)"))
            reported.add(pn)
    digest_value = None
    last = recs[-1][1] if recs else None
    header = recs[0][1] if recs else None
    if (header is not None and last is not None and header.get("kind") == "audit_header"
            and last.get("kind") == "audit_digest" and header.get("at") != last.get("at")):
        # `chain` stamps the header and the digest with the same export time: a digest of another time
        # closes another export's records (two exports spliced, each part internally consistent).
        issues.append(Issue(recs[-1][0], "spliced", f"the digest record closes the export made at {last.get('at')}, "
                                                    f"but the header is the export made at {header.get('at')}: "
                                                    "records of two exports were spliced together"))
    digest_lines = [n for n, r in recs if r.get("kind") == "audit_digest"]
    if last is not None and last.get("kind") != "audit_digest" and digest_lines:
        issues.append(Issue(digest_lines[-1] + 1, "appended", f"{recs[-1][0] - digest_lines[-1]} line(s) after the "
                                                              f"digest record on line {digest_lines[-1]}: added after export"))
    elif last is None or last.get("kind") != "audit_digest":
        after = recs[-1][0] if recs else 0
        issues.append(Issue(after + 1, "truncated", f"the digest record is missing: the file was cut after line {after}"))
    else:
        digest_value = str(last.get("digest"))
        body = [r for _, r in recs[:-1]]
        if not issues and (last.get("records") != len(body)
                           or digest_value != chain_digest(str(r.get("hash")) for r in body)):
            issues.append(Issue(recs[-1][0], "edited", "the digest does not match the records"))
    key = audit_key()
    hmac_ok = False
    warnings: list[str] = []
    if key is not None and last is not None and last.get("kind") == "audit_digest" and digest_value:
        signed = last.get("hmac")
        if not signed:
            issues.append(Issue(recs[-1][0], "unsigned", "SIGNOFF_AUDIT_KEY is set but this digest carries no HMAC: "
                                                         "exported without the key, or the signature was removed"))
        elif not hmac.compare_digest(str(signed), digest_hmac(key, digest_value)):
            issues.append(Issue(recs[-1][0], "rewritten", "the digest's HMAC does not match: the trail was rewritten "
                                                          "(or signed with another key)"))
        else:
            hmac_ok = True
    elif last is not None and last.get("hmac"):
        warnings.append("the digest carries an HMAC, but SIGNOFF_AUDIT_KEY is not set here: it was not checked "
                        "(verify with the key to prove the trail was not rewritten)")
    ledger = _ledger_check(recs[0][1] if recs else None, digest_value)
    if ledger == "differs" and not issues:
        issues.append(Issue(1, "rewritten", "every hash checks, but this export's digest differs from the one recorded "
                                            "when it was exported (audit/exports.jsonl): the file was rewritten"))
    if ledger == "not_in_ledger" and not issues and key is None:
        # Without a key, a chain can be recomputed end to end; the ledger is then the only anchor, and
        # an export it has never seen is either someone else's or a rewrite with a new header time.
        at = (recs[0][1].get("at") if recs else "") or "?"
        issues.append(Issue(1, "unanchored", f"every hash checks, but this installation's export ledger "
                                             f"(audit/exports.jsonl) has no export made at {at}: the file was rewritten, "
                                             "or exported by another installation (verify it there, or sign exports "
                                             "with SIGNOFF_AUDIT_KEY)"))
    issues.extend(_vector_issues(recs))  # after the chain checks: they speak of the file, this of its content
    anchor = "+".join(a for a, on in (("hmac", hmac_ok), ("ledger", ledger == "matched")) if on) or "none"
    if anchor == "none" and not issues:
        warnings.append("NOT ANCHORED: every hash checks, but nothing outside this file vouches for it: anyone can "
                        "recompute every hash of an edited trail. Compare its digest with the one recorded when it "
                        "was exported (audit/exports.jsonl of the exporting installation, or the digest printed "
                        "then), or verify with the SIGNOFF_AUDIT_KEY it was exported with")
    return Verification(file=name, records=len(recs), issues=sorted(issues, key=lambda x: x.line),
                        digest=digest_value, ledger=ledger, anchor=anchor, warnings=warnings)


def _vector_issues(recs: list[tuple[int, dict[str, Any]]]) -> list[Issue]:
    """A decision whose recorded feature vector does not hash to its recorded feature_hash: the
    record of what was scored contradicts itself (whatever the chain says)."""
    from signoff.scoring import recorded_vector

    issues = []
    for n, rec in recs:
        detail = rec.get("detail")
        if rec.get("kind") != "decision" or not isinstance(detail, dict) or not detail.get("feature_vector"):
            continue
        check = recorded_vector.check(str(detail["feature_vector"]), str(detail.get("feature_hash")))
        if check != "matches":
            issues.append(Issue(n, "vector_mismatch", f"line {n}: {_describe(rec)}: its feature vector "
                                                      f"{'does not hash to its feature_hash' if check == 'mismatch' else 'is not decodable'}: "
                                                      "the score's record contradicts itself"))
    return issues


def _ledger_check(header: dict[str, Any] | None, digest: str | None) -> str:
    path = audit_dir() / "exports.jsonl"
    if header is None or digest is None or not path.exists():
        return "unknown"
    exported_at = header.get("at")
    seen = False
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        seen = True
        if entry.get("exported_at") == exported_at:
            return "matched" if entry.get("digest") == digest else "differs"
    return "not_in_ledger" if seen else "unknown"


class NotATrail(ValueError):
    """The file is no audit trail export at all: nothing in it to call tampered."""


def is_trail(lines: list[str]) -> bool:
    """Whether the lines are (what is left of) an export: some record is its header or digest, or is
    hash-chained (`seq`, `prev`, `hash`). A trail with records edited, deleted or its header cut is
    still one (verify names the damage); an empty file or someone else's JSON Lines is not (QA5: both
    were reported TAMPERED, and the governance report showed that as the last verification)."""
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and (rec.get("kind") in ("audit_header", "audit_digest")
                                      or {"seq", "prev", "hash"} <= rec.keys()):
            return True
    return False


def verify_file(path: Path) -> Verification:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; export one with `signoff audit export --out {path}`")
    lines = path.read_text(errors="replace").splitlines()
    if not is_trail(lines):
        # Not recorded in verifications.jsonl: it says nothing about any trail's integrity.
        what = "it is empty" if not any(line.strip() for line in lines) else "no line is an audit record"
        raise NotATrail(f"{path} is not an audit trail export (no audit_header record, no hash-chained records: "
                        f"{what}); export one with `signoff audit export --out FILE`, then verify that file")
    result = verify_lines(lines, str(path))
    record = {"at": datetime.now(UTC).isoformat(), **result.as_json()}
    record["issues"] = record["issues"][:20]
    with (audit_dir() / "verifications.jsonl").open("a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
    return result


def last_verification() -> dict[str, Any] | None:
    path = audit_dir() / "verifications.jsonl"
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    return json.loads(lines[-1]) if lines else None


# ---------------------------------------------------------------- archiving closed cases


async def archive_closed(client: Client) -> int:
    """Store the complete history of every closed case (the sweep behind `signoff audit archive`)."""
    from signoff.history import archive_path, write_archive

    count = 0
    async for wf in client.list_workflows(f"WorkflowType='{CASE_TYPE}' AND ExecutionStatus!='Running'"):
        path = archive_path(wf.id, wf.run_id)
        if path.exists():
            try:
                if json.loads(path.read_text()).get("complete"):
                    continue
            except ValueError:
                pass
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        final = None
        if path.exists():
            final = json.loads(path.read_text()).get("final_view")
        write_archive(history, complete=True, final_view=final)
        count += 1
    return count
