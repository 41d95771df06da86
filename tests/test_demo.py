"""`signoff demo`, the main job, run as a newcomer runs it: a new process on the embedded dev server
(free ports, its own SIGNOFF_HOME), the shipped GUIDE slice. It must open the slice's cases, score
them, leave high-impact steps waiting for sign-off and show scored cases with their explanations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.reliability_kit import free_port

REPO = Path(__file__).resolve().parent.parent


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SIGNOFF_POLICY", "TEMPORAL_ADDRESS", "SIGNOFF_CODEC_KEY", "SIGNOFF_CODEC_KEY_FILE")}
    env.update(SIGNOFF_HOME=str(home), SIGNOFF_DEV_PORT=str(free_port()), SIGNOFF_UI_PORT=str(free_port()),
               SIGNOFF_TASK_QUEUE=f"tq-{uuid.uuid4()}", PYTHONPATH=str(REPO), COLUMNS="200")
    return env


def _signoff(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The timeout only keeps a hung start from hanging the suite; it asserts nothing about speed.
    return subprocess.run([sys.executable, "-m", "signoff.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)


def test_the_demo_scores_the_slice_and_shows_why(tmp_path: Path) -> None:
    env = _env(tmp_path / "home")
    try:
        done = _signoff("demo", "--json", env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["accepted"] == summary["records"] > 0 and summary["rejected"] == 0
        assert summary["cases_opened"] == sum(summary["statuses"].values()) > 0
        assert summary["statuses"].get("awaiting_approval", 0) > 0  # high-impact steps wait for a human
        assert set(summary["statuses"]) <= {"awaiting_approval", "awaiting_verdict", "closed"}, summary["statuses"]
        examples = summary["examples"]
        assert [e["status"] for e in examples].count("awaiting_approval") == 1 and len(examples) == 3, examples
        for ex in examples:
            assert ex["predicted"] in ("TruePositive", "BenignPositive", "FalsePositive")
            assert 0.0 <= ex["benign_confidence"] <= 1.0 and len(ex["model"]) == 12
            assert ex["why"] and all("pushed" in line for line in ex["why"]), ex
        gated = next(e for e in examples if e["status"] == "awaiting_approval")
        assert gated["waiting_on"] and gated["decision"]

        # The same example as a person reads it, from the case's own history.
        explained = _signoff("explain", gated["case_id"], env=env)
        assert explained.returncode == 0, explained.stderr[-2000:]
        assert "Top contributions:" in explained.stdout and gated["why"][0] in explained.stdout, explained.stdout
    finally:
        _signoff("stop", env=env)
