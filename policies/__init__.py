"""Governance policy: data (YAML files in this folder) plus one small engine."""

from policies.engine import Policy, approval_refusal, parse_duration, quorum_met
from policies.loader import PolicyError, load_policy, policy_path

__all__ = ["Policy", "PolicyError", "approval_refusal", "load_policy", "parse_duration", "policy_path", "quorum_met"]
