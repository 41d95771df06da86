"""Chat approvals (Slack): a bridge that posts each waiting step with its context and relays the
approver's decision to the case as a token signed with the bridge's own key, bound to the Slack user
the policy declares for that approver. See docs/deployment.md. Modules: bridge.py (the notifier and
the decisions), endpoint.py (Slack's HTTP requests in), messages.py (what is posted), store.py (what
was posted)."""
