"""Signed approvals: an approver's Ed25519 signature over (case, step, decision, expiry, nonce).

`signoff approve` signs with the approver's private key; the workflow verifies against the public
key in policy. Verification is pure computation, so it runs inside the workflow (validator and
signal handler alike) and replays deterministically.

Case-wide decisions (`signoff rollback`, `signoff close`) use the same token with the step
`CASE_STEP` and the decision "rollback" or "close".

Token: base64url(canonical JSON claims) "." base64url(signature over those exact bytes).

Chat approvals (signoff/chat/): a chat bridge verifies the platform's own request signature, maps
the chat user to an approver through the policy (`approvers.NAME.slack_user`) and signs the token
with the bridge's key, adding the claim `via` ("slack:U0ABC123"). Such a token verifies with the
key of the bridge it names (`deployment.chat_bridges.slack.public_key`), and only for an approver
whose policy entry declares exactly that chat user; every other check applies unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from policies.engine import CHAT_IDENTITY_FIELDS, Policy, parse_duration

CASE_STEP = "(case)"  # the step claim of a token for a case-wide decision: rollback, close, assign, note, retry
CASE_DECISIONS = ("rollback", "close", "assign", "note", "retry", "detach", "merge")
# How far in the future a token's `iat` may lie (clock skew between the signer and the worker).
# Without this bound a token issued "in 30 days" with a 10-minute lifetime passed the TTL check now.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_approval(
    key: Ed25519PrivateKey, *, case_id: str, step: str, decision: str, approver: str,
    ttl: timedelta = timedelta(minutes=10), now: datetime | None = None, nonce: str | None = None,
    via: str | None = None,
) -> str:
    """`via` ("slack:U0ABC123") only from a chat bridge, signing with the bridge's key."""
    now = now or datetime.now(UTC)
    claims: dict[str, object] = {
        "case": case_id, "step": step, "decision": decision, "approver": approver,
        "exp": int((now + ttl).timestamp()), "iat": int(now.timestamp()), "nonce": nonce or secrets.token_hex(16),
    }
    if via is not None:
        claims["via"] = via
    body = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    return f"{_b64(body)}.{_b64(key.sign(body))}"


def sign_case_decision(
    key: Ed25519PrivateKey, *, case_id: str, decision: str, approver: str,
    ttl: timedelta = timedelta(minutes=10), now: datetime | None = None, nonce: str | None = None,
) -> str:
    """A token for a case-wide decision (rollback, close, assign, note, retry): bound to the case and the decision."""
    if decision not in CASE_DECISIONS:
        raise ValueError(f"case-wide decisions are {CASE_DECISIONS}, not {decision!r}")
    return sign_approval(key, case_id=case_id, step=CASE_STEP, decision=decision, approver=approver,
                         ttl=ttl, now=now, nonce=nonce)


def token_nonce(token: str) -> str:
    return hashlib.sha256(token.split(".", 1)[0].encode()).hexdigest()


def token_claims(token: str) -> dict[str, object] | None:
    """The claims of a token, unverified (None when it does not parse): for display and routing only."""
    try:
        claims = json.loads(_unb64(token.split(".", 1)[0]))
    except (ValueError, json.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def token_channel(token: str | None) -> str | None:
    """The chat channel a token came through ("slack:U0ABC123"), or None (signed by the approver)."""
    claims = token_claims(token) if token else None
    via = claims.get("via") if claims else None
    return via if isinstance(via, str) else None


def channel_text(channel: str | None) -> str:
    """"slack:U0ABC123" as people read it: "Slack U0ABC123"."""
    if not channel:
        return ""
    bridge, _, user = channel.partition(":")
    return f"{bridge.capitalize()} {user}".strip()


def public_key_text(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def token_refusal(
    policy: Policy, *, case_id: str, step: str, decision: str, approver: str, token: str | None,
    now: datetime, used_nonces: set[str], max_skew: timedelta | None = MAX_CLOCK_SKEW, scope: str | None = None,
) -> str | None:
    """Why a token (or its absence) must be refused, or None when it proves the approver's intent.

    `now` is workflow time where this runs in workflow code. `max_skew=None` skips the check of
    `iat` against `now` (only to replay histories recorded before that check existed). `scope`: the
    claim the token must carry (None: a case decision's token, which has none; QA7: a governance
    token whose claims happened to match a case's step counted as that case's approval).
    """
    if token is None:
        if policy.deployment.trust_unsigned_approvals:
            return None
        if decision in CASE_DECISIONS:
            return (f"unsigned {decision} requests are not accepted by this deployment's policy: "
                    f"use `signoff {decision}` with your approver key")
        return ("unsigned approvals are not accepted by this deployment's policy: "
                "approve with `signoff approve` and your approver key")
    try:
        body_text, sig_text = token.split(".", 1)
        body = _unb64(body_text)
        claims = json.loads(body)
        signature = _unb64(sig_text)
    except (ValueError, json.JSONDecodeError):
        return "malformed approval token: expected base64url(claims).base64url(signature)"
    if not isinstance(claims, dict):
        return "malformed approval token: its claims are not a JSON object"
    if claims.get("scope") != scope:
        return (f"this token is for a {claims.get('scope')} change, not a case decision: sign the decision itself "
                f"with `signoff {'approve' if decision in ('approve', 'reject') else decision}`"
                if scope is None else f"this token is not for a {scope} change")
    approver_entry = policy.approvers.get(approver)
    if "via" in claims:
        refusal = _bridge_refusal(policy, claims["via"], approver, body, signature)
        if refusal:
            return refusal
    else:
        if approver_entry is None or not approver_entry.public_key:
            return f"no public key for {approver!r} in policy: signed approvals cannot be verified"
        try:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(approver_entry.public_key))
            public.verify(signature, body)
        except (InvalidSignature, ValueError):
            return f"forged or corrupted token: the signature does not verify with {approver!r}'s key"
    expected = {"case": case_id, "step": step, "decision": decision, "approver": approver}
    for field, value in expected.items():
        if claims.get(field) != value:
            return f"token is for {field} {claims.get(field)!r}, not {value!r}"
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int):
        return "token has no valid expiry"
    if now.timestamp() > exp:
        return f"token expired at {datetime.fromtimestamp(exp, UTC).isoformat()}"
    if max_skew is not None and iat > now.timestamp() + max_skew.total_seconds():
        return (f"token issued in the future ({datetime.fromtimestamp(iat, UTC).isoformat()}, more than "
                f"{int(max_skew.total_seconds() // 60)} minutes ahead): check the signer's clock and sign again")
    if exp - iat > parse_duration(policy.deployment.approval_token_max_ttl).total_seconds():
        return f"token lifetime exceeds the policy maximum {policy.deployment.approval_token_max_ttl}"
    if token_nonce(token) in used_nonces:
        return "token already used (replay)"
    return None


def _bridge_refusal(policy: Policy, via: object, approver: str, body: bytes, signature: bytes) -> str | None:
    """Why a chat bridge's token (claim `via`) does not prove `approver`'s intent, or None."""
    if not isinstance(via, str) or ":" not in via:
        return f"malformed approval token: via {via!r} is not like 'slack:U0ABC123'"
    bridge, _, chat_user = via.partition(":")
    entry = policy.deployment.chat_bridges.get(bridge)
    if entry is None or bridge not in CHAT_IDENTITY_FIELDS:
        return (f"token comes through the {bridge!r} chat bridge, which policy does not trust "
                f"(no deployment.chat_bridges.{bridge}.public_key)")
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(entry.public_key)).verify(signature, body)
    except (InvalidSignature, ValueError):
        return f"forged or corrupted token: the signature does not verify with the {bridge} chat bridge's key"
    field = CHAT_IDENTITY_FIELDS[bridge]
    approver_entry = policy.approvers.get(approver)
    declared = getattr(approver_entry, field) if approver_entry is not None else None
    if not declared:
        return (f"{approver!r} has no {field} in policy: approvals through {bridge.capitalize()} cannot be tied to "
                f"them (add approvers.{approver}.{field} by pull request)")
    if declared != chat_user:
        return (f"token comes from {bridge.capitalize()} user {chat_user}, but policy declares {declared} for "
                f"{approver!r}")
    return None


# ---------------------------------------------------------------- governance changes
#
# A governance change (a threshold, autonomy, a model; workflows/governance.py) is signed like an
# approval, with the claim `scope: "governance"`: `case` is the governance workflow's id, `step` the
# change's subject (an alert type, a model id, or "*"), `decision` the kind of change and `approver`
# the person. Case tokens have no scope, so neither kind of token counts as the other.

GOVERNANCE_SCOPE = "governance"
UNSIGNED_GOVERNANCE = (
    "unsigned governance changes are not accepted by this deployment's policy: make the change with "
    "`signoff policy`, `signoff autonomy` or `signoff model` --as YOU on a machine that has your approver key "
    "(`signoff keys create --as YOU` once, its public key under approvers.YOU.public_key in the policy)")


def sign_governance_change(
    key: Ed25519PrivateKey, *, workflow_id: str, change: str, subject: str, person: str,
    ttl: timedelta = timedelta(minutes=10), now: datetime | None = None, nonce: str | None = None,
) -> str:
    """A token for one governance change by `person`, bound to the governance workflow, the change and its subject."""
    now = now or datetime.now(UTC)
    claims: dict[str, object] = {
        "scope": GOVERNANCE_SCOPE, "case": workflow_id, "step": subject, "decision": change, "approver": person,
        "exp": int((now + ttl).timestamp()), "iat": int(now.timestamp()), "nonce": nonce or secrets.token_hex(16),
    }
    body = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    return f"{_b64(body)}.{_b64(key.sign(body))}"


def token_expiry(token: str) -> int | None:
    """The `exp` claim of a token (unverified), for keeping a spent nonce only as long as it matters."""
    claims = token_claims(token)
    exp = claims.get("exp") if claims else None
    return exp if isinstance(exp, int) else None


def governance_token_refusal(
    policy: Policy | None, *, workflow_id: str, change: str, subject: str, person: str, token: str | None,
    now: datetime, used_nonces: set[str],
) -> str | None:
    """Why a governance change's token (or its absence) must be refused, or None.

    `policy=None`: only what does not depend on the policy (the claims, the expiry, a replayed
    nonce); the signature, the key and whether unsigned changes count are then left to a check
    with the policy.
    """
    if token is None:
        if policy is None or policy.deployment.trust_unsigned_approvals:
            return None
        return UNSIGNED_GOVERNANCE
    claims = token_claims(token)
    if claims is None or "." not in token:
        return "malformed governance token: expected base64url(claims).base64url(signature)"
    if claims.get("scope") != GOVERNANCE_SCOPE:
        return ("this token is not for a governance change (a case approval's token?): sign the change itself "
                "with `signoff policy|autonomy|model ... --as YOU`")
    if "via" in claims:
        return "governance changes are not taken through a chat bridge: use `signoff policy|autonomy|model` with your key"
    expected = {"case": workflow_id, "step": subject, "decision": change, "approver": person}
    for field, value in expected.items():
        if claims.get(field) != value:
            label = {"case": "workflow", "step": "subject", "decision": "change", "approver": "person"}[field]
            return f"token is for {label} {claims.get(field)!r}, not {value!r}: sign this change again"
    exp = claims.get("exp")
    if not isinstance(exp, int):
        return "token has no valid expiry"
    if now.timestamp() > exp:
        return f"token expired at {datetime.fromtimestamp(exp, UTC).isoformat()}: sign this change again"
    if token_nonce(token) in used_nonces:
        return "token already used (replay): every change needs a token of its own"
    if policy is None:
        return None
    return token_refusal(policy, case_id=workflow_id, step=subject, decision=change, approver=person, token=token,
                         now=now, used_nonces=used_nonces, scope=GOVERNANCE_SCOPE)
