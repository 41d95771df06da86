"""`signoff chat`: approvals, verdicts and rollback requests from Slack, bound to identity through the policy."""

from __future__ import annotations

import typer

from signoff.cli._common import fail, require_policy, run

CHANNEL_ENV = "SIGNOFF_SLACK_CHANNEL"
app = typer.Typer(help="Approvals, verdicts and rollback requests from Slack: the chat bridge and its signing key.",
                  no_args_is_help=True)
key_app = typer.Typer(help="The chat bridge's Ed25519 key: create it, print the policy lines.", no_args_is_help=True)
app.add_typer(key_app, name="key")


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="chat")


@key_app.command("create")
def key_create(
    force: bool = typer.Option(False, "--force", help="replace an existing key (approvals it signed stay valid "
                                                      "only while policy keeps the old public key)"),
) -> None:
    """Generate the bridge's keypair (0600; SIGNOFF_CHAT_BRIDGE_KEY_FILE or .signoff/keys/) and print the policy lines."""
    from signoff.chat.bridge import ChatBridgeError, bridge_policy_lines, create_bridge_key

    try:
        path, key = create_bridge_key(overwrite=force)
    except ChatBridgeError as exc:
        fail(str(exc))
    typer.echo(f"# private key written to {path} (mode 0600); give it to the bridge only", err=True)
    typer.echo("# add to the policy by pull request:", err=True)
    typer.echo(bridge_policy_lines(key))


@key_app.command("show")
def key_show() -> None:
    """Print the policy lines for the bridge's public key (never the private key)."""
    from signoff.chat.bridge import ChatBridgeError, bridge_policy_lines, load_bridge_key

    try:
        typer.echo(bridge_policy_lines(load_bridge_key()))
    except ChatBridgeError as exc:
        fail(str(exc))


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        fail(f"--listen {text!r} is not HOST:PORT (e.g. 127.0.0.1:8787)")
    return host.strip("[]"), int(port)


@app.command()
def serve(
    channel: str = typer.Option(..., "--channel", envvar=CHANNEL_ENV,
                                help=f"Slack channel id to post approval requests to (C...); or {CHANNEL_ENV}"),
    listen: str = typer.Option("127.0.0.1:8787", "--listen", help="HOST:PORT of the interactivity endpoint "
                                                                   "(Slack's Request URL: https://.../slack/interactions)"),
    interval: float = typer.Option(10.0, "--interval", min=0.5, help="seconds between notifier passes"),
    once: bool = typer.Option(False, "--once", help="one notifier pass, then exit (no endpoint)"),
) -> None:
    """Post each step waiting for sign-off to CHANNEL, and take Approve / Reject clicks back as signed updates;
    cases waiting for a verdict or that can be rolled back get Close with verdict / Request rollback.

    Needs SIGNOFF_SLACK_BOT_TOKEN(_FILE), SIGNOFF_SLACK_SIGNING_SECRET(_FILE), SIGNOFF_CHAT_BRIDGE_KEY_FILE
    (or `signoff chat key create`) and a policy that trusts the bridge (deployment.chat_bridges.slack).
    """
    import logging

    require_policy()
    host, port = _listen(listen)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def main() -> None:
        from connectors.http import ConfigurationError
        from connectors.slack import Slack, signing_secret
        from policies.loader import load_policy
        from signoff import settings
        from signoff.chat.bridge import ChatBridgeError, SlackBridge, load_bridge_key, trust_problem
        from signoff.client import connect

        try:
            key = load_bridge_key()
            problem = trust_problem(load_policy(), key)
            if problem:
                fail(problem)
            slack = Slack.from_env()
            secret = signing_secret()
        except (ChatBridgeError, ConfigurationError) as exc:
            fail(str(exc))
        client = await connect()
        bridge = SlackBridge(client, slack, channel, key, secret, task_queue=settings.task_queue())
        try:
            if once:
                counts = await bridge.notify_once()
                typer.echo(f"posted {counts['posted']}, updated {counts['updated']} message(s) "
                           f"for {counts['cases']} case(s)")
                return
            await bridge.serve(host, port, interval)
        finally:
            await slack.aclose()

    try:
        run(main())
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
