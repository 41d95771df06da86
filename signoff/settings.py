"""Where Signoff finds its server and keeps its local state. Environment first, then defaults."""

from __future__ import annotations

import os
from pathlib import Path

TASK_QUEUE = "signoff-cases"
NAMESPACE_ENV = "TEMPORAL_NAMESPACE"
ADDRESS_ENV = "TEMPORAL_ADDRESS"


def home() -> Path:
    """Local state: `$SIGNOFF_HOME`, else `.signoff/` in the working directory. Created on demand."""
    path = home_path()
    path.mkdir(parents=True, exist_ok=True)
    return path


def home_path() -> Path:
    """Where `home()` is, without creating it (for commands that only read local state)."""
    return Path(os.environ.get("SIGNOFF_HOME") or Path.cwd() / ".signoff")


def temporal_address() -> str:
    return os.environ.get(ADDRESS_ENV, "localhost:7233")


def namespace() -> str:
    return os.environ.get(NAMESPACE_ENV, "default")


def task_queue() -> str:
    return os.environ.get("SIGNOFF_TASK_QUEUE", TASK_QUEUE)
