"""The built-in KVM workloads: a VMM whose vCPU threads exercise what fpureplay models.

* ``pio`` — vCPUs spin in the guest and exit to userspace with port I/O
  (``KVM_EXIT_IO``) about once a millisecond; the vCPU thread then does a
  little floating-point work, as a VMM's device emulation would.
* ``halt`` — in-kernel irqchip; vCPUs halt and sleep *inside* ``KVM_RUN``
  (``prev_state=S``) until their x2APIC one-shot timer wakes them, with a
  port-I/O exit every few halts.
* ``overcommit`` — more vCPU threads than CPUs (the VMM pins itself to at
  most two CPUs so this holds on any host) with long guest spins: the threads
  are preempted inside ``KVM_RUN`` (``prev_state=R``).
* ``mixed`` — one VM with pio, halting and long-spinning vCPUs.

vCPU threads are named ``CPU n/KVM`` as QEMU names them.  Each counts its own
``KVM_RUN`` calls and exits; :func:`run_workload` returns them as a report
(JSON-ready) so a trace can be checked against it: on a kernel that logs
``kvm_fpu``, every ``KVM_RUN`` call gives one load, one unload and one
``kvm_userspace_exit``.

The spin counts are loop iterations, so wall-clock rates depend on the CPU
(measured on the project's AMD EPYC host: ~4 M iterations per millisecond).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ingest.kvm.guest import (
    MAX_VCPUS,
    PORT_DONE,
    PORT_FAULT,
    PORT_TICK,
    GuestProgram,
    create_vm,
    guest_loops,
    request_stop,
    setup_vcpu,
)
from ingest.kvm.host import kvm_module
from ingest.kvm.vm import (
    EXIT_NAMES,
    KVM_EXIT_INTR,
    KVM_EXIT_IO,
    Kvm,
    Vcpu,
    Vm,
    set_thread_name,
)

VMM_THREAD_NAME = "fpureplay-vmm"
FP_WORK_OPS = 64  # float operations after each port-I/O exit
STOP_GRACE_S = 5.0  # how long the guests get to see STOP before their threads are kicked


@dataclass(frozen=True)
class Role:
    """A named guest program for one vCPU."""

    name: str
    program: GuestProgram


PIO = Role("pio", GuestProgram("pio_loop", spin=4_000_000))
HALT = Role("halt", GuestProgram("halt_loop", spin=100_000, timer_ns=500_000, out_every=10))
FAST_HALT = Role("halt", GuestProgram("halt_loop", spin=50_000, timer_ns=300_000, out_every=20))
SPIN = Role("spin", GuestProgram("pio_loop", spin=60_000_000))


@dataclass(frozen=True)
class Workload:
    """A workload: the roles of its vCPUs, given the CPUs the VMM may use."""

    name: str
    summary: str
    roles: Callable[[int], list[Role]]
    #: pin the VMM to at most this many CPUs (None: leave its affinity alone)
    max_cpus: int | None = None


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("pio", "2 vCPUs, a port-I/O exit about every millisecond", lambda n: [PIO] * 2),
        Workload(
            "halt",
            "3 vCPUs halting inside KVM_RUN, woken by a 500 us LAPIC timer; I/O exit every 10",
            lambda n: [HALT] * 3,
        ),
        Workload(
            "overcommit",
            "2N+1 vCPUs spinning on N <= 2 CPUs: preempted inside KVM_RUN",
            lambda n: [SPIN] * (2 * n + 1),
            max_cpus=2,
        ),
        Workload(
            "mixed",
            "4 vCPUs: pio, halt (500 us), long spins, halt (300 us)",
            lambda n: [PIO, HALT, SPIN, FAST_HALT],
        ),
    )
}


class WorkloadError(RuntimeError):
    """The guest or KVM misbehaved; the message says which vCPU and how."""


def _fp_work(seed: float) -> float:
    # Userspace FPU use between KVM_RUN calls, as device emulation does.
    x = seed
    for j in range(FP_WORK_OPS):
        x = x * 0.999 + j * 1.5
    return x


class VcpuThread(threading.Thread):
    """Runs one vCPU: ``KVM_RUN`` until the guest reports done, counting everything."""

    def __init__(self, vcpu: Vcpu, role: Role, go: threading.Event, stop: threading.Event) -> None:
        super().__init__(name=f"CPU {vcpu.index}/KVM", daemon=True)
        self.vcpu = vcpu
        self.role = role
        self.go = go
        self.stop = stop
        self.stopping = False
        self.kicked = 0
        self.tid: int | None = None
        self.ready = threading.Event()
        self.kvm_run_calls = 0
        self.exits: dict[str, int] = {}
        self.io_ports: dict[str, int] = {}
        self.error: str | None = None

    def run(self) -> None:
        """The vCPU loop (the thread's comm is ``CPU n/KVM`` from its first instruction on)."""
        set_thread_name(self.name)
        self.tid = threading.get_native_id()
        self.ready.set()
        self.go.wait()
        if self.stopping:
            return
        acc = 0.0
        try:
            while True:
                self.kvm_run_calls += 1
                reason = self.vcpu.run()
                name = EXIT_NAMES.get(reason, f"exit_{reason}")
                self.exits[name] = self.exits.get(name, 0) + 1
                if reason == KVM_EXIT_IO:
                    io = self.vcpu.io()
                    key = f"{io.port:#x}"
                    self.io_ports[key] = self.io_ports.get(key, 0) + 1
                    if io.port == PORT_TICK:
                        acc = _fp_work(acc)
                    elif io.port == PORT_DONE:
                        return
                    elif io.port == PORT_FAULT:
                        regs = self.vcpu.get_regs()
                        raise WorkloadError(
                            f"guest exception at rip {regs.rip:#x} rsp {regs.rsp:#x}"
                        )
                    else:
                        raise WorkloadError(f"port I/O to unexpected port {io.port:#x}")
                elif reason == KVM_EXIT_INTR:
                    if self.stopping:
                        return  # kicked: the guest did not reach PORT_DONE in time
                else:
                    raise WorkloadError(f"unexpected exit {name}")
        except Exception as exc:  # reported, and the other vCPUs are stopped
            self.error = f"vCPU {self.vcpu.index} ({self.role.name}): {exc}"
            self.stop.set()  # end the whole run: its counts are no longer a clean experiment

    def report(self, vm: Vm) -> dict[str, Any]:
        """This vCPU's counts (JSON-ready)."""
        return {
            "index": self.vcpu.index,
            "tid": self.tid,
            "comm": self.name,
            "role": self.role.name,
            "program": asdict(self.role.program),
            "kvm_run_calls": self.kvm_run_calls,
            "exits": dict(sorted(self.exits.items())),
            "io_ports": dict(sorted(self.io_ports.items())),
            "guest_loops": guest_loops(vm, self.vcpu.index),
            "kicked": self.kicked,
            "error": self.error,
        }


def run_workload(
    name: str,
    duration: float,
    *,
    stop: threading.Event | None = None,
    on_ready: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Build the VM of workload ``name``, run it for ``duration`` seconds, return its report.

    ``on_ready`` is called once every vCPU thread exists and is named, before
    any ``KVM_RUN``; returning False cancels the run (nothing runs, the report
    says so).  ``stop`` ends the run early.  A vCPU that fails ends the run;
    the report's ``error`` says which and why.
    """
    workload = WORKLOADS[name]
    stop = stop or threading.Event()
    cpus = sorted(os.sched_getaffinity(0))
    if workload.max_cpus is not None and len(cpus) > workload.max_cpus:
        # Our own affinity only: makes "more vCPUs than CPUs" true on any host.
        cpus = cpus[: workload.max_cpus]
        os.sched_setaffinity(0, cpus)
    roles = workload.roles(len(cpus))
    if len(roles) > MAX_VCPUS:
        raise WorkloadError(f"{len(roles)} vCPUs, at most {MAX_VCPUS} supported")

    set_thread_name(VMM_THREAD_NAME)
    kvm = Kvm()
    vm = create_vm(kvm)
    cpuid = kvm.supported_cpuid()
    go = threading.Event()
    threads: list[VcpuThread] = []
    for i, role in enumerate(roles):
        vcpu = vm.create_vcpu(i)
        setup_vcpu(vm, vcpu, role.program, cpuid)
        threads.append(VcpuThread(vcpu, role, go, stop))
    for t in threads:
        t.start()
    for t in threads:
        t.ready.wait()

    report: dict[str, Any] = {
        "workload": name,
        "summary": workload.summary,
        "duration_s": duration,
        "kvm_module": kvm_module(),
        "pid": os.getpid(),
        "vmm_tid": threading.get_native_id(),
        "vmm_comm": VMM_THREAD_NAME,
        "cpus": cpus,
        "started": False,
        "stopped_by": None,
    }
    if on_ready is not None and not on_ready():
        report["stopped_by"] = "cancelled before start"
        for t in threads:
            t.stopping = True  # seen right after `go`: no KVM_RUN at all
        go.set()
        for t in threads:
            t.join()
    else:
        report["started"] = True
        t0 = time.monotonic()
        go.set()
        report["stopped_by"] = "stop requested" if stop.wait(duration) else "duration"
        _stop_vcpus(vm, threads)
        report["elapsed_s"] = round(time.monotonic() - t0, 6)
    report["vcpus"] = [t.report(vm) for t in threads]
    report["kvm_run_calls"] = sum(t.kvm_run_calls for t in threads)
    errors = [t.error for t in threads if t.error]
    report["error"] = "; ".join(errors) if errors else None
    for t in threads:
        t.vcpu.close()
    vm.close()
    kvm.close()
    return report


def _stop_vcpus(vm: Vm, threads: list[VcpuThread]) -> None:
    """Stop every vCPU: politely through the guest, then by kicking the stragglers."""
    request_stop(vm)
    deadline = time.monotonic() + STOP_GRACE_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for t in threads:
        t.stopping = True
        while t.is_alive() and t.ident is not None:
            t.kicked += 1
            t.vcpu.kick(t.ident)
            t.join(0.05)
