"""Alert correlation: a flood of alerts → a few cases with full context, none lost."""

from signoff.correlation.correlator import Assignment, CaseState, Correlator, annotate
from signoff.correlation.rules import CorrelationRules, RulesError, load_rules

load_correlation_rules = load_rules

__all__ = [
    "Assignment",
    "CaseState",
    "CorrelationRules",
    "Correlator",
    "RulesError",
    "annotate",
    "load_correlation_rules",
    "load_rules",
]
