"""Piped output (`| less`, a CI log, a doc being checked) is read at 160 columns, as every command
prints it: `signoff model list` printed rich's 80-column default, its headers cut to `shipp…`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_model_list_piped_shows_whole_columns(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "SIGNOFF_DEV_PORT")}
    # Nothing listens there: the list comes from the model store and says the live state was not read.
    env.update(PYTHONPATH=str(REPO), SIGNOFF_HOME=str(tmp_path), TEMPORAL_ADDRESS="127.0.0.1:1")
    proc = subprocess.run([sys.executable, "-m", "signoff.cli", "model", "list"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout, proc.stdout
    for header in ("shipped", "incidents", "OOF macro-F1", "rec. threshold", "trained by"):
        assert header in proc.stdout, proc.stdout
    assert "signoff maintainers (shipped default)" in proc.stdout
