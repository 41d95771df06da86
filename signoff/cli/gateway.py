"""`signoff gateway serve`: the approval gateway in front of the Temporal frontend (signoff/gateway.py)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from signoff.cli._common import fail

app = typer.Typer(help="The approval gateway: people decide through it without Temporal `write` of their own.",
                  no_args_is_help=True)


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read the {what} {path}: {exc.strerror}")


@app.command()
def serve(
    listen: str = typer.Option("127.0.0.1:7234", "--listen", help="HOST:PORT people's clients connect to "
                                                                  "(their TEMPORAL_ADDRESS)"),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="the gateway's server certificate (PEM)"),
    tls_key: Path = typer.Option(None, "--tls-key", help="its private key (PEM)"),
    client_ca: Path = typer.Option(None, "--client-ca", help="require a client certificate from this CA (mTLS): "
                                                            "the log names each person by their certificate"),
) -> None:
    """Forward people's reads and Signoff decisions to TEMPORAL_ADDRESS and refuse everything else (starting
    or signalling cases by hand, terminate, cancel, reset, delete, the workers' own updates).

    The gateway holds the `write` role towards Temporal (TEMPORAL_TLS_CLIENT_CERT_PATH / _KEY_PATH /
    TEMPORAL_TLS_SERVER_CA_CERT_PATH, TEMPORAL_API_KEY, as workers do); people hold none. One JSON line per
    forwarded change and per refusal goes to stderr (docs/deployment.md §3).
    """
    import asyncio
    import logging

    import grpc

    from signoff import settings
    from signoff.gateway import ServerTLS, start_gateway

    if (tls_cert is None) != (tls_key is None):
        fail("give both --tls-cert and --tls-key, or neither")
    if client_ca is not None and tls_cert is None:
        fail("--client-ca needs --tls-cert and --tls-key: mutual TLS runs over the gateway's own TLS")
    cert, key, ca = _read(tls_cert, "certificate"), _read(tls_key, "key"), _read(client_ca, "client CA")
    tls = ServerTLS(cert, key, ca) if cert is not None and key is not None else None
    upstream_ca = os.environ.get("TEMPORAL_TLS_SERVER_CA_CERT_PATH")
    upstream_cert = os.environ.get("TEMPORAL_TLS_CLIENT_CERT_PATH")
    upstream_key = os.environ.get("TEMPORAL_TLS_CLIENT_KEY_PATH")
    credentials = None
    if upstream_ca or upstream_cert:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(Path(upstream_ca), "Temporal CA") if upstream_ca else None,
            private_key=_read(Path(upstream_key), "client key") if upstream_key else None,
            certificate_chain=_read(Path(upstream_cert), "client certificate") if upstream_cert else None)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    upstream, namespace = settings.temporal_address(), settings.namespace()

    async def main() -> None:
        try:
            server, port = await start_gateway(listen, upstream, namespace, tls=tls, upstream_credentials=credentials,
                                               upstream_token=os.environ.get("TEMPORAL_API_KEY") or None)
        except RuntimeError as exc:  # grpc: the address is taken or not ours
            fail(f"cannot listen on {listen}: {exc}")
        typer.echo(f"approval gateway on {listen.rsplit(':', 1)[0]}:{port} ({'mTLS' if ca else 'TLS' if tls else 'plaintext'})"
                   f" -> Temporal {upstream}, namespace {namespace}", err=True)
        await server.wait_for_termination()

    asyncio.run(main())
