"""Payload encryption: AES-GCM codec with key ids, rotation, the codec server, encrypted histories."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from signoff.codec import (
    ENCODING,
    KEY_ID,
    CodecKeyError,
    EncryptionCodec,
    converter_with_codec,
    key_id_of,
    load_keys,
    make_server,
)
from signoff.devserver import temporal_cli
from signoff.explain import explanation_from_history
from signoff.history import decode_history
from signoff.worker import build_worker
from tests.auditkit import address_of, full_story

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"secret": text}).encode())


async def test_round_trip_records_the_key_id_and_hides_the_data() -> None:
    codec = EncryptionCodec([("k1", KEY_A)])
    (sealed,) = await codec.encode([_payload("alice@example.com")])
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KEY_ID] == b"k1"
    assert b"alice" not in sealed.data
    (opened,) = await codec.decode([sealed])
    assert json.loads(opened.data) == {"secret": "alice@example.com"}
    # Not encrypted: passed through unchanged (histories written before encryption was turned on).
    plain = _payload("x")
    assert (await codec.decode([plain]))[0] == plain
    assert "KEY" not in repr(codec) and b64(KEY_A) not in repr(codec)


async def test_rotation_decrypts_old_payloads_and_encrypts_with_the_new_key() -> None:
    old = EncryptionCodec([("2025", KEY_A)])
    (sealed_old,) = await old.encode([_payload("before rotation")])
    rotated = EncryptionCodec([("2026", KEY_B), ("2025", KEY_A)])
    (sealed_new,) = await rotated.encode([_payload("after")])
    assert sealed_new.metadata[KEY_ID] == b"2026"
    assert json.loads((await rotated.decode([sealed_old]))[0].data) == {"secret": "before rotation"}
    with pytest.raises(CodecKeyError, match="key id '2026'.*not configured"):
        await old.decode([sealed_new])


async def test_a_key_id_cannot_be_swapped_and_a_tampered_payload_fails() -> None:
    both = EncryptionCodec([("a", KEY_A), ("b", KEY_B)])
    (sealed,) = await both.encode([_payload("x")])
    sealed.metadata[KEY_ID] = b"b"
    with pytest.raises(CodecKeyError, match="failed authentication"):
        await both.decode([sealed])


def test_keys_from_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SIGNOFF_CODEC_KEY", raising=False)
    monkeypatch.delenv("SIGNOFF_CODEC_KEY_FILE", raising=False)
    assert load_keys() == []
    assert converter_with_codec(pydantic_data_converter) is pydantic_data_converter
    monkeypatch.setenv("SIGNOFF_CODEC_KEY", b64(KEY_A))
    assert load_keys() == [(key_id_of(KEY_A), KEY_A)]
    converter = converter_with_codec(pydantic_data_converter)
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class
    monkeypatch.delenv("SIGNOFF_CODEC_KEY")
    key_file = tmp_path / "keys"
    key_file.write_text(f"new:{b64(KEY_B)}\nold:{b64(KEY_A)}\n")
    monkeypatch.setenv("SIGNOFF_CODEC_KEY_FILE", str(key_file))
    assert [kid for kid, _ in load_keys()] == ["new", "old"]
    monkeypatch.setenv("SIGNOFF_CODEC_KEY", "not-base64!")
    with pytest.raises(CodecKeyError, match="base64") as info:
        load_keys()
    assert "not-base64" not in str(info.value)
    monkeypatch.setenv("SIGNOFF_CODEC_KEY", b64(os.urandom(16)))
    with pytest.raises(CodecKeyError, match="32 bytes"):
        load_keys()


@pytest.fixture
def codec_server() -> Iterator[str]:
    server = make_server("127.0.0.1", 0, origins=["http://localhost:8233"],
                         codec=EncryptionCodec([("k1", KEY_A)]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_encrypted_history_codec_server_and_cli(dev_env: WorkflowEnvironment, task_queue: str,
                                                      codec_server: str) -> None:
    codec = EncryptionCodec([("k1", KEY_A)])
    converter = dataclasses.replace(pydantic_data_converter, payload_codec=codec)
    client = Client(**{**dev_env.client.config(), "data_converter": converter})
    async with build_worker(client, task_queue):
        story = await full_story(client, task_queue)
    history = await story.handle.fetch_history()
    raw = history.to_json()
    # Alert titles, hosts, accounts, reasons: none readable in the stored history.
    for plain in ("Trojan [beacon] detected", story.host, story.account, "beaconing to known C2", "signed admin tool"):
        assert plain not in raw, plain
    assert base64.b64encode(ENCODING).decode() in raw
    # With the key, the explanation is whole; without it, decoding says what is missing.
    ex = explanation_from_history(await decode_history(history, client.data_converter))
    assert ex["score"] and ex["actions"] and ex["verdicts"][0]["analyst"] == "carol"

    # The codec server: CORS preflight, then /decode of a real payload from the history.
    sealed = next(e.workflow_execution_started_event_attributes.input.payloads[0] for e in history.events
                  if e.HasField("workflow_execution_started_event_attributes"))
    async with httpx.AsyncClient() as http:
        pre = await http.options(f"{codec_server}/decode", headers={
            "Origin": "http://localhost:8233", "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://localhost:8233"
        assert "X-Namespace" in pre.headers["access-control-allow-headers"]
        body = {"payloads": [{"metadata": {k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()},
                              "data": base64.b64encode(sealed.data).decode()}]}
        res = await http.post(f"{codec_server}/decode", json=body, headers={"Origin": "http://localhost:8233",
                                                                           "X-Namespace": "default"})
        assert res.status_code == 200, res.text
        decoded = json.loads(base64.b64decode(res.json()["payloads"][0]["data"]))
        assert decoded["case_id"] == story.case_id
        enc = await http.post(f"{codec_server}/encode", json={"payloads": [
            {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
             "data": base64.b64encode(b'"hi"').decode()}]})
        assert base64.b64decode(enc.json()["payloads"][0]["metadata"]["encoding"]) == ENCODING
        other = await http.options(f"{codec_server}/decode", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers

    # The temporal CLI reads the same history in clear through the codec endpoint (what the UI does).
    proc = await asyncio.create_subprocess_exec(
        temporal_cli(), "workflow", "show", "-w", story.case_id, "--address", address_of(client),
        "--codec-endpoint", codec_server, "-o", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert story.host in out.decode() or base64.b64encode(story.host.encode()).decode()[:12] in out.decode()


def test_codec_server_requires_the_token_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOFF_CODEC_SERVER_TOKEN", "s3cret-token")
    server = make_server("127.0.0.1", 0, codec=EncryptionCodec([("k1", KEY_A)]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/decode"
        assert httpx.post(url, json={"payloads": []}).status_code == 401
        ok = httpx.post(url, json={"payloads": []}, headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
    finally:
        server.shutdown()
        server.server_close()


async def test_failure_messages_are_encrypted_too_and_decode_for_explain(monkeypatch: pytest.MonkeyPatch) -> None:
    from temporalio.api.failure.v1 import Failure
    from temporalio.exceptions import ApplicationError

    from signoff.history import _failure

    monkeypatch.setenv("SIGNOFF_CODEC_KEY", b64(KEY_A))
    converter = converter_with_codec(pydantic_data_converter)
    failure = Failure()
    await converter.encode_failure(ApplicationError("vendor said: user ceo@example.com not found"), failure)
    assert "ceo@example.com" not in failure.SerializeToString().decode(errors="ignore")
    assert await _failure(converter, failure, []) == "vendor said: user ceo@example.com not found"
    problems: list[str] = []
    assert "ceo@example.com" not in await _failure(pydantic_data_converter, failure, problems)
