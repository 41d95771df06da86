"""`signoff keys`: approver signing keys (Ed25519). The public key goes into policy by pull request."""

from __future__ import annotations

import typer

from signoff.cli._common import fail

app = typer.Typer(help="Approver signing keys: create one, show its public key for the policy.",
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
