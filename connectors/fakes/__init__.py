"""Stateful fakes of SaaS vendor APIs that cannot run here, following each documented contract.

Each fake is a plain callable `httpx.Request -> httpx.Response` (use `fake.transport()` to get an
`httpx.MockTransport`), keeps its own state, models the vendor's asynchronous transitions (e.g.
CrowdStrike `containment_pending` before `contained`) as a number of reads, and can be told to
answer the next calls with faults (429 + Retry-After, 401, 500). A hand-written subset OpenAPI
spec per fake lives in `connectors/fakes/specs/`; tests check each fake against its spec.
"""

from __future__ import annotations

from connectors.fakes.base import FakeVendor, spec_path

__all__ = ["FakeVendor", "spec_path"]
