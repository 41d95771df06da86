"""Each vendor fake conforms to its hand-written subset OpenAPI spec (schemathesis, offline).

Schemathesis generates spec-valid requests from `connectors/fakes/specs/<vendor>.yaml`; each goes through the
fake (in-process, `httpx.MockTransport`) and the response is validated against the spec: documented
status codes, content types and response schemas, and no server errors.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth

from connectors.fakes.base import FakeVendor, spec_path
from connectors.fakes.crowdstrike import FakeCrowdStrike
from connectors.fakes.defender import FakeDefender
from connectors.fakes.elastic import FakeElastic
from connectors.fakes.graph import FakeGraph
from connectors.fakes.intel import FakeAbuseIpdb, FakeVirusTotal
from connectors.fakes.okta import FakeOkta
from connectors.fakes.sentinel import FakeSentinel
from connectors.fakes.sentinelone import FakeSentinelOne
from connectors.fakes.splunk import FakeSplunk


def seeded() -> dict[str, tuple[FakeVendor, dict[str, str]]]:
    cs = FakeCrowdStrike()
    cs.add_host("0" * 32)
    cs.add_host("a" * 32, "contained")
    mde = FakeDefender()
    mde.add_machine("m1")
    mde.add_machine("m2", isolated="Selective")
    s1 = FakeSentinelOne()
    s1.add_agent("1")
    s1.add_agent("2", "disconnected")
    okta = FakeOkta()
    okta.add_user("A")
    okta.add_user("S", status="SUSPENDED")
    graph = FakeGraph()
    graph.add_user("A")
    splunk = FakeSplunk()
    splunk.add_notable("e1", rule_name="r")
    elastic = FakeElastic()
    elastic.add_alert("a1", **{"@timestamp": "2026-11-28T09:00:00Z"})
    sentinel = FakeSentinel()
    sentinel.add_incident("i1", "t")
    vt = FakeVirusTotal()
    vt.add("files", "0" * 64, 3)
    abuse = FakeAbuseIpdb()
    abuse.add("0.0.0.1", 90, 12)
    bearer = {"Authorization": "Bearer fake-token"}
    return {
        "crowdstrike": (cs, bearer),
        "defender": (mde, bearer),
        "sentinelone": (s1, {"Authorization": "ApiToken fake-token"}),
        "okta": (okta, {"Authorization": "SSWS fake-token"}),
        "graph": (graph, bearer),
        "splunk": (splunk, bearer),
        "elastic": (elastic, {"Authorization": "ApiKey fake-token"}),
        "sentinel": (sentinel, bearer),
        "virustotal": (vt, {"x-apikey": "fake-token"}),
        "abuseipdb": (abuse, {"Key": "fake-token"}),
    }


FAKES = seeded()


def send(fake: FakeVendor, kwargs: dict[str, Any]) -> httpx.Response:
    data = kwargs.get("data")
    request = httpx.Request(
        kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=kwargs.get("headers"),
        json=kwargs.get("json"),
        content=data if isinstance(data, (bytes, str)) else None,
        data=data if isinstance(data, dict) else None,
    )
    response = fake(request)
    response.read()
    response.elapsed = timedelta(0)
    response.request = request
    return response


def contract_test(name: str) -> Callable[..., None]:
    schema = schemathesis.openapi.from_path(str(spec_path(name)))
    # Valid requests only: every response to a spec-valid request must match the spec. (Negative
    # mode mostly probes optional-parameter strictness that the vendors themselves don't document.)
    schema.config.generation.update(modes=[GenerationMode.POSITIVE])
    fake, headers = FAKES[name]

    @schema.parametrize()
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case: schemathesis.Case) -> None:
        kwargs = case.as_transport_kwargs(base_url="https://vendor.test", headers=headers)
        response = send(fake, kwargs)
        # ignored_auth would re-send without credentials over the network; auth rejection is
        # tested per vendor in test_connectors_fakes.py instead.
        case.validate_response(response, transport_kwargs=kwargs, excluded_checks=[ignored_auth])

    check.__name__ = f"test_{name}_fake_conforms_to_its_spec"
    return check


test_crowdstrike = contract_test("crowdstrike")
test_defender = contract_test("defender")
test_sentinelone = contract_test("sentinelone")
test_okta = contract_test("okta")
test_graph = contract_test("graph")
test_splunk = contract_test("splunk")
test_elastic = contract_test("elastic")
test_sentinel = contract_test("sentinel")
test_virustotal = contract_test("virustotal")
test_abuseipdb = contract_test("abuseipdb")


@pytest.mark.parametrize("name", sorted(FAKES))
def test_every_fake_has_a_valid_spec(name: str) -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.readers import read_from_filename

    spec, _ = read_from_filename(str(spec_path(name)))
    validate(spec)
