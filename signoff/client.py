"""One place that connects to Temporal: address, namespace, data converter, interceptors."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter

from signoff import settings

# A query whose answer only adds detail (a running case's live view next to its history): a case whose
# worker is gone would otherwise hold the command until the server gives up, and `audit export`, `explain`,
# ingest and merge would hang on it (the server waits for a poller that recently polled).
BEST_EFFORT_QUERY = timedelta(seconds=5)


def interceptors() -> list[Interceptor]:
    """Tracing when OpenTelemetry is configured (signoff/telemetry.py)."""
    try:
        from signoff.telemetry import client_interceptors
    except ImportError:
        return []
    return client_interceptors()


def data_converter():  # type: ignore[no-untyped-def]
    """The pydantic converter, with the payload codec when history encryption is configured."""
    try:
        from signoff.codec import converter_with_codec
    except ImportError:
        return pydantic_data_converter
    return converter_with_codec(pydantic_data_converter)


async def connect(address: str | None = None, namespace: str | None = None) -> Client:
    """Connect with the standard Temporal client configuration.

    TLS, API keys and profiles come from the same environment variables and config file as the
    `temporal` CLI (`TEMPORAL_TLS_CLIENT_CERT_PATH`, `TEMPORAL_TLS_CLIENT_KEY_PATH`,
    `TEMPORAL_TLS_SERVER_CA_CERT_PATH`, `TEMPORAL_API_KEY`, `TEMPORAL_PROFILE`, ...).
    """
    from temporalio.envconfig import ClientConfig

    config = ClientConfig.load_client_connect_config()
    target = address or settings.temporal_address()
    try:
        return await Client.connect(
            target,
            namespace=namespace or config.get("namespace") or settings.namespace(),
            api_key=config.get("api_key"),
            tls=config.get("tls", False),
            rpc_metadata=config.get("rpc_metadata") or {},
            data_converter=data_converter(),
            interceptors=interceptors(),
        )
    except RuntimeError as exc:
        raise ConnectionError(
            f"cannot reach Temporal at {target}: {exc}. Start the embedded server with `signoff dev` "
            f"(or `signoff demo`), or set TEMPORAL_ADDRESS to your cluster's frontend "
            f"(TLS: TEMPORAL_TLS_CLIENT_CERT_PATH / TEMPORAL_TLS_CLIENT_KEY_PATH)."
        ) from exc
