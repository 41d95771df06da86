"""`signoff keys`: approver signing keys (Ed25519). The public key goes into policy by pull request."""

from __future__ import annotations

import typer

from signoff.cli._common import fail

app = typer.Typer(help="Signing keys: approvers' keys, and the ingesters' key that signs case input; create one, "
                       "show its public key for the policy.",
                  no_args_is_help=True)


@app.command()
def create(
    user: str = typer.Option(..., "--as", help="the approver (their name in policy)"),
    roles: str = typer.Option("analyst", help="comma-separated roles for the printed policy line"),
    force: bool = typer.Option(False, "--force", help="replace an existing key (old approvals stay valid "
                                                      "only while policy keeps the old public key)"),
) -> None:
    """Generate USER's keypair (private key 0600 under .signoff/keys/) and print the policy line."""
    from signoff.keys import ApproverKeyError, create_key, policy_line

    try:
        path, key = create_key(user, overwrite=force)
    except ApproverKeyError as exc:
        fail(str(exc))
    typer.echo(f"# private key written to {path} (mode 0600); keep it on this machine", err=True)
    typer.echo("# paste under `approvers:` in the policy:", err=True)
    typer.echo(policy_line(user, key, tuple(r.strip() for r in roles.split(",") if r.strip())))


@app.command()
def show(
    user: str = typer.Option(..., "--as", help="the approver"),
    roles: str = typer.Option("analyst", help="comma-separated roles for the printed policy line"),
) -> None:
    """Print USER's public key line for the policy (never the private key)."""
    from signoff.keys import ApproverKeyError, key_path, load_private_key, policy_line

    try:
        key = load_private_key(user)
    except ApproverKeyError as exc:
        fail(str(exc))
    if key is None:
        fail(f"no key for {user!r} at {key_path(user)}; create one with `signoff keys create --as {user}`")
    # QA6: this printed `USER public_key: KEY`, which does not paste under `approvers:`; the same line as
    # `keys create` does (the roles are for the line only: the policy decides them).
    typer.echo("# paste under `approvers:` in the policy (check the roles):", err=True)
    typer.echo(policy_line(user, key, tuple(r.strip() for r in roles.split(",") if r.strip())))


@app.command("ingest-create")
def ingest_create(
    force: bool = typer.Option(False, "--force", help="replace an existing key (keep the old public key in "
                                                      "deployment.ingest_keys until cases it signed have ended)"),
) -> None:
    """Generate the ingesters' key (SIGNOFF_INGEST_KEY_FILE, else .signoff/keys/ingest.ed25519) and print the
    policy lines: with them, cases act only on alerts `signoff ingest` and the workers signed."""
    from signoff.keys import ApproverKeyError, create_ingest_key, ingest_policy_lines

    try:
        path, key = create_ingest_key(overwrite=force)
    except ApproverKeyError as exc:
        fail(str(exc))
    typer.echo(f"# private key written to {path} (mode 0600); give it to every host that runs `signoff ingest` "
               "and to the workers (SIGNOFF_INGEST_KEY_FILE)", err=True)
    typer.echo("# add to the policy by pull request:", err=True)
    typer.echo(ingest_policy_lines(key))


@app.command("ingest-show")
def ingest_show() -> None:
    """Print the ingesters' public key lines for the policy (never the private key)."""
    from signoff.keys import ApproverKeyError, ingest_key_path, ingest_policy_lines, load_ingest_key

    try:
        key = load_ingest_key()
    except ApproverKeyError as exc:
        fail(str(exc))
    if key is None:
        fail(f"no ingest key at {ingest_key_path()}; create one with `signoff keys ingest-create` "
             "(or set SIGNOFF_INGEST_KEY_FILE to its file)")
    typer.echo("# add to the policy by pull request:", err=True)
    typer.echo(ingest_policy_lines(key))
