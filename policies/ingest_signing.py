"""Signed case input: a case acts only on alerts an ingester signed.

Approving needs Temporal `write` on the namespace (an update), and so does starting a workflow or
signalling one: anyone who may approve could also start a case with alerts of their own, claim the
id of a case ingest is about to open, or slip alerts into a running case to move its score (QA7 F4).
Under `deployment.require_signed_ingest` every case start (`CaseInput`), alert batch (`AlertBatch`)
and merge delivery (`MergeDelivery`) carries an Ed25519 signature by an ingester key the policy
lists (`deployment.ingest_keys`); the case verifies it in workflow code, deterministically, as it
verifies approval tokens. What is not signed is recorded and acted on by nobody.

The signature covers the model's JSON without the signature and without fields at their defaults
(so a field added to a model later does not change what an older ingester signed), under a domain
tag naming the model: a batch's signature does not verify as a case start's.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel

if TYPE_CHECKING:
    from policies.engine import Policy

DOMAIN = b"signoff-ingest-v1\n"
M = TypeVar("M", bound=BaseModel)


def signed_bytes(model: BaseModel) -> bytes:
    body = model.model_dump(mode="json", exclude={"ingest_signature"}, exclude_defaults=True)
    return DOMAIN + type(model).__name__.encode() + b"\n" + json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_input(key: Ed25519PrivateKey, model: M) -> M:
    """`model` with its `ingest_signature` set (base64 of the Ed25519 signature)."""
    signature = base64.b64encode(key.sign(signed_bytes(model))).decode()
    return model.model_copy(update={"ingest_signature": signature})


def ingest_refusal(policy: Policy, model: BaseModel) -> str | None:
    """Why a case must not act on `model` under `policy`, or None (signed by a listed ingester key, or
    the policy does not require signed input)."""
    deployment = policy.deployment
    if not deployment.require_signed_ingest:
        return None
    what = {"CaseInput": "the case's start", "AlertBatch": "these alerts",
            "MergeDelivery": "this merge delivery"}.get(type(model).__name__, type(model).__name__)
    signature = getattr(model, "ingest_signature", "")
    if not signature:
        return (f"{what} carry no ingester signature: they were not sent by Signoff's ingest (someone with "
                "Temporal write access sent them by hand, or an ingester runs without SIGNOFF_INGEST_KEY_FILE)")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        return f"{what} carry a malformed ingester signature"
    message = signed_bytes(model)
    for text in deployment.ingest_keys:
        try:
            Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True)).verify(raw, message)
            return None
        except (InvalidSignature, ValueError, binascii.Error):
            continue
    return (f"{what} carry an ingester signature that no key in deployment.ingest_keys verifies: altered after "
            "signing, forged, or signed by a key the policy no longer lists")
