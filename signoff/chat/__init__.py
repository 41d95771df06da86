"""Chat approvals (Slack): a bridge that posts each waiting step with its context and relays the
approver's decision to the case as a token signed with the bridge's own key, bound to the Slack user
the policy declares for that approver. See signoff/chat/bridge.py and docs/deployment.md."""
