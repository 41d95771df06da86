"""The production path: docker-compose.yml parses, runs commands that exist, can be given every setting
the worker reads, publishes nothing beyond loopback, and ships a production policy that needs signatures."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
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
    built = {name: s for name, s in _compose()["services"].items() if s.get("build") == "."}
    assert {"setup", "worker", "codec-server", "cli"} <= set(built)
    for name, service in built.items():
        # Unknown options fail before --help is honoured, so this checks every option the service passes.
        command = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", part) for part in service["command"]]
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, f"{name}: {command}: {result.output}"


def _bind_sources(service: dict) -> list[str]:
    """Host paths a service mounts (short `./src:/dst[:ro]` and long `{type: bind, source: ...}`)."""
    sources = []
    for volume in service.get("volumes", []):
        source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
        if source.startswith("./"):
            sources.append(source)
    return sources


def _env_files(service: dict) -> list[str]:
    env_file = service.get("env_file", [])
    entries = [env_file] if isinstance(env_file, str | dict) else env_file
    return [e["path"] if isinstance(e, dict) else e for e in entries]


# Files the operator writes before `docker compose up` (git-ignored): a committed example stands for each.
OPERATOR_FILES = {"./deploy/policy.yaml": "deploy/policy.example.yaml", "deploy/signoff.env": "deploy/signoff.env.example"}


def test_mounted_files_and_dockerfile_sources_exist() -> None:
    for service in _compose()["services"].values():
        for source in [*_bind_sources(service), *_env_files(service)]:
            if source in OPERATOR_FILES:
                assert (REPO / OPERATOR_FILES[source]).is_file(), f"{source} has no committed example"
                ignored = (REPO / "deploy/.gitignore").read_text().split()
                assert "/" + source.removeprefix("./").removeprefix("deploy/") in ignored, f"{source} is not git-ignored"
            else:
                assert (REPO / source).exists(), f"{source} is mounted but missing"
    dockerfile = (REPO / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", dockerfile, flags=re.M):
        assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    assert 'ENTRYPOINT ["signoff"]' in dockerfile


# ---------------------------------------------------------------- what the worker reads can be given

# Code that never runs in a production worker container: the embedded dev server and the benchmarks.
NOT_IN_WORKER_FILES = ("signoff/bench/", "signoff/devserver.py")
# Read only on an approver's own machine (their private signing key), never by a worker.
NOT_IN_WORKER_VARS = {"SIGNOFF_APPROVER_KEY_FILE"}
ENV_NAME = re.compile(r"(SIGNOFF|OTEL|TEMPORAL)_[A-Z0-9_]*[A-Z0-9]")
# connectors/http.py accessors: name -> whether the value is a credential (then `<VAR>_FILE` works too).
ACCESSORS = {"setting": False, "require_setting": False, "secret": True, "require_secret": True, "configured": True}
WORKER_CODE = ("signoff", "activities", "connectors", "policies", "workflows", "playbooks")


def _sources() -> list[tuple[str, ast.Module]]:
    out = []
    for top in WORKER_CODE:
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if not rel.startswith(NOT_IN_WORKER_FILES) and "/fakes/" not in rel:
                out.append((rel, ast.parse(path.read_text(), rel)))
    return out


def _called(call: ast.Call) -> str | None:
    return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)


def _name_arg(call: ast.Call) -> str | None:
    arg = call.args[1] if len(call.args) > 1 else None
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def _vendor_variables(sources: list[tuple[str, ast.Module]]) -> set[str]:
    """`SIGNOFF_<VENDOR>_<NAME>` (+ `_FILE` for credentials) from every connector accessor call."""
    # Helpers taking the vendor as first parameter (e.g. entra_app_from_env): the names they read.
    helpers: dict[str, list[tuple[str, bool]]] = {}
    for _, tree in sources:
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and fn.name not in ACCESSORS and fn.args.args \
                    and fn.args.args[0].arg == "vendor":
                used = [(_name_arg(c), ACCESSORS[_called(c) or ""]) for c in ast.walk(fn)
                        if isinstance(c, ast.Call) and _called(c) in ACCESSORS and c.args
                        and isinstance(c.args[0], ast.Name) and c.args[0].id == "vendor"]
                if used:
                    helpers[fn.name] = [(n, s) for n, s in used if n]
    found: set[str] = set()
    for _, tree in sources:
        consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                  and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                  for t in n.targets if isinstance(t, ast.Name)}
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call) or not call.args:
                continue
            first = call.args[0]
            vendor = first.value if isinstance(first, ast.Constant) else \
                consts.get(first.id) if isinstance(first, ast.Name) else None
            if not isinstance(vendor, str):
                continue
            called = _called(call)
            if called in ACCESSORS:
                name = _name_arg(call)
                names = [(name, ACCESSORS[called])] if name else []
            else:
                names = helpers.get(called or "", [])
            for name, is_credential in names:
                var = f"SIGNOFF_{vendor.upper()}_{name.upper()}"
                found |= {var, f"{var}_FILE"} if is_credential else {var}
    return found


def worker_variables() -> set[str]:
    """Every environment variable the worker code reads, found in the code now (not a fixed list)."""
    sources = _sources()
    found = {node.value for _, tree in sources for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.fullmatch(node.value)}
    # The Temporal connection settings signoff/client.py delegates to temporalio.envconfig.
    found |= set(re.findall(r"TEMPORAL_[A-Z_]*[A-Z]", (REPO / "signoff/client.py").read_text()))
    return (found | _vendor_variables(sources)) - NOT_IN_WORKER_VARS


def _env_example() -> dict[str, tuple[bool, str]]:
    """deploy/signoff.env.example: VAR -> (set, i.e. not commented out; value)."""
    out: dict[str, tuple[bool, str]] = {}
    for line in (REPO / "deploy/signoff.env.example").read_text().splitlines():
        m = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m and not out.get(m.group(2), (False, ""))[0]:  # a set line wins over a commented example
            out[m.group(2)] = (m.group(1) is None, m.group(3))
    return out


def test_the_scan_finds_what_the_worker_reads() -> None:
    """Guards the scanner itself: variables read in each of the ways the code reads them."""
    found = worker_variables()
    assert {"SIGNOFF_POLICY", "SIGNOFF_CODEC_KEY_FILE", "SIGNOFF_AUDIT_KEY", "SIGNOFF_ESCALATION_WEBHOOK",
            "SIGNOFF_DEFAULT_BACKEND", "SIGNOFF_MAX_ACTIVITIES", "OTEL_SERVICE_NAME",  # os.environ / env()
            "SIGNOFF_OKTA_API_TOKEN", "SIGNOFF_OKTA_API_TOKEN_FILE", "SIGNOFF_LDAP_BASE_DN",  # accessors
            "SIGNOFF_GRAPH_TENANT_ID", "SIGNOFF_DEFENDER_CLIENT_SECRET_FILE",  # through entra_app_from_env
            "SIGNOFF_VIRUSTOTAL_API_KEY_FILE",  # configured("virustotal", ...) in an enricher
            "TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_API_KEY"} <= found
    assert not {"SIGNOFF_DEV_PORT", "SIGNOFF_APPROVER_KEY_FILE", "SIGNOFF_AWS_US-EAST-1"} & found


def test_every_variable_the_worker_reads_can_be_given() -> None:
    worker = _compose()["services"]["worker"]
    assert _env_files(worker) == ["deploy/signoff.env"]
    passed = set(worker["environment"])
    documented = set(_env_example())
    missing = sorted(worker_variables() - passed - documented)
    assert not missing, f"the worker reads {missing}: add them to deploy/signoff.env.example (with a comment)"
    # An interpolated `${VAR}` under environment: would shadow the env file with the shell's (empty) value.
    shadowing = {k: v for k, v in worker["environment"].items() if "${" in str(v)}
    assert not shadowing, f"worker environment interpolates {shadowing}; set these in deploy/signoff.env"


def test_env_example_sets_nothing_unsafe() -> None:
    example = _env_example()
    services = _compose()["services"]
    fixed = set(services["worker"]["environment"])
    for var, (is_set, value) in example.items():
        secret = re.search(r"KEY|TOKEN|SECRET|PASSWORD", var) and not var.endswith(("_FILE", "_PATH"))
        assert not (secret and value), f"{var} carries a value in the committed example"
        if not is_set:
            continue
        assert value, f"{var}= sets an empty value (not the same as unset): comment it out"
        assert var not in fixed, f"{var} is set by docker-compose.yml (environment: wins); remove it here"
        if var.endswith("_FILE"):
            assert value.startswith("/run/secrets/signoff/"), f"{var} points outside the mounted secrets"
    # ... and that directory is what every Signoff container but the gateway mounts, read-only.
    for name, service in services.items():
        if service.get("build") == "." and name != "gateway":
            assert "./deploy/secrets:/run/secrets/signoff:ro" in service["volumes"], name
    # The codec key is on by default in production (payloads hold entity names).
    assert example["SIGNOFF_CODEC_KEY_FILE"] == (True, "/run/secrets/signoff/codec_key")


def _mounted(service: dict, path: str) -> bool:
    """Whether the container path `path` lies under one of `service`'s mounts."""
    for volume in service.get("volumes", []):
        target = volume["target"] if isinstance(volume, dict) else volume.split(":")[1]
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return True
    return False


def test_the_gateway_mounts_only_the_temporal_certificates_and_its_own_tls() -> None:
    """The approval gateway faces people: it forwards payloads as they are and needs no Signoff key.
    Whatever it mounts, someone who breaks into it has: the Temporal client certificates it connects
    with and its own TLS files, never a signing, ingest, audit or codec key or a vendor credential."""
    services = _compose()["services"]
    gateway = services["gateway"]
    example = _env_example()
    secrets = {var: value for var, (_, value) in example.items()
               if var.endswith("_FILE") and value.startswith("/run/secrets/signoff/")}
    assert {"SIGNOFF_CODEC_KEY_FILE", "SIGNOFF_AUDIT_KEY_FILE", "SIGNOFF_INGEST_KEY_FILE",
            "SIGNOFF_CHAT_BRIDGE_KEY_FILE", "SIGNOFF_OKTA_API_TOKEN_FILE"} <= set(secrets)
    seen = sorted(var for var, path in secrets.items() if _mounted(gateway, path))
    assert not seen, f"the gateway mounts {seen}"
    temporal = {var: value for var, (_, value) in example.items() if var.startswith("TEMPORAL_TLS_") and
                var.endswith("_PATH")}
    assert len(temporal) == 3, temporal
    for var, path in temporal.items():
        assert _mounted(gateway, path), f"the gateway does not see {var}={path}"
        assert _mounted(services["worker"], path), f"the workers do not see {var}={path}"
    command = " ".join(gateway["command"])
    assert "--tls-cert" not in command or "/run/secrets/signoff/gateway/" in command
    comment = (REPO / "docker-compose.yml").read_text()
    for flag in ("--tls-cert /run/secrets/signoff/gateway/", "--tls-key /run/secrets/signoff/gateway/",
                 "--client-ca /run/secrets/signoff/gateway/"):
        path = re.search(re.escape(flag) + r"\S+", comment)
        assert path and _mounted(gateway, path.group(0).split()[1]), flag
    assert "./deploy/secrets:/run/secrets/signoff:ro" not in gateway["volumes"]
    # The state volume keeps keys too (keys/ingest.ed25519, keys/chat-bridge-*.ed25519 by default).
    assert not any(str(v).startswith("signoff-state:") for v in gateway["volumes"])


def test_no_high_impact_action_runs_on_the_lab_by_default(monkeypatch) -> None:
    """With the example's backends a worker refuses to start until each high-impact action is mapped."""
    from activities.executors import missing_executors
    from playbooks import PLAYBOOKS

    for var in ("SIGNOFF_BACKENDS", "SIGNOFF_DEFAULT_BACKEND"):
        is_set, value = _env_example()[var]
        assert is_set, var
        monkeypatch.setenv(var, value)
    unmapped = {re.match(r"action '(\w+)'", line).group(1) for line in missing_executors()}  # type: ignore[union-attr]
    gated = {step.action.name for p in PLAYBOOKS.values() for step in p.steps if step.action.tier.value != "low"}
    assert gated and unmapped == gated


def test_workers_run_the_mounted_production_policy() -> None:
    for name, service in _compose()["services"].items():
        if service.get("build") != ".":
            continue
        target = service["environment"]["SIGNOFF_POLICY"]
        mounts = [v for v in service["volumes"] if isinstance(v, dict) and v.get("target") == target]
        assert mounts, f"{name}: SIGNOFF_POLICY={target} is not mounted"
        mount = mounts[0]
        assert mount["source"] == "./deploy/policy.yaml" and mount["read_only"] is True
        # A missing file must fail `up`, not become an empty directory (and the lab policy).
        assert mount["bind"]["create_host_path"] is False


def _published(service: dict) -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip"), str(port.get("published"))))
        else:
            parts = str(port).split(":")
            out.append((parts[0] if len(parts) == 3 else None, parts[-2] if len(parts) > 1 else parts[0]))
    return out


def test_published_ports_are_on_loopback() -> None:
    services = _compose()["services"]
    assert ("127.0.0.1", "8080") in _published(services["temporal-ui"])
    for name, service in services.items():
        for host_ip, port in _published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes {port} on every interface; bind it to 127.0.0.1"
    ui = services["temporal-ui"]["environment"]
    assert ui["TEMPORAL_DISABLE_WRITE_ACTIONS"].endswith(":-true}")


def test_the_ui_codec_endpoint_is_the_codec_server() -> None:
    services = _compose()["services"]
    codec = services["codec-server"]
    assert codec["command"][:2] == ["audit", "codec-server"]
    port = codec["command"][codec["command"].index("--port") + 1]
    assert ("127.0.0.1", port) in _published(codec)
    assert services["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"].endswith(f"localhost:{port}}}")
    # The UI origin the codec server allows (CORS) is where the UI is published.
    origins = re.search(r"--origin.*", " ".join(codec["command"]))
    assert origins and "http://localhost:8080" in origins.group(0)


def test_example_policy_requires_signed_approvals() -> None:
    from policies.loader import load_policy

    example = load_policy(REPO / "deploy/policy.example.yaml")  # the project's loader: schema + promises
    default = load_policy(REPO / "policies/default.yaml")
    assert example.deployment.trust_unsigned_approvals is False
    assert "trust_unsigned_approvals: false" in (REPO / "deploy/policy.example.yaml").read_text()
    # No demo approvers: the lab's names carry no keys and must not reach production.
    assert not set(example.approvers) & {"alice", "bob", "carol", "dave", "erin"}
    # Every alert type of the shipped policy is answered the same way in production.
    assert {k: v.playbook for k, v in example.alert_types.items()} == \
        {k: v.playbook for k, v in default.alert_types.items()}, "update deploy/policy.example.yaml"


async def test_unknown_model_refusal_says_where_the_workers_looked(tmp_path: Path, monkeypatch) -> None:
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.governance import resolve_model

    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "worker-home"))
    for model_id, what in (("deadbeefdeadbeef", "matches 0 models"), ("ab" * 32, f"no model {'ab' * 32!r}")):
        with pytest.raises(ApplicationError) as refused:
            await ActivityEnvironment().run(resolve_model, model_id)
        message = str(refused.value)
        assert what in message and "the workers' model store" in message, message
        assert str(tmp_path / "worker-home" / "models") in message and "copy models/<id>/ there" in message
        assert refused.value.non_retryable
