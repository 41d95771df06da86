"""Which chat messages the bridge has posted: one per (case, step), kept across restarts.

`$SIGNOFF_HOME/chat/slack-CHANNEL.json`: {"CASE/STEP": {"case", "step", "channel", "ts", "digest",
"done"}}. Written whole to a temporary file and renamed, so a crash leaves the old or the new file,
never half of one. A second notifier pass (or a restarted bridge) finds the message and posts none.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from signoff import settings


@dataclass
class Posted:
    case: str
    step: str
    channel: str
    ts: str
    digest: str  # sha256 of the text last written (a change means chat.update)
    done: bool = False  # the step no longer waits and the message says so


class PostedMessages:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._items: dict[str, Posted] = {}
        if path.exists():
            raw = json.loads(path.read_text() or "{}")
            self._items = {k: Posted(**v) for k, v in raw.items()}

    @classmethod
    def for_channel(cls, platform: str, channel: str, home: Path | None = None) -> PostedMessages:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", channel)
        return cls((home or settings.home()) / "chat" / f"{platform}-{safe}.json")

    @staticmethod
    def key(case: str, step: str) -> str:
        return f"{case}/{step}"

    def get(self, case: str, step: str) -> Posted | None:
        with self._lock:
            return self._items.get(self.key(case, step))

    def open_items(self) -> list[Posted]:
        with self._lock:
            return [p for p in self._items.values() if not p.done]

    def put(self, item: Posted) -> None:
        with self._lock:
            self._items[self.key(item.case, item.step)] = item
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".posted-")
        with os.fdopen(fd, "w") as fh:
            json.dump({k: asdict(v) for k, v in self._items.items()}, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
