"""docs/autonomy.md step 4: a realistic input drift. A connector update stops sending the evidence's
verdict fields (LastVerdict, SuspicionLevel) for the held-out phishing incidents; they arrive as new
incidents (new incident and alert ids: new cases, not duplicates).

    python make_shifted.py [held_out.csv]    -> shifted.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from policies.loader import load_policy
from signoff.sources.guide import read_guide

OFFSET = 10_000_000  # new ids: guide-ORG-(IncidentId + OFFSET)

source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("held_out.csv")
policy = load_policy()
# An incident's alert type is that of its most frequent category, as `signoff ingest` decides it.
phishing = {i.case_id for i in read_guide(source).incidents if policy.alert_type_for_category(i.category) == "phishing"}
with source.open(newline="") as fh:
    reader = csv.DictReader(fh)
    columns = list(reader.fieldnames or ())
    rows = [r for r in reader if f"guide-{r['OrgId']}-{r['IncidentId']}" in phishing]
for row in rows:
    row["IncidentId"] = str(int(row["IncidentId"]) + OFFSET)
    row["AlertId"] = str(int(row["AlertId"]) + OFFSET)
    row["LastVerdict"] = row["SuspicionLevel"] = ""
with open("shifted.csv", "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
incidents = {(r["OrgId"], r["IncidentId"]) for r in rows}
print(f"{len(rows)} evidence rows of {len(incidents)} phishing incidents -> shifted.csv")
