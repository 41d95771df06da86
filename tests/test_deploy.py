"""The production path: docker-compose.yml parses and runs commands that exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from signoff.cli import app

REPO = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_the_production_services() -> None:
    services = _compose()["services"]
    assert {"postgresql", "temporal", "temporal-ui", "worker", "otel-collector", "setup"} <= set(services)
    assert services["temporal"]["environment"]["DB"].startswith("postgres")
    assert services["worker"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert "otel-collector" in services["worker"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    # No secret is written into the file: only references to the environment.
    text = (REPO / "docker-compose.yml").read_text()
    assert re.search(r"PASSWORD:\s*\$\{", text) and not re.search(r"PASSWORD:\s*[\"']?\w", text)


def test_compose_commands_exist_in_the_cli() -> None:
    runner = CliRunner()
    for name in ("worker", "setup"):
        service = next(s for s in _compose()["services"].values() if s.get("command") == [name])
        assert service["build"] == "."
        result = runner.invoke(app, [*service["command"], "--help"])
        assert result.exit_code == 0, result.output


def test_mounted_files_and_dockerfile_sources_exist() -> None:
    for service in _compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{source} is mounted but missing"
    dockerfile = (REPO / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", dockerfile, flags=re.M):
        assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    assert 'ENTRYPOINT ["signoff"]' in dockerfile
