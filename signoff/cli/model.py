"""`signoff model ...`: train, evaluate, cross-validate, list, promote and roll back triage models."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from signoff import settings
from signoff.cli._common import run
from signoff.display import SafeConsole

app = typer.Typer(
    help="Triage models: train (deterministic), evaluate, cross-validate, list, promote, roll back.",
    no_args_is_help=True,
)


def _console(stderr: bool = False) -> SafeConsole:
    """Piped output is printed 160 columns wide, as the other commands print it (rich's 80-column
    default cut `model list`'s headers to `shipp…`); a terminal or `COLUMNS` decides otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    return SafeConsole(stderr=stderr, width=None if stream.isatty() or os.environ.get("COLUMNS") else 160)


err = _console(stderr=True)
out = _console()


@app.callback()
def _fit_consoles() -> None:
    # Per invocation: the streams and COLUMNS of this run (a test runner swaps them), not of the import.
    global err, out
    err, out = _console(stderr=True), _console()


DATA = typer.Option(..., "--data", help="Labelled GUIDE CSV file.", exists=True, dir_okay=False, readable=True)
FORMAT = typer.Option("guide", "--format", help="Input format; labelled training data is GUIDE ('guide').")
JSON = typer.Option(False, "--json", help="Print one JSON object on stdout.")
JOBS = typer.Option(
    0, "--jobs", min=0, help="Worker processes for the independent folds; 0 = one per core. The result is the same for any value."
)
NO_THRESHOLD = "none (infeasible: keep humans in the loop)"  # as signoff.scoring.evaluate (not imported: slow)
BUDGET = typer.Option(
    0.005,
    "--risk-budget",
    min=0.0,
    max=1.0,
    help="Largest share of true positives you accept being auto-closed (95% upper bound). 0.005 = 0.5%.",
)


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)  # text (paths, names), never markup
    raise typer.Exit(1)


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def _progress(label: str) -> Iterator[Callable[[str], None]]:
    """A spinner on a terminal; one line per step with the elapsed time otherwise (logs, CI)."""
    if not sys.stderr.isatty():
        started = time.monotonic()

        def log(message: str) -> None:
            sys.stderr.write(f"[{time.monotonic() - started:7.1f}s] {label}: {message}\n")
            sys.stderr.flush()

        log("started")
        yield log
        log("done")
        return
    with err.status(label) as status:

        def say(message: str) -> None:
            status.update(f"{label}: {message}")

        yield say


def _read(data: Path, fmt: str) -> tuple[Any, str]:
    from signoff.sources.guide import GuideFormatError, read_guide

    if fmt != "guide":
        _fail(f"--format {fmt!r} is not supported here: models train and evaluate on labelled GUIDE data (--format guide)")
    try:
        read = read_guide(data)
    except GuideFormatError as exc:
        _fail(str(exc))
    if read.rejected:
        err.print(f"[yellow]{len(read.rejected)} rows rejected[/] (first: line {read.rejected[0].line}: {read.rejected[0].reason})")
    return read, hashlib.sha256(data.read_bytes()).hexdigest()


def _cases(read: Any) -> Any:
    from signoff.scoring.train import cases_from_guide

    try:
        return cases_from_guide(read)
    except ValueError as exc:
        _fail(str(exc))


@app.command()
def train(
    data: Path = DATA,
    fmt: str = FORMAT,
    seed: int = typer.Option(7, "--seed", help="Random seed: same data + seed → the same model bytes and id."),
    risk_budget: float = BUDGET,
    out_dir: Path | None = typer.Option(None, "--out", help="Write the model here instead of the local store."),
    jobs: int = JOBS,
    user: str | None = typer.Option(None, "--as", help="Who trains it (recorded in its manifest; default: your OS "
                                    "account, recorded as such). Training activates nothing: no role is needed."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in its manifest)."),
    as_json: bool = JSON,
) -> None:
    """Train a model deterministically and store it (it is NOT activated: promote it to use it).

    Who trained it, when and why go into its manifest.json, never into model.json: the model id
    (sha256 of model.json) stays the same for the same data and seed, whoever trains it."""
    from signoff.scoring import model_store
    from signoff.scoring.parallel import default_jobs
    from signoff.scoring.train import TrainParams
    from signoff.scoring.train import train as run_train

    read, digest = _read(data, fmt)
    cases = _cases(read)
    params = TrainParams(seed=seed, risk_budget=risk_budget)
    with _progress(f"training on {len(cases)} incidents") as say:
        trained = run_train(cases, params, {"sha256": digest, "name": data.name, "rows": read.rows,
                                            "rejected_rows": len(read.rejected), "format": fmt}, say,
                            jobs or default_jobs())
    who = model_store.provenance(user, reason, "--as") if user else model_store.provenance(_os_account(), reason,
                                                                                         "local OS account")
    path = model_store.save(trained.model_id, trained.artifact, trained.manifest, out_dir, trained=who)
    recorded = model_store.read_manifest_at(path)
    from signoff.autonomy.drift import save_training_reference

    save_training_reference(trained, cases, path)  # drift check reference (signoff/autonomy/drift.py)
    cv = trained.manifest["cv"]
    summary: dict[str, Any] = {
        "model_sha256": trained.model_id,
        "path": str(path),
        "incidents": len(cases),
        "data_sha256": digest,
        "seed": seed,
        "oof_macro_f1": cv["macro_f1"],
        "oof_ece": cv["ece"],
        "recommended_threshold": cv["threshold"],
        **{k: recorded.get(k) for k in ("trained_by", "trained_by_from", "reason", "trained_at", "trained_again")
           if k in recorded},
    }
    if as_json:
        _emit(summary)
        return
    out.print(f"model [bold]{trained.model_id}[/] saved in {path}")
    out.print(_trained_line(recorded), highlight=False)
    out.print(f"out-of-fold macro-F1 {cv['macro_f1']:.3f}, ECE {cv['ece']:.3f}")
    rec = cv["threshold"]
    if rec.get("feasible", True):
        out.print(
            f"recommended threshold {rec['threshold']:.4f} for risk budget {risk_budget:.3%}: auto-closes "
            f"{rec['at']['auto_closed_share']:.1%} of training incidents (out-of-fold)"
        )
    else:
        out.print(
            f"recommended threshold: {NO_THRESHOLD}: no threshold keeps the 95% upper bound on true positives "
            f"closed within the risk budget {risk_budget:.3%} ({rec['at']['tp_total']} true positives out-of-fold)"
        )
    out.print(f"activate it with: signoff model promote {trained.model_id[:12]} --as USER --reason TEXT")


def _os_account() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment or the password database
        return "unknown"


def _trained_line(manifest: dict[str, Any]) -> str:
    line = (f"trained by {manifest.get('trained_by')} ({manifest.get('trained_by_from')}) at "
            f"{manifest.get('trained_at')}: {manifest.get('reason') or 'no reason given (--reason)'}")
    if manifest.get("trained_again"):
        line += (f"; the same bytes were trained before, so that first record is kept and this run is listed in "
                 f"trained_again ({len(manifest['trained_again'])})")
    return escape(line)


async def _live_governance() -> tuple[Any, str]:
    """The live governance state cases decide under, and where the thresholds come from. Without
    a reachable server, evaluation still runs, at the policy file's values, and says so."""
    import asyncio

    from temporalio.service import RPCError

    from signoff.autonomy.client import read_live
    from signoff.client import connect

    address = settings.temporal_address()
    try:
        client = await asyncio.wait_for(connect(), 5)
        live = await asyncio.wait_for(read_live(client), 10)
    except (ConnectionError, TimeoutError, RuntimeError, OSError, RPCError) as exc:  # unreachable: the file's values
        return None, (f"policy file (Temporal at {address} not reachable: {type(exc).__name__}; thresholds set "
                      "with `signoff policy set-threshold` are not applied; start the server or set TEMPORAL_ADDRESS)")
    if live is None:
        return None, f"policy file (no governance workflow at {address} yet: no threshold has been set live)"
    return live, f"live governance at {address} (revision {live.revision})"


@app.command()
def evaluate(
    data: Path = DATA,
    fmt: str = FORMAT,
    model: str | None = typer.Option(None, "--model", help="Model id (default: the active model)."),
    risk_budget: float = BUDGET,
    report: Path | None = typer.Option(None, "--report", help="Write the safety curve HTML here."),
    as_json: bool = JSON,
) -> None:
    """Score labelled incidents and report quality, calibration and auto-close safety."""
    from policies import PolicyError, load_policy
    from signoff.scoring.evaluate import INFEASIBLE
    from signoff.scoring.evaluate import evaluate as run_evaluate
    from signoff.scoring.model_store import ModelStoreError

    read, digest = _read(data, fmt)
    live, source = run(_live_governance())
    if live is None and source.startswith("policy file (Temporal"):
        err.print(f"[yellow]{source}[/]")
    if model is None and live is not None and live.model.active:
        model = live.model.active
    try:
        policy = load_policy()
        with _progress("evaluating") as say:
            result = run_evaluate(read, policy=policy, model_id=model, risk_budget=risk_budget,
                                  report=report, data_sha256=digest, progress=say, live=live, policy_source=source)
    except (ModelStoreError, PolicyError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        _emit(result)
        return
    out.print(f"model {result['model_sha256'][:12]} on {result['incidents']} incidents")
    out.print(f"macro-F1 {result['macro_f1']:.3f}  ECE {result['ece']:.3f}")
    for grade, r in result["per_class"].items():
        out.print(f"  {grade:15} precision {r['precision']:.3f} recall {r['recall']:.3f} (n={r['support']})")
    totals = (f"auto-closed {result['auto_closed_share']:.1%}, true positives wrongly closed "
              f"{result['tp_wrongly_closed']}/{result['tp_total']} (95% upper bound "
              f"{result['tp_wrongly_closed_upper95']:.2%})")
    if result["threshold"] is not None:
        out.print(f"threshold {result['threshold']:.4f} ({result['threshold_source']}): {totals}", highlight=False)
    elif result["threshold_source"] == INFEASIBLE:
        out.print(f"threshold {NO_THRESHOLD}: no threshold keeps the 95% upper bound within the risk budget "
                  f"{result['risk_budget']:.2%}: {totals}", highlight=False)
    else:
        out.print(f"thresholds differ by alert type ({result['threshold_source']}):", highlight=False)
        for name, t in result["thresholds_by_alert_type"].items():
            value = "none (infeasible)" if t["threshold"] is None else f"{t['threshold']:.4f}"
            who = f", set by {t['set_by']}" if t.get("set_by") else ""
            out.print(f"  {name:20} {value} ({t['source']}{who}): {t['incidents']} incidents, auto-closed "
                      f"{t['auto_closed']}, true positives wrongly closed {t['tp_wrongly_closed']}/{t['tp_total']} "
                      f"(95% upper bound {t['tp_wrongly_closed_upper95']:.2%})",
                      highlight=False)
        out.print(f"all alert types: {totals}", highlight=False)
    if not result["within_risk_budget"]:
        out.print(f"[yellow]{_over_budget(result)}[/]", highlight=False)
    out.print(result["autonomy_note"], highlight=False)
    if "warning" in result:
        out.print(f"[yellow]{result['warning']}[/]")
    out.print(f"safety curve: {result['safety_curve']}")


@app.command()
def cv(
    data: Path = DATA,
    fmt: str = FORMAT,
    seed: int = typer.Option(7, "--seed"),
    folds: int = typer.Option(5, "--folds", min=2),
    grouping: str = typer.Option("both", "--grouping", help="incident, org or both."),
    risk_budget: float = BUDGET,
    jobs: int = JOBS,
    as_json: bool = JSON,
) -> None:
    """Grouped cross-validation (by incident and by organisation); threshold from training folds only."""
    from signoff.scoring.cv import cv_report
    from signoff.scoring.parallel import default_jobs
    from signoff.scoring.train import TrainParams

    if grouping not in ("incident", "org", "both"):
        _fail("--grouping must be incident, org or both")
    read, digest = _read(data, fmt)
    cases = _cases(read)
    params = TrainParams(seed=seed, risk_budget=risk_budget)
    groupings = ("incident", "org") if grouping == "both" else (grouping,)
    with _progress("cross-validating") as say:
        report = cv_report(cases, params, folds, say, groupings, jobs or default_jobs())  # type: ignore[arg-type]
    result: dict[str, Any] = {"data_sha256": digest, **report}
    if as_json:
        _emit(result)
        return
    table = Table("grouping", "macro-F1", "ECE", "auto-closed", "TPs wrongly closed", "upper 95%")
    for g in ("incident", "org"):
        r = result.get(f"{g}_grouped")
        if r:
            table.add_row(g, f"{r['macro_f1']:.3f}", f"{r['ece']:.3f}", f"{r['auto_closed_share']:.1%}",
                          f"{r['tp_wrongly_closed']}/{r['tp_total']}", f"{r['tp_wrongly_closed_upper95']:.2%}")
    out.print(table)


@app.command("list")
def list_models(as_json: bool = JSON) -> None:
    """Models in the local store and the shipped default; which one is active."""
    from signoff.scoring import model_store

    models = model_store.list_models()
    # QA: from another working directory (another model store) the table starred the shipped model while
    # the live governance state, which cases score under, had another one active. The live choice wins,
    # as in `signoff model evaluate`; the local store's record stands only where governance names none.
    live, source = run(_live_governance())
    live_active = live.model.active if live is not None else None
    if live_active:
        models = [m.model_copy(update={"active": m.model_id == live_active}) for m in models]
    feasible = {m.model_id: _recommendation_feasible(Path(m.path)) for m in models}
    if as_json:
        for m in models:
            _emit({**m.model_dump(), "recommended_threshold_feasible": feasible[m.model_id]})
        return
    table = Table("active")
    # QA: at 80 columns (any pipe: `signoff model list | less`) the id was cut to "dd959b71a…": the one thing
    # `signoff model promote ID` needs from this table. It is never cut.
    table.add_column("model id", no_wrap=True, min_width=16)
    for name in ("shipped", "incidents", "OOF macro-F1", "ECE", "rec. threshold", "trained by"):
        table.add_column(name)
    for m in models:
        if m.recommended_threshold is None:
            rec = ""
        elif feasible[m.model_id] is False:
            rec = NO_THRESHOLD
        else:
            rec = f"{m.recommended_threshold:.4f}"
        table.add_row("*" if m.active else "", m.model_id[:16], "yes" if m.shipped else "", str(m.incidents or ""),
                      f"{m.macro_f1:.3f}" if m.macro_f1 is not None else "", f"{m.ece:.3f}" if m.ece is not None else "",
                      rec, escape(m.trained_by or "not recorded"))
    out.print(table)
    if live_active and not any(m.active for m in models):
        err.print(f"[yellow]active (live governance at {settings.temporal_address()}): {live_active[:16]}, which is "
                  f"not in this model store ({model_store.store_dir()})[/]: set SIGNOFF_HOME to the workers' state "
                  "directory, or copy models/<id>/ here (docs/deployment.md §6)", highlight=False)
    elif live is None and source.startswith("policy file (Temporal"):
        err.print(f"active: this model store's record (the live governance state was not read: Temporal at "
                  f"{settings.temporal_address()} not reachable)", highlight=False)


def _over_budget(result: dict[str, Any]) -> str:
    """The evaluated thresholds' 95% bound is over the budget: say so, and whether more data could tell."""
    from signoff.scoring.metrics import clopper_pearson_upper, tp_needed_for_budget

    budget, n_tp = result["risk_budget"], result["tp_total"]
    text = (f"the 95% upper bound {result['tp_wrongly_closed_upper95']:.2%} is over the risk budget {budget:.2%}: "
            "this data does not show these thresholds keep it")
    if n_tp and clopper_pearson_upper(0, n_tp) > budget:
        text += (f" (with {n_tp} true positives no threshold can: even none closed gives "
                 f"{clopper_pearson_upper(0, n_tp):.2%}; it takes at least {tp_needed_for_budget(budget)})")
    return text


def _recommendation_feasible(path: Path) -> bool | None:
    """Whether the manifest's threshold recommendation keeps its risk budget (None: no recommendation)."""
    from signoff.scoring.model_store import MANIFEST

    manifest = path / MANIFEST
    if not manifest.exists():
        return None
    rec = json.loads(manifest.read_text()).get("recommended_threshold") or {}
    return bool(rec["feasible"]) if "feasible" in rec else None


def _check_governor(user: str) -> None:
    from policies import PolicyError, load_policy

    try:
        policy = load_policy()
    except PolicyError as exc:
        _fail(str(exc))
    roles = set(policy.roles_of(user))
    if not roles & set(policy.governance_roles):
        _fail(f"{user!r} has roles {sorted(roles)}; promoting or rolling back models needs one of "
              f"{list(policy.governance_roles)} (policy governance_roles)")


@app.command()
def promote(
    model_id: str = typer.Argument(..., help="Model id (or a unique prefix of 8+ characters)."),
    user: str = typer.Option(..., "--as", help="Who promotes (needs a governance role in policy)."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded)."),
    risk_budget: float = BUDGET,
    as_json: bool = JSON,
) -> None:
    """Approve activating a model: governed, recorded; active once the policy's quorum approved it.

    Thresholds stay when the model changes: for each alert type with one, it shows what that value
    closes on the incoming and the outgoing model, and the incoming model's own threshold for the budget.
    """
    from signoff.cli.lifecycle import governed_promote

    _check_governor(user)
    governed_promote(model_id, user, reason, as_json, risk_budget)


@app.command()
def rollback(
    user: str = typer.Option(..., "--as", help="Who rolls back (needs a governance role in policy)."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded)."),
    risk_budget: float = BUDGET,
    as_json: bool = JSON,
) -> None:
    """Re-activate the model that was active before the last promotion (governed, recorded, at once).

    Like `promote`, it shows what each threshold in force closes on the model now active.
    """
    from signoff.cli.lifecycle import governed_rollback

    _check_governor(user)
    governed_rollback(user, reason, as_json, risk_budget)


@app.command("recommend-threshold")
def recommend_threshold(
    model: str | None = typer.Option(None, "--model", help="Model id (default: the active model)."),
    risk_budget: float = BUDGET,
    as_json: bool = JSON,
) -> None:
    """The auto-close threshold a risk budget buys (from the model's out-of-fold training predictions).

    Advice only: `signoff policy set-threshold` is what changes behaviour.
    """
    from signoff.scoring import model_store
    from signoff.scoring.evaluate import recommended_for

    try:
        model_id = model_store.resolve(model) if model else model_store.active_model_id()
        rec = recommended_for(model_id, risk_budget)
    except (model_store.ModelStoreError, ValueError) as exc:
        _fail(str(exc))
    payload = {"model_sha256": model_id, **rec.model_dump()}
    if as_json:
        _emit(payload)
        return
    if not rec.feasible:
        out.print(f"no threshold keeps the 95% upper bound within {risk_budget:.2%}: keep humans in the loop")
        return
    out.print(
        f"threshold {rec.threshold:.6f}: auto-closes {rec.at.auto_closed_share:.1%} of training incidents "
        f"(out-of-fold), {rec.at.tp_wrongly_closed}/{rec.at.tp_total} true positives, 95% upper bound "
        f"{rec.at.tp_wrongly_closed_upper95:.2%} <= budget {risk_budget:.2%}"
    )
    out.print(f"to apply it: signoff policy set-threshold ALERT_TYPE {rec.threshold:.6f} --as USER --reason TEXT")


from signoff.cli.lifecycle import register as _register_lifecycle  # noqa: E402 - retrain, shadow

_register_lifecycle(app)
