"""A tiny KVM guest and VMM of our own, driven through ``/dev/kvm`` with ctypes.

``python -m ingest.kvm WORKLOAD`` runs one of :data:`~ingest.kvm.workload.WORKLOADS`
(``pio``, ``halt``, ``overcommit``, ``mixed``) and prints or writes its report;
``fpureplay record --workload NAME`` runs it under the recorder.
"""

from ingest.kvm.workload import WORKLOADS, WorkloadError, run_workload

__all__ = ["WORKLOADS", "WorkloadError", "run_workload"]
