"""The feature vector a case was scored on, as `signoff explain` shows it: decoded from the score's
record (`ScoreResult.feature_vector`), checked against its `feature_hash`, named by its schema."""

from __future__ import annotations

import json
from typing import Any

from signoff.models import ScoreResult
from signoff.scoring import recorded_vector


def _names(schema: str, model_id: str) -> tuple[tuple[str, ...] | None, str]:
    """The feature names the vector is ordered by, and where they came from."""
    try:
        from signoff.scoring.features import FEATURE_NAMES, SCHEMA_VERSION

        if recorded_vector.schema_id(SCHEMA_VERSION, FEATURE_NAMES) == schema:
            return tuple(FEATURE_NAMES), "this Signoff version"
    except ImportError:  # a slim install without the scorer: the artifact may still say
        pass
    try:  # an older schema: the model artifact lists the names it was trained with
        from signoff.scoring import model_store

        doc = json.loads(model_store.read_artifact(model_id))
        names = tuple(str(n) for n in doc["feature_names"])
        if recorded_vector.schema_id(int(doc["schema_version"]), names) == schema:
            return names, f"the model artifact {model_id[:16]}"
    except (ImportError, OSError, ValueError, KeyError, TypeError):
        pass
    return None, (f"unknown: feature schema {schema or '(none recorded)'} is neither this Signoff version's nor in "
                  f"the model store (model {model_id[:16]}); features are shown by position")


def recorded_features(score: ScoreResult) -> dict[str, Any]:
    """The vector's record for `explain --json`: the raw text, its hash check, and every non-zero
    feature by name with its value (and its TreeSHAP contribution where the score kept one)."""
    check = recorded_vector.check(score.feature_vector, score.feature_hash)
    out: dict[str, Any] = {"feature_vector": score.feature_vector, "feature_schema": score.feature_schema,
                           "feature_vector_check": check, "features": [], "feature_names_from": ""}
    if check in ("not recorded", "undecodable"):
        return out
    values = recorded_vector.values(score.feature_vector)
    names, source = _names(score.feature_schema, score.model_id)
    if names is not None and len(names) != len(values):
        source = f"unknown: {len(values)} values but {len(names)} feature names; shown by position"
        names = None
    contributions = {c.feature: c.contribution for c in score.contributions}
    out["feature_names_from"] = source
    out["features"] = [
        {"feature": name, "value": value, "contribution": contributions.get(name)}
        for name, value in zip(names or tuple(f"#{i}" for i in range(len(values))), values, strict=True)
        if value != 0.0
    ]
    out["feature_count"] = len(values)
    return out


CHECK_TEXT = {
    "matches": "recorded, hashes to feature_hash",
    "mismatch": "recorded, but does NOT hash to feature_hash: the record is inconsistent",
    "undecodable": "recorded, but not decodable (not base64 float32)",
    "not recorded": "not recorded (scored before Signoff kept the vector; only its hash is known)",
}


def render_features(s: dict[str, Any], full: bool) -> list[str]:
    """Lines for the Score section: one line on the vector; with `full`, every non-zero feature."""
    check = s.get("feature_vector_check") or "not recorded"
    head = f"  Feature vector: {CHECK_TEXT.get(check, check)}"
    if s.get("features") is not None and check in ("matches", "mismatch"):
        head += f"; {len(s['features'])} of {s.get('feature_count', '?')} features non-zero"
        if not full:
            head += " (--features lists them)"
    lines = [head]
    if full and s.get("features"):
        lines.append(f"  Features (non-zero, names from {s['feature_names_from']}):")
        for f in s["features"]:
            lines.append(f"    {f['feature']} = {f['value']:.9g}"
                         + (f"  (contribution {f['contribution']:+.4f})" if f["contribution"] is not None else ""))
    return lines
