"""Where models live and which one is active.

Layout under `signoff.settings.home() / "models"`:

    <sha256>/model.json      the artifact (its sha256 is the directory name and the model id)
    <sha256>/manifest.json   how it was made: data hash, params, seed, libraries, CV metrics, and
                             who trained it, when and why (`trained_by`, `trained_at`, `reason`)
    promotions.jsonl         append-only history: promote / rollback, who, when, why
    ACTIVE                   the active model id (derived from the history; a convenience copy)

The shipped default model sits in the package at `signoff/models/default/` and is used when no
local model has been promoted. Promoting never retrains; rolling back re-activates the model that
was active before the last promotion still in force.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from signoff import settings
from signoff.scoring.artifact import sha256

ARTIFACT = "model.json"
MANIFEST = "manifest.json"


class ModelStoreError(ValueError):
    pass


class Promotion(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["promote", "rollback"]
    model_id: str | None  # the model active after this entry (None: the shipped default)
    previous: str | None
    by: str
    reason: str
    at: datetime


class ModelInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_id: str
    path: str
    shipped: bool
    active: bool
    trained_by: str | None = None
    trained_at: str | None = None
    reason: str | None = None
    data_sha256: str | None = None
    incidents: int | None = None
    macro_f1: float | None = None
    ece: float | None = None
    recommended_threshold: float | None = None


def store_dir() -> Path:
    path = settings.home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_dir() -> Path:
    return Path(str(resources.files("signoff").joinpath("models", "default")))


_default_ids: dict[tuple[str, int, int], str] = {}


def default_model_id() -> str:
    path = default_dir() / ARTIFACT
    if not path.exists():
        raise ModelStoreError(
            f"the shipped default model is missing ({path}); reinstall Signoff or train one with "
            "`signoff model train --data F --format guide` and promote it"
        )
    # Hashing the 2.5 MB artifact costs milliseconds and every scored case asks: hash once per
    # file version (a reinstalled model has a new size or mtime, so it is hashed again).
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    found = _default_ids.get(key)
    if found is None:
        found = _default_ids[key] = sha256(path.read_bytes())
    return found


def _model_dir(model_id: str) -> Path:
    local = store_dir() / model_id
    if (local / ARTIFACT).exists():
        return local
    if (default_dir() / ARTIFACT).exists() and default_model_id() == model_id:
        return default_dir()
    known = ", ".join(m.model_id[:12] for m in list_models()) or "none"
    raise ModelStoreError(f"no model {model_id!r} in {store_dir()} (known: {known}); see `signoff model list`")


def resolve(model_id: str) -> str:
    """A full model id from a unique prefix (at least 8 characters)."""
    if len(model_id) == 64:
        return model_id
    if len(model_id) < 8:
        raise ModelStoreError("give at least 8 characters of a model id")
    matches = [m.model_id for m in list_models() if m.model_id.startswith(model_id)]
    if len(matches) != 1:
        raise ModelStoreError(f"model id prefix {model_id!r} matches {len(matches)} models; see `signoff model list`")
    return matches[0]


def read_artifact(model_id: str) -> bytes:
    """The artifact bytes of a model, verified against its id."""
    model_id = resolve(model_id)
    blob = (_model_dir(model_id) / ARTIFACT).read_bytes()
    actual = sha256(blob)
    if actual != model_id:
        raise ModelStoreError(f"model {model_id} is corrupt: its artifact hashes to {actual}; retrain or restore it")
    return blob


def read_manifest(model_id: str) -> dict[str, Any]:
    path = _model_dir(resolve(model_id)) / MANIFEST
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# Who trained a model, when and why: in the manifest, never in the artifact (the model id and the
# same-bytes-on-retraining promise do not depend on who ran the training).
PROVENANCE = ("trained_by", "trained_by_from", "requested_by", "reason", "trained_at")


def provenance(by: str, reason: str, source: str, **extra: str) -> dict[str, str]:
    """A training's attribution, stamped now. `source`: how `by` is known ("--as", "local OS account",
    "retrain workflow")."""
    return {"trained_by": by, "trained_by_from": source, "reason": reason,
            "trained_at": datetime.now(UTC).isoformat(), **extra}


def _attributed(target: Path, model_id: str, manifest: dict[str, Any], trained: dict[str, str] | None) -> dict[str, Any]:
    """The manifest with its attribution. The same bytes trained again (the same data and seed, by
    anyone) keep the first training's who/when/why; the later trainings are listed in `trained_again`.
    Another model written over the folder (`--out DIR` again) starts its own record."""
    before: Any = {}
    try:
        if (target / ARTIFACT).exists() and sha256((target / ARTIFACT).read_bytes()) == model_id:
            before = json.loads((target / MANIFEST).read_text()) if (target / MANIFEST).exists() else {}
    except (OSError, ValueError):
        before = {}
    first = {k: before[k] for k in PROVENANCE if isinstance(before, dict) and k in before}
    again = list(before.get("trained_again") or []) if isinstance(before, dict) else []
    if not first:
        return {**manifest, **(trained or {})}
    again = [*again, trained] if trained else again
    return {**manifest, **first, **({"trained_again": again} if again else {})}


def read_manifest_at(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    data = json.loads(path.read_text()) if path.exists() else {}
    return data if isinstance(data, dict) else {}


def save(model_id: str, blob: bytes, manifest: dict[str, Any], directory: Path | None = None,
         trained: dict[str, str] | None = None) -> Path:
    """Write artifact + manifest (atomically) under the store (or `directory`). Idempotent.

    `trained`: who trained it, when and why (`provenance`), recorded in the manifest."""
    if sha256(blob) != model_id:
        raise ModelStoreError("artifact bytes do not match the model id")
    target = directory or store_dir() / model_id
    target.mkdir(parents=True, exist_ok=True)
    manifest = _attributed(target, model_id, manifest, trained)
    for name, data in ((ARTIFACT, blob), (MANIFEST, manifest_bytes(manifest))):
        tmp = target / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, target / name)
    return target


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, sort_keys=True, indent=1) + "\n").encode()


def history() -> list[Promotion]:
    path = store_dir() / "promotions.jsonl"
    if not path.exists():
        return []
    return [Promotion.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]


def _stack(entries: list[Promotion]) -> list[str]:
    stack: list[str] = []
    for entry in entries:
        if entry.action == "promote" and entry.model_id:
            stack.append(entry.model_id)
        elif entry.action == "rollback" and stack:
            stack.pop()
    return stack


def active_model_id() -> str:
    """The promoted model in force, else the shipped default."""
    stack = _stack(history())
    return stack[-1] if stack else default_model_id()


def _active_or_none() -> str | None:
    try:
        return active_model_id()
    except ModelStoreError:
        return None


def _record(entry: Promotion) -> None:
    path = store_dir() / "promotions.jsonl"
    with path.open("a") as handle:
        handle.write(entry.model_dump_json() + "\n")
    active = store_dir() / "ACTIVE"
    active.write_text((entry.model_id or "default") + "\n")


def promote(model_id: str, by: str, reason: str) -> Promotion:
    if not reason.strip():
        raise ModelStoreError("a promotion needs a reason (--reason)")
    model_id = resolve(model_id)
    read_artifact(model_id)  # exists and intact
    entry = Promotion(
        action="promote", model_id=model_id, previous=_active_or_none(), by=by, reason=reason, at=datetime.now(UTC)
    )
    _record(entry)
    return entry


def rollback(by: str, reason: str) -> Promotion:
    if not reason.strip():
        raise ModelStoreError("a rollback needs a reason (--reason)")
    entries = history()
    stack = _stack(entries)
    if not stack:
        raise ModelStoreError("nothing to roll back: no promoted model is active (the shipped default is in force)")
    remaining = stack[:-1]
    entry = Promotion(
        action="rollback",
        model_id=remaining[-1] if remaining else None,
        previous=stack[-1],
        by=by,
        reason=reason,
        at=datetime.now(UTC),
    )
    _record(entry)
    return entry


def _info(model_id: str, path: Path, shipped: bool, active: str) -> ModelInfo:
    manifest: dict[str, Any] = {}
    if (path / MANIFEST).exists():
        manifest = json.loads((path / MANIFEST).read_text())
    cv = manifest.get("cv", {})
    threshold = manifest.get("recommended_threshold", {})
    return ModelInfo(
        model_id=model_id,
        path=str(path),
        shipped=shipped,
        active=model_id == active,
        data_sha256=manifest.get("data", {}).get("sha256"),
        incidents=manifest.get("data", {}).get("incidents"),
        macro_f1=cv.get("macro_f1"),
        ece=cv.get("ece"),
        recommended_threshold=threshold.get("threshold"),
        trained_by=manifest.get("trained_by"),
        trained_at=manifest.get("trained_at"),
        reason=manifest.get("reason"),
    )


def list_models() -> list[ModelInfo]:
    stack = _stack(history())
    out: list[ModelInfo] = []
    default_id: str | None = None
    if (default_dir() / ARTIFACT).exists():
        default_id = sha256((default_dir() / ARTIFACT).read_bytes())
    active = stack[-1] if stack else (default_id or "")
    if default_id:
        out.append(_info(default_id, default_dir(), True, active))
    for path in sorted(store_dir().iterdir()):
        if path.is_dir() and (path / ARTIFACT).exists() and path.name != default_id:
            out.append(_info(path.name, path, False, active))
    return out
