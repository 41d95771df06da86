"""The playbooks Signoff ships. Copy one to start your own (docs/playbooks.md)."""

from playbooks import Playbook, Step, register
from playbooks.actions import (
    ADD_NOTE,
    BLOCK_FILE_HASH,
    BLOCK_IP,
    BLOCK_SENDER,
    DEACTIVATE_ACCESS_KEY,
    DISABLE_ACCOUNT,
    ISOLATE_HOST,
    QUARANTINE_EMAIL,
    REVOKE_SESSIONS,
    TAG_CASE,
    WATCH_ENTITY,
)

COMPROMISED_ACCOUNT = register(
    Playbook(
        name="compromised_account",
        description="Credential theft or account takeover: contain the identity, then its sessions and keys.",
        steps=(
            Step("tag", TAG_CASE, {"tag": "compromised-account"}),
            Step("note", ADD_NOTE, {"text": "Account containment proposed; see the case's alerts."}),
            Step("watch_account", WATCH_ENTITY, target_types=("account",)),
            Step("disable_account", DISABLE_ACCOUNT),
            Step("deactivate_access_key", DEACTIVATE_ACCESS_KEY),
            Step("revoke_sessions", REVOKE_SESSIONS),
        ),
    )
)

MALWARE_ON_HOST = register(
    Playbook(
        name="malware_on_host",
        description="Malware or suspicious execution on an endpoint: isolate the host, watch the user.",
        steps=(
            Step("tag", TAG_CASE, {"tag": "malware"}),
            Step("watch_host", WATCH_ENTITY, target_types=("host",)),
            Step("isolate_host", ISOLATE_HOST),
            Step("disable_account", DISABLE_ACCOUNT),
        ),
    )
)

PHISHING = register(
    Playbook(
        name="phishing",
        description="Malicious mail: pull the message, block its sender, contain the recipient if needed.",
        steps=(
            Step("tag", TAG_CASE, {"tag": "phishing"}),
            Step("note", ADD_NOTE, {"text": "Phishing response started."}),
            Step("quarantine_email", QUARANTINE_EMAIL),
            Step("block_sender", BLOCK_SENDER),
            Step("disable_account", DISABLE_ACCOUNT),
        ),
    )
)

NETWORK_INTRUSION = register(
    Playbook(
        name="network_intrusion",
        description="Scanning, C2 or lateral movement: block the remote address, isolate the host.",
        steps=(
            Step("tag", TAG_CASE, {"tag": "network-intrusion"}),
            Step("watch_ip", WATCH_ENTITY, target_types=("ip",)),
            Step("block_ip", BLOCK_IP),
            Step("isolate_host", ISOLATE_HOST),
        ),
    )
)

INFOSTEALER = register(
    Playbook(
        name="infostealer",
        description="Credential-stealing malware: block its hash, isolate the host, revoke the user's stolen sessions.",
        steps=(
            Step("tag", TAG_CASE, {"tag": "infostealer"}),
            Step("watch_account", WATCH_ENTITY, target_types=("account",)),
            Step("block_file_hash", BLOCK_FILE_HASH),
            Step("isolate_host", ISOLATE_HOST),
            # Stolen cookies and refresh tokens outlive a password reset; revoking them cannot be undone.
            Step("revoke_sessions", REVOKE_SESSIONS),
        ),
    )
)

TRIAGE_ONLY = register(
    Playbook(
        name="triage_only",
        description="No containment by default: tag and watch while an analyst decides.",
        steps=(
            Step("tag", TAG_CASE, {"tag": "triage"}),
            Step("watch", WATCH_ENTITY),
        ),
    )
)
