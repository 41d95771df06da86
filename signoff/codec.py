"""Optional encryption of workflow payloads (histories hold alerts, accounts, hosts, states).

A Temporal PayloadCodec with AES-256-GCM (`cryptography`). Keys come from the environment only:
  SIGNOFF_CODEC_KEY       "KEY" or "ID:KEY[,ID:KEY...]" (KEY = 32 bytes, base64); the first key
                          encrypts, every listed key decrypts (rotation: put the new key first,
                          keep the old ones after it until no history needs them)
  SIGNOFF_CODEC_KEY_FILE  a file with the same content (comma or newline separated)
Each encrypted payload records its key id (`encryption-key-id`) in its metadata. The key id is
also the AES-GCM associated data, so a payload cannot be passed off under another key id.
With no key configured, `converter_with_codec` returns the converter unchanged (no encryption).

Failure messages and stack traces are encoded too (they move into an encrypted payload).
Search attributes are never encrypted by Temporal: they hold no personal data (see
signoff/search_attributes.py). `serve()` is the codec server for the Temporal UI and CLI
(`--ui-codec-endpoint`, `--codec-endpoint`): POST /encode and /decode with CORS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
CIPHER = "encryption-cipher"
NONCE_BYTES = 12


class CodecKeyError(ValueError):
    pass


def key_id_of(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:12]


def _parse_keys(text: str, where: str) -> list[tuple[str, bytes]]:
    keys = []
    for item in (part.strip() for part in text.replace("\n", ",").split(",")):
        if not item:
            continue
        kid, _, raw = item.rpartition(":")
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise CodecKeyError(f"{where}: a key is not valid base64; generate one with "
                                "`python -c \"import os,base64;print(base64.b64encode(os.urandom(32)).decode())\"`") from None
        if len(key) != 32:
            raise CodecKeyError(f"{where}: keys must be 32 bytes (AES-256), got {len(key)}")
        keys.append((kid.strip() or key_id_of(key), key))
    return keys


def load_keys() -> list[tuple[str, bytes]]:
    """The configured keys, the encrypting one first. Empty when encryption is off. Never logged."""
    text = os.environ.get("SIGNOFF_CODEC_KEY", "").strip()
    if text:
        return _parse_keys(text, "SIGNOFF_CODEC_KEY")
    path = os.environ.get("SIGNOFF_CODEC_KEY_FILE", "").strip()
    if path:
        try:
            return _parse_keys(Path(path).read_text(), f"SIGNOFF_CODEC_KEY_FILE ({path})")
        except OSError as exc:
            raise CodecKeyError(f"cannot read SIGNOFF_CODEC_KEY_FILE ({path}): {exc.strerror}") from None
    return []


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise CodecKeyError("no codec key: set SIGNOFF_CODEC_KEY or SIGNOFF_CODEC_KEY_FILE")
        self._current = keys[0][0]
        self._ciphers = {kid: AESGCM(key) for kid, key in keys}

    def __repr__(self) -> str:  # never show key material
        return f"EncryptionCodec(current key id {self._current}, {len(self._ciphers)} keys)"

    @property
    def key_id(self) -> str:
        return self._current

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        kid = self._current
        cipher = self._ciphers[kid]
        out = []
        for p in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, p.SerializeToString(), kid.encode())
            out.append(Payload(metadata={"encoding": ENCODING, KEY_ID: kid.encode(), CIPHER: b"AES-256-GCM"},
                               data=nonce + sealed))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("encoding") != ENCODING:
                out.append(p)
                continue
            kid = p.metadata.get(KEY_ID, b"").decode()
            cipher = self._ciphers.get(kid)
            if cipher is None:
                raise CodecKeyError(f"payload encrypted with key id {kid!r}, which is not configured: add that key "
                                    "after the current one in SIGNOFF_CODEC_KEY")
            try:
                plain = cipher.decrypt(p.data[:NONCE_BYTES], p.data[NONCE_BYTES:], kid.encode())
            except InvalidTag:
                raise CodecKeyError(f"payload under key id {kid!r} failed authentication: wrong key or altered "
                                    "payload") from None
            out.append(Payload.FromString(plain))
        return out


def codec_from_env() -> EncryptionCodec | None:
    keys = load_keys()
    return EncryptionCodec(keys) if keys else None


def converter_with_codec(base: DataConverter) -> DataConverter:
    """`base` with the encryption codec when a key is configured; `base` itself otherwise."""
    codec = codec_from_env()
    if codec is None:
        return base
    # Failure messages and stack traces can quote data too: encode them along with the payloads.
    return dataclasses.replace(base, payload_codec=codec,
                               failure_converter_class=DefaultFailureConverterWithEncodedAttributes)


# ---------------------------------------------------------------- the codec server


def _payloads_from_json(body: bytes) -> list[Payload]:
    message = Payloads()
    json_format.Parse(body.decode() or "{}", message, ignore_unknown_fields=True)
    return list(message.payloads)


def _payloads_to_json(payloads: list[Payload]) -> bytes:
    return json_format.MessageToJson(Payloads(payloads=payloads)).encode()


def make_handler(codec: PayloadCodec, origins: Sequence[str], token: str | None) -> type[BaseHTTPRequestHandler]:
    allowed = set(origins)

    class CodecHandler(BaseHTTPRequestHandler):
        server_version = "signoff-codec"

        def log_message(self, format: str, *args: Any) -> None:  # no request logging: payloads stay private
            return None

        def _cors(self) -> None:
            origin = self.headers.get("Origin", "")
            if origin and (origin in allowed or "*" in allowed):
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Vary", "Origin")
                self.send_header("Access-Control-Allow-Credentials", "true")
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", "Content-Type, X-Namespace, Authorization")

        def _reply(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
            self.send_response(status)
            self._cors()
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_OPTIONS(self) -> None:  # noqa: N802 - http.server naming
            self._reply(200)

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0].rstrip("/")
            if not (path.endswith("/encode") or path.endswith("/decode")):
                self._reply(404, json.dumps({"error": "POST /encode or /decode"}).encode())
                return
            if token is not None:
                sent = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if not hmac.compare_digest(sent.encode(), token.encode()):
                    self._reply(401, json.dumps({"error": "a valid bearer token is required"}).encode())
                    return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payloads = _payloads_from_json(self.rfile.read(length))
                if path.endswith("/encode"):
                    result = asyncio.run(codec.encode(payloads))
                else:
                    result = asyncio.run(codec.decode(payloads))
            except (json_format.ParseError, CodecKeyError, ValueError) as exc:
                self._reply(400, json.dumps({"error": str(exc)}).encode())
                return
            self._reply(200, _payloads_to_json(result))

    return CodecHandler


def make_server(host: str = "127.0.0.1", port: int = 8081, origins: Sequence[str] = ("http://localhost:8233",),
                codec: PayloadCodec | None = None) -> ThreadingHTTPServer:
    codec = codec or codec_from_env()
    if codec is None:
        raise CodecKeyError("no codec key configured: set SIGNOFF_CODEC_KEY or SIGNOFF_CODEC_KEY_FILE first")
    token = os.environ.get("SIGNOFF_CODEC_SERVER_TOKEN", "").strip() or None
    return ThreadingHTTPServer((host, port), make_handler(codec, origins, token))


def serve(host: str = "127.0.0.1", port: int = 8081, origins: Sequence[str] = ("http://localhost:8233",)) -> None:
    server = make_server(host, port, origins)
    print(f"codec server on http://{host}:{server.server_address[1]} (CORS for {', '.join(origins)}); "
          f"start the UI with --ui-codec-endpoint http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
