"""`signoff`: the command line of a governed SOAR. Every command has --help."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback

import typer

from signoff.cli import caselog, cases, contained, merge, related, run

app = typer.Typer(
    name="signoff",
    help="Signoff: security cases as Temporal workflows; every high-impact action signed off by a human.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
run.register(app)
cases.register(app)
caselog.register(app)
related.register(app)
merge.register(app)
contained.register(app)

# Command groups, each in its own module: `signoff <group> ...`.
for module, name in (
    ("signoff.cli.model", "model"),
    ("signoff.cli.policy", "policy"),
    ("signoff.cli.playbook", "playbook"),
    ("signoff.cli.autonomy", "autonomy"),
    ("signoff.cli.drift", "drift"),
    ("signoff.cli.audit", "audit"),
    ("signoff.cli.governance", "governance"),
    ("signoff.cli.bench", "bench"),
    ("signoff.cli.keys", "keys"),
    ("signoff.cli.chat", "chat"),
    ("signoff.cli.gateway", "gateway"),
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
    """Run the command, then end the process at once with its exit code.

    Python's own shutdown, after a command has used a Temporal client, sometimes aborts or
    crashes in the SDK runtime's teardown (`PyGILState_Release ... finalizing`: exit 134 or 139
    after the command had succeeded, measured 2-5 times in 20 runs). Scripts retry on a non-zero
    exit and would repeat approvals or governance changes that already happened; so nothing runs
    after the command but flushing output and telemetry.
    """
    from policies.loader import PolicyError
    from signoff.devserver import follow_moved_dev_port

    follow_moved_dev_port()
    code = 0
    try:
        app()
    except SystemExit as exc:
        code = exit_code(exc.code)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # the reader went away (`signoff cases | head`): as a shell tool does
        code = 141
    except PolicyError as exc:  # a bad policy file, wherever a command met it: one line, not a traceback
        from signoff.cli._common import policy_error_line, print_error

        print_error(policy_error_line(exc))
        code = 1
    except OSError as exc:
        if exc.filename is None:  # not about a path: a real surprise, shown in full
            traceback.print_exc()
        else:  # QA: `--out DIR` (or a path without write permission) ended in a traceback
            from signoff.cli._common import print_error

            print_error(path_error_line(exc))
        code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    from signoff import telemetry

    telemetry.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def path_error_line(exc: OSError) -> str:
    """A file the command could not read or write, as one line that says what to do."""
    what = exc.strerror or type(exc).__name__
    hint = {
        IsADirectoryError: "give a file path, not a directory",
        PermissionError: "choose a path you may write, or fix its permissions",
        NotADirectoryError: "a part of the path is a file, not a directory",
    }.get(type(exc), "check the path")
    return f"{exc.filename}: {what}; {hint}"


def exit_code(code: object) -> int:
    """`SystemExit.code` as the process exit status (None: 0; a message: printed, 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    main()
