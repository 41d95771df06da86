"""The approval gateway: how people reach Temporal without holding `write` on the namespace.

Temporal's authorization is per namespace, and its `write` role is every workflow API that changes
something: start, signal-with-start, terminate, cancel, reset, delete, batch operations. Approving a
step is an update, so with the default authorizer everyone who approves held all of those too
(docs/deployment.md §3, QA7). The gateway is a gRPC proxy in front of the Temporal frontend that
holds `write` itself and forwards only what a person does in Signoff:

- reads (describe, history, list, count, query, the result of an update, schedules);
- Signoff's decision updates (`approve`, `reject`, `rollback`, `close`, `assign`, `note`,
  `retry`, `detach_alert`, `merge_into`, the governance workflow's changes), whose tokens the
  workflows verify (policies/signing.py): the gateway needs no policy logic of its own. Not the
  decision signals (`approve_signal`, ...): Temporal writes a signal into the history before the
  workflow can refuse it, so anyone could fill a case's history with refused signals until Temporal
  terminates the case (its history size limit); an update's validator refuses without writing. A
  change over MAX_CHANGE_BYTES is refused for the same reason;
- the start (`signoff rollback` of an ended case) or update-with-start of a case's undo workflow
  (`CASE-undo`) and of the governance workflow, joining a running one: never one that terminates it
  (TERMINATE_EXISTING, TERMINATE_IF_RUNNING), nor with a schedule, a delay, eager execution or callbacks.

Everything else is refused with PERMISSION_DENIED and a line saying who does it instead: a start or
a signal-with-start of a case (ingest does), `add_alerts`, the updates only workers send
(`accept_merge`, `take_over_hold`), terminate, cancel, reset, delete, polling task queues. People's
`signoff` and `temporal` CLIs point TEMPORAL_ADDRESS at the gateway and need `read` at most.
Each forwarded change and each refusal is logged as one JSON line (method, workflow, update or
signal name, the client's certificate name under mTLS, the request's identity).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import temporalio.api.enums.v1 as enums_v1
import temporalio.api.operatorservice.v1 as operator_v1
import temporalio.api.workflowservice.v1 as workflow_v1

from signoff.autonomy.models import GOVERNANCE_WORKFLOW_ID

log = logging.getLogger("signoff.gateway")

WORKFLOW_SERVICE = "temporal.api.workflowservice.v1.WorkflowService"
OPERATOR_SERVICE = "temporal.api.operatorservice.v1.OperatorService"
HEALTH = "/grpc.health.v1.Health/Check"

READS = frozenset({
    "GetSystemInfo", "GetClusterInfo", "DescribeNamespace", "ListNamespaces", "GetSearchAttributes",
    "DescribeWorkflowExecution", "GetWorkflowExecutionHistory", "GetWorkflowExecutionHistoryReverse",
    "ListWorkflowExecutions", "ListOpenWorkflowExecutions", "ListClosedWorkflowExecutions",
    "ListArchivedWorkflowExecutions", "ScanWorkflowExecutions", "CountWorkflowExecutions", "QueryWorkflow",
    "PollWorkflowExecutionUpdate", "ListSchedules", "DescribeSchedule", "CountSchedules", "DescribeTaskQueue",
})
OPERATOR_READS = frozenset({"ListSearchAttributes"})
# What people decide (workflows/case*.py, workflows/case_undo.py, workflows/governance.py).
DECISION_UPDATES = frozenset({
    "approve", "reject", "rollback", "close", "assign", "note", "retry", "detach_alert", "merge_into",
    "set_autonomy", "set_threshold", "revert_threshold", "promote_model", "rollback_model", "set_candidate",
})
# The case's "checked after it is recorded" signals: not forwarded (module docstring), people send the update.
DECISION_SIGNALS = frozenset({"approve_signal", "reject_signal", "rollback_signal", "close_signal"})
# A decision is a reason (MAX_REASON_CHARS), a token and a few names: a few KiB. Larger ones only grow histories.
MAX_CHANGE_BYTES = 64 * 1024
# Update-with-start: the workflows a person's decision may start (checked by the workflow as well).
STARTED_BY_DECISIONS: dict[str, Callable[[str], bool]] = {
    "CaseUndoWorkflow": lambda workflow_id: workflow_id.endswith("-undo"),
    # `signoff-governance`, or `signoff-governance:<queue>` on another task queue (signoff.autonomy.client)
    "GovernanceWorkflow": lambda workflow_id: workflow_id.partition(":")[0] == GOVERNANCE_WORKFLOW_ID,
}
WORKERS_DO = ("workers and on-call operators hold `write` for that; people decide through Signoff's updates "
              "(docs/deployment.md §3)")
# Hop-by-hop or per-connection metadata; `authorization` is the gateway's own towards Temporal.
NOT_FORWARDED = frozenset({"authorization", "content-type", "te", "user-agent", "grpc-timeout",
                           "grpc-accept-encoding", "grpc-encoding"})


@dataclass(frozen=True)
class Verdict:
    refusal: str | None  # None: forward
    change: bool  # a write (logged when forwarded)
    workflow_id: str = ""
    name: str = ""  # the update or signal name, or the start's workflow type
    identity: str = ""


def judge(method: str, request: bytes, namespace: str) -> Verdict:
    """What the gateway does with one call: forward it (and whether it changes something), or why not."""
    if method == HEALTH:
        return Verdict(None, False)
    service, _, rpc = method.lstrip("/").partition("/")
    if service == OPERATOR_SERVICE and rpc in OPERATOR_READS:
        return _in_namespace(getattr(operator_v1, f"{rpc}Request").FromString(request), namespace, rpc)
    if service != WORKFLOW_SERVICE:
        return Verdict(f"{method} is not a Temporal workflow API the gateway forwards; {WORKERS_DO}", False)
    message_cls = getattr(workflow_v1, f"{rpc}Request", None)
    if message_cls is None:
        return Verdict(f"{rpc} is unknown to this gateway; {WORKERS_DO}", False)
    message = message_cls.FromString(request)
    if rpc in READS:
        return _in_namespace(message, namespace, rpc)
    wrong = _in_namespace(message, namespace, rpc)
    if wrong.refusal:
        return Verdict(wrong.refusal, True)
    if rpc == "SignalWorkflowExecution":
        name, workflow_id = message.signal_name, message.workflow_execution.workflow_id
        instead = ("ingest sends alerts" if name == "add_alerts" else
                   f"send the update {name.removesuffix('_signal')!r} instead (`signoff {name.removesuffix('_signal')}`):"
                   " a signal is written into the case's history before the case can refuse it"
                   if name in DECISION_SIGNALS else WORKERS_DO)
        return Verdict(f"signal {name!r}: the approval gateway forwards no signals; {instead}", True, workflow_id,
                       name, message.identity)
    if len(request) > MAX_CHANGE_BYTES:
        return Verdict(f"{rpc} of {len(request)} bytes: a decision is at most {MAX_CHANGE_BYTES} bytes (a reason of "
                       "at most 4,000 characters, a token); shorten it", True)
    if rpc == "UpdateWorkflowExecution":
        return _update(message.workflow_execution.workflow_id, message.request.input.name, message.request.meta.identity)
    if rpc == "ExecuteMultiOperation":
        return _update_with_start(message, namespace)
    if rpc == "StartWorkflowExecution" and message.workflow_type.name in STARTED_BY_DECISIONS:
        # `signoff rollback` of an ended case starts its undo workflow, then sends the update (signoff/undo.py)
        return _decision_start(message, namespace)
    what = {"StartWorkflowExecution": "starting a workflow (cases are opened by ingest)",
            "SignalWithStartWorkflowExecution": "signal-with-start (cases are opened by ingest)",
            "TerminateWorkflowExecution": "terminating a workflow", "RequestCancelWorkflowExecution": "cancelling a workflow",
            "ResetWorkflowExecution": "resetting a workflow", "DeleteWorkflowExecution": "deleting a workflow"}.get(rpc, rpc)
    workflow_id = getattr(getattr(message, "workflow_execution", None), "workflow_id", "") or getattr(message, "workflow_id", "")
    return Verdict(f"{what} is refused by the approval gateway; {WORKERS_DO}", True, workflow_id, rpc,
                   getattr(message, "identity", ""))


def _in_namespace(message: Any, namespace: str, rpc: str) -> Verdict:
    asked = getattr(message, "namespace", None)
    if asked is not None and asked and asked != namespace:
        return Verdict(f"{rpc} in namespace {asked!r}: this gateway serves {namespace!r} only", False)
    return Verdict(None, False)


def _update(workflow_id: str, name: str, identity: str) -> Verdict:
    if name not in DECISION_UPDATES:
        return Verdict(f"update {name!r} is not a decision a person sends (those are {sorted(DECISION_UPDATES)}); "
                       f"{WORKERS_DO}", True, workflow_id, name, identity)
    return Verdict(None, True, workflow_id, name, identity)


def _update_with_start(message: workflow_v1.ExecuteMultiOperationRequest, namespace: str) -> Verdict:
    ops = list(message.operations)
    if len(ops) != 2 or not ops[0].HasField("start_workflow") or not ops[1].HasField("update_workflow"):
        return Verdict(f"a multi-operation other than update-with-start; {WORKERS_DO}", True)
    start, update = ops[0].start_workflow, ops[1].update_workflow
    started = _decision_start(start, namespace)
    if started.refusal:
        return started
    if update.workflow_execution.workflow_id != start.workflow_id or update.namespace != start.namespace:
        return Verdict(f"update-with-start whose update goes to {update.workflow_execution.workflow_id!r} in "
                       f"{update.namespace!r}, not to the workflow it starts; {WORKERS_DO}", True,
                       start.workflow_id, start.workflow_type.name, start.identity)
    return _update(start.workflow_id, update.request.input.name, update.request.meta.identity)


# A decision's start joins what runs or leaves it alone: it never terminates a running undo or governance
# workflow (which would start again from the policy file, without the changes made since), and schedules,
# delays, hands the first task to the caller (eager) or calls back nothing.
_TERMINATES = (enums_v1.WorkflowIdConflictPolicy.WORKFLOW_ID_CONFLICT_POLICY_TERMINATE_EXISTING,
               enums_v1.WorkflowIdReusePolicy.WORKFLOW_ID_REUSE_POLICY_TERMINATE_IF_RUNNING)


def _decision_start(start: workflow_v1.StartWorkflowExecutionRequest, namespace: str) -> Verdict:
    kind, workflow_id = start.workflow_type.name, start.workflow_id
    allowed = STARTED_BY_DECISIONS.get(kind)
    if allowed is None or not allowed(workflow_id):
        return Verdict(f"starting {kind} {workflow_id!r}: a decision starts only a case's undo workflow "
                       f"(CASE-undo) or signoff-governance; {WORKERS_DO}", True, workflow_id, kind, start.identity)
    extra = [name for name, there in (
        ("another namespace", start.namespace != namespace),
        ("terminating the running workflow", start.workflow_id_conflict_policy == _TERMINATES[0]
         or start.workflow_id_reuse_policy == _TERMINATES[1]),
        ("a cron schedule", bool(start.cron_schedule)), ("a start delay", start.HasField("workflow_start_delay")),
        ("eager execution", start.request_eager_execution), ("completion callbacks", len(start.completion_callbacks) > 0
                                                                  or start.on_conflict_options.attach_completion_callbacks),
        ("search attributes", len(start.search_attributes.indexed_fields) > 0), ("a memo", len(start.memo.fields) > 0),
        ("a previous run's result or failure", start.HasField("last_completion_result") or start.HasField("continued_failure")),
        ("a versioning override", start.HasField("versioning_override")),
    ) if there]
    if extra:
        return Verdict(f"a start of {kind} {workflow_id!r} with {', '.join(extra)}: a decision only starts it as "
                       f"Signoff does (joining the running one); {WORKERS_DO}", True, workflow_id, kind, start.identity)
    return Verdict(None, True, workflow_id, kind, start.identity)


Forward = Callable[[str, bytes, list[tuple[str, str]], float | None], Awaitable[bytes]]


class Gateway(grpc.GenericRpcHandler):
    """A grpc.aio generic handler: every unary call is judged, then forwarded as raw bytes."""

    def __init__(self, upstream: grpc.aio.Channel, namespace: str, token: str | None = None) -> None:
        self.upstream, self.namespace, self.token = upstream, namespace, token

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method

        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            verdict = judge(method, request, self.namespace)
            who = _peer_name(context)
            if verdict.refusal:
                _log("refused", method, verdict, who)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, verdict.refusal)
            metadata = [(k, v) for k, v in context.invocation_metadata() or () if k not in NOT_FORWARDED]
            if self.token:
                metadata.append(("authorization", f"Bearer {self.token}"))
            stub = self.upstream.unary_unary(method)
            try:
                response: bytes = await stub(request, metadata=metadata, timeout=context.time_remaining())
            except grpc.aio.AioRpcError as err:  # Temporal's own answer, details included (the SDK reads them)
                context.set_trailing_metadata(tuple(err.trailing_metadata() or ()))
                await context.abort(err.code(), err.details() or "")
            if verdict.change:
                _log("forwarded", method, verdict, who)
            return response

        return grpc.unary_unary_rpc_method_handler(call)  # type: ignore[arg-type]


def _peer_name(context: grpc.aio.ServicerContext) -> str:
    """The client certificate's common name under mTLS, else the peer address."""
    names = (context.auth_context() or {}).get("x509_common_name") or []
    return names[0].decode() if names else context.peer()


def _log(outcome: str, method: str, verdict: Verdict, who: str) -> None:
    log.info(json.dumps({
        "at": datetime.now(UTC).isoformat(), "outcome": outcome, "method": method.rsplit("/", 1)[-1],
        "workflow_id": verdict.workflow_id, "name": verdict.name, "client": who,
        "identity": verdict.identity, **({"refusal": verdict.refusal} if verdict.refusal else {}),
    }, sort_keys=True))


@dataclass(frozen=True)
class ServerTLS:
    cert: bytes
    key: bytes
    client_ca: bytes | None = None  # set: every client presents a certificate from this CA (mTLS)


async def start_gateway(listen: str, upstream_address: str, namespace: str, *, tls: ServerTLS | None = None,
                        upstream_credentials: grpc.ChannelCredentials | None = None,
                        upstream_token: str | None = None) -> tuple[grpc.aio.Server, int]:
    """Start the gateway on `listen` (host:port; port 0 picks one); returns the server and its port."""
    channel = (grpc.aio.secure_channel(upstream_address, upstream_credentials) if upstream_credentials
               else grpc.aio.insecure_channel(upstream_address))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([Gateway(channel, namespace, upstream_token)])
    if tls is not None:
        creds = grpc.ssl_server_credentials([(tls.key, tls.cert)], root_certificates=tls.client_ca,
                                            require_client_auth=tls.client_ca is not None)
        port = server.add_secure_port(listen, creds)
    else:
        port = server.add_insecure_port(listen)
    await server.start()
    return server, port
