"""The FPU switching policies, one module each, behind one interface.

Adding a policy (e.g. the 5.2–5.5 variants D52/D53) is a new module with a
:class:`~pipeline.policies.base.Policy` subclass and one line in ``POLICIES``.
"""

from __future__ import annotations

from pipeline.policies.base import OpLog, Policy
from pipeline.policies.deferred import Deferred
from pipeline.policies.legacy import Legacy
from pipeline.policies.vcpu_run import VcpuRun

#: Policy name -> class, in the order reports list them.
POLICIES: dict[str, type[Policy]] = {
    "legacy": Legacy,
    "vcpu_run": VcpuRun,
    "deferred": Deferred,
}

__all__ = ["POLICIES", "OpLog", "Policy"]
