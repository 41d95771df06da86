"""Custom search attributes: how the queue, the UI and auditors find cases.

SQL visibility allows 10 Keyword, 3 KeywordList, 3 Bool, 3 Double, 3 Int, 3 Datetime and 3 Text
attributes per namespace.
Values are stored unencrypted: never put personal data or secrets in them.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

CASE_STATUS = SearchAttributeKey.for_keyword("CaseStatus")
ALERT_TYPE = SearchAttributeKey.for_keyword("AlertType")
CASE_SEVERITY = SearchAttributeKey.for_keyword("CaseSeverity")
PLAYBOOK = SearchAttributeKey.for_keyword("Playbook")
MODEL_VERSION = SearchAttributeKey.for_keyword("ModelVersion")
POLICY_VERSION = SearchAttributeKey.for_keyword("PolicyVersion")
DECISION = SearchAttributeKey.for_keyword("Decision")
APPROVERS = SearchAttributeKey.for_keyword_list("Approvers")
EXECUTED_ACTIONS = SearchAttributeKey.for_keyword_list("ExecutedActions")
AWAITING_APPROVAL = SearchAttributeKey.for_bool("AwaitingApproval")
ROLLED_BACK = SearchAttributeKey.for_bool("RolledBack")
CONFIDENCE = SearchAttributeKey.for_float("Confidence")
# The case's alert count: `signoff cases` lists exact counts from
# visibility alone, for cases ingested anywhere. Cases started before it was added have none.
ALERT_COUNT = SearchAttributeKey.for_int("AlertCount")
# What the case holds now: `signoff.holds.hold_key` digests (not names: values are unencrypted) of
# its executed, not yet undone reversible actions. A rollback asks who else holds the same one.
HELD_TARGETS = SearchAttributeKey.for_keyword_list("HeldTargets")
# When the case's verdict is due under the policy's verdict_sla (set once the case goes to a human):
# `signoff cases --overdue` is `VerdictDue < now` on running cases, answered by visibility alone.
VERDICT_DUE = SearchAttributeKey.for_datetime("VerdictDue")
# Who owns the case (an approver's policy name): `signoff cases --assignee bob` / `--unassigned`.
ASSIGNEE = SearchAttributeKey.for_keyword("Assignee")
# Digests of the entity values the case holds (signoff.entity_index): `signoff cases --entity VALUE`
# and `signoff related CASE` find the cases that share a host, an account, an IP, ... A Text
# attribute: the store tokenises it, so one digest matches.
CASE_ENTITIES = SearchAttributeKey.for_text("CaseEntities")

ALL = (
    CASE_STATUS, ALERT_TYPE, CASE_SEVERITY, PLAYBOOK, MODEL_VERSION, POLICY_VERSION, DECISION,
    APPROVERS, EXECUTED_ACTIONS, AWAITING_APPROVAL, ROLLED_BACK, CONFIDENCE, ALERT_COUNT, HELD_TARGETS,
    VERDICT_DUE, ASSIGNEE, CASE_ENTITIES,
)
