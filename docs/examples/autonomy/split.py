"""docs/autonomy.md step 1: hold out the incidents with IncidentId % 5 == 0 (new incidents of known organisations).

    python split.py [GUIDE_CSV]      # default: ../shared/data/guide/guide_dev.csv beside the repository
writes train.csv and held_out.csv in the working directory.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
source = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data" / "guide" / "guide_dev.csv"
with source.open(newline="") as fh:
    reader = csv.DictReader(fh)
    columns = list(reader.fieldnames or ())
    rows = list(reader)
for name, keep in (("train.csv", lambda r: int(r["IncidentId"]) % 5 != 0),
                   ("held_out.csv", lambda r: int(r["IncidentId"]) % 5 == 0)):
    chosen = [r for r in rows if keep(r)]
    with open(name, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(chosen)
    incidents = {(r["OrgId"], r["IncidentId"]) for r in chosen}
    print(f"{name} {len(chosen)} rows {len(incidents)} incidents")
