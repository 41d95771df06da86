"""Signed approvals: an approver's Ed25519 signature over (case, step, decision, expiry, nonce).

`signoff approve` signs with the approver's private key; the workflow verifies against the public
key in policy. Verification is pure computation, so it runs inside the workflow (validator and
signal handler alike) and replays deterministically.

Case-wide decisions (`signoff rollback`, `signoff close`) use the same token with the step
`CASE_STEP` and the decision "rollback" or "close".

Token: base64url(canonical JSON claims) "." base64url(signature over those exact bytes).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from policies.engine import Policy, parse_duration

CASE_STEP = "(case)"  # the step claim of a token for a case-wide decision: rollback, close
CASE_DECISIONS = ("rollback", "close")
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
) -> str:
    now = now or datetime.now(UTC)
    claims = {
        "case": case_id, "step": step, "decision": decision, "approver": approver,
        "exp": int((now + ttl).timestamp()), "iat": int(now.timestamp()), "nonce": nonce or secrets.token_hex(16),
    }
    body = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    return f"{_b64(body)}.{_b64(key.sign(body))}"


def sign_case_decision(
    key: Ed25519PrivateKey, *, case_id: str, decision: str, approver: str,
    ttl: timedelta = timedelta(minutes=10), now: datetime | None = None, nonce: str | None = None,
) -> str:
    """A token for a case-wide decision ("rollback" or "close"): bound to the case and the decision."""
    if decision not in CASE_DECISIONS:
        raise ValueError(f"case-wide decisions are {CASE_DECISIONS}, not {decision!r}")
    return sign_approval(key, case_id=case_id, step=CASE_STEP, decision=decision, approver=approver,
                         ttl=ttl, now=now, nonce=nonce)


def token_nonce(token: str) -> str:
    return hashlib.sha256(token.split(".", 1)[0].encode()).hexdigest()


def public_key_text(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def token_refusal(
    policy: Policy, *, case_id: str, step: str, decision: str, approver: str, token: str | None,
    now: datetime, used_nonces: set[str], max_skew: timedelta | None = MAX_CLOCK_SKEW,
) -> str | None:
    """Why a token (or its absence) must be refused, or None when it proves the approver's intent.

    `now` is workflow time where this runs in workflow code. `max_skew=None` skips the check of
    `iat` against `now` (only to replay histories recorded before that check existed).
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
    approver_entry = policy.approvers.get(approver)
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
