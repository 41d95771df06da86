"""`signoff`: the command line of a governed SOAR. Every command has --help."""

from __future__ import annotations

import importlib

import typer

from signoff.cli import cases, run

app = typer.Typer(
    name="signoff",
    help="Signoff: security cases as Temporal workflows; every high-impact action signed off by a human.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
run.register(app)
cases.register(app)

# Command groups, each in its own module: `signoff <group> ...`.
for module, name in (
    ("signoff.cli.model", "model"),
    ("signoff.cli.policy", "policy"),
    ("signoff.cli.autonomy", "autonomy"),
    ("signoff.cli.drift", "drift"),
    ("signoff.cli.audit", "audit"),
    ("signoff.cli.governance", "governance"),
    ("signoff.cli.bench", "bench"),
    ("signoff.cli.keys", "keys"),
):
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        continue
    if hasattr(mod, "register"):
        mod.register(app)
    else:
        app.add_typer(mod.app, name=name)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
