"""Colours and names shared by the figures: a policy or a state looks the same everywhere."""

from __future__ import annotations

#: The kernel's history: legacy (4.11-4.14), vcpu_run (the 2017 patch), deferred (5.2+).
POLICY_ORDER = ("legacy", "vcpu_run", "deferred")
POLICY_COLOURS = {"legacy": "#d62728", "vcpu_run": "#1f77b4", "deferred": "#2ca02c"}
OTHER_COLOUR = "#7f7f7f"

#: Thread states of the timeline (the thread_states query), top to bottom in a CPU lane.
STATES = ("kvm_run", "user", "preempted", "blocked", "other")
STATE_LABELS = {
    "kvm_run": "in KVM_RUN",
    "user": "in userspace",
    "preempted": "preempted",
    "blocked": "blocked",
    "other": "off CPU (other)",
}
STATE_COLOURS = {
    "kvm_run": "#2ca02c",
    "user": "#1f77b4",
    "preempted": "#ff7f0e",
    "blocked": "#9467bd",
    "other": "#8c564b",
}

#: (op, context) cells of the policy comparison.
OP_CELLS = (("save", "user"), ("restore", "user"), ("save", "guest"), ("restore", "guest"))
OP_COLOURS = {
    ("save", "user"): "#1f77b4",
    ("restore", "user"): "#aec7e8",
    ("save", "guest"): "#ff7f0e",
    ("restore", "guest"): "#ffbb78",
}
NEEDED_COLOUR = "#4c78a8"
REDUNDANT_COLOUR = "#e45756"


def policy_colour(policy: str) -> str:
    """The colour of ``policy`` (grey for a policy the palette does not know)."""
    return POLICY_COLOURS.get(policy, OTHER_COLOUR)


def policy_rank(policy: str) -> tuple[int, str]:
    """Sort key putting the policies in the kernel's order, others after by name."""
    return (POLICY_ORDER.index(policy) if policy in POLICY_ORDER else len(POLICY_ORDER), policy)
