"""Every parameter of the vCPU model, with its default, unit and distribution, and the presets.

This table is the single source for ``--param key=value`` parsing, for the
``simulate --help`` text, for ``--show-params`` and for docs/model.md, so the
three cannot drift apart.  It imports nothing heavy.

Distributions (the ``dist`` column):

* ``exp``: exponential with the given mean (inter-arrival times, work amounts);
* ``lat``: a kernel path latency: half the mean fixed plus an exponential with
  the other half as its mean, so it is never below half the mean;
* ``uni``: uniform between 0.5 and 1.5 times the mean;
* ``poisson``: events of a Poisson process at the given rate;
* ``fixed``, ``prob`` (a probability), ``count``, ``flag``, ``choice``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any


@dataclass(frozen=True)
class Param:
    """One model parameter."""

    name: str
    default: Any
    kind: str  # int | float | bool | choice
    unit: str
    dist: str
    group: str
    help: str
    lo: float | None = 0.0  # inclusive bounds for numbers (None: unbounded)
    hi: float | None = None
    choices: tuple[str, ...] = ()


_H = "host"
_S = "scheduler"
_M = "VMM (QEMU)"
_G = "vCPU and guest"
_K = "kernel (negative control)"
_T = "trace content"

PARAMS: tuple[Param, ...] = (
    # --- host --------------------------------------------------------------
    Param("cpus", 4, "int", "", "count", _H, "physical CPUs", 1, 256),
    Param("vms", 2, "int", "", "count", _H, "VMs (one VMM process each)", 0, 64),
    Param("vcpus_per_vm", 2, "int", "", "count", _H, "vCPU threads per VM", 1, 64),
    Param(
        "overcommit", 0.0, "float", "x", "fixed", _H,
        "if > 0: total vCPUs = round(overcommit * cpus), in VMs of vcpus_per_vm (replaces vms)",
        0, 64,
    ),
    Param("host_tasks", 2, "int", "", "count", _H,
          "FPU-using host user processes (one thread each, named like real ones)", 0, 256),
    Param("host_busy_us", 500.0, "float", "us", "exp", _H,
          "CPU burst of a host process before it sleeps"),
    Param("host_sleep_us", 5000.0, "float", "us", "exp", _H, "sleep between bursts"),
    Param("kthread_hz", 200.0, "float", "1/s", "poisson", _H,
          "wakeups of each CPU's kworker (a kernel thread: no FPU state)"),
    Param("kthread_us", 8.0, "float", "us", "lat", _H, "run time of a kworker wakeup"),
    # --- scheduler -----------------------------------------------------------
    Param("timeslice_us", 3000.0, "float", "us", "fixed", _S,
          "time a task runs before it is preempted when others wait on its CPU", 1),
    Param("wakeup_preempt", 0.5, "float", "", "prob", _S,
          "a wakeup onto a busy CPU preempts the task running there", 0, 1),
    Param("migrate_prob", 0.05, "float", "", "prob", _S,
          "a preempted task is requeued on another (random) CPU: load balancing", 0, 1),
    Param("idle_pull", 1.0, "float", "", "prob", _S,
          "a CPU going idle pulls a waiting task from the busiest run queue", 0, 1),
    Param("wake_latency_us", 4.0, "float", "us", "lat", _S,
          "from a wakeup to the switch-in on an idle CPU (idle exit, IPI)"),
    Param("resched_us", 1.5, "float", "us", "lat", _S,
          "from a preempting wakeup or timeslice end to the preemption (resched IPI)"),
    # --- VMM -----------------------------------------------------------------
    Param("vmm_main_hz", 100.0, "float", "1/s", "poisson", _M,
          "wakeups of each VMM's main thread (timers, monitor)"),
    Param("vmm_main_us", 30.0, "float", "us", "exp", _M, "main-thread work per wakeup"),
    Param("iothread_us", 15.0, "float", "us", "exp", _M,
          "I/O thread work per virtio notification, then it injects an interrupt (irqfd)"),
    Param("user_io_us", 10.0, "float", "us", "exp", _M,
          "VMM handling of a PIO/MMIO exit in userspace before the next KVM_RUN"),
    Param("user_signal_us", 5.0, "float", "us", "exp", _M,
          "VMM handling after a kick (KVM_RUN returned restart (4))"),
    Param("signal_hz", 2.0, "float", "1/s", "poisson", _M,
          "kicks (signals) per vCPU per second of guest time: KVM_RUN returns restart (4)"),
    Param("migration_ms", 0.0, "float", "ms", "fixed", _M,
          "live migration: every this often each VM's `live_migration` thread calls "
          "KVM_GET_XSAVE on each of its vCPUs in turn, waiting for the vCPU mutex while the "
          "vCPU is inside KVM_RUN (0: no migration thread)"),
    Param("xsave_us", 4.0, "float", "us", "lat", _M,
          "time one KVM_GET_XSAVE holds the vCPU mutex (the copy of the guest FPU state)"),
    # --- vCPU / guest --------------------------------------------------------
    Param("guest_busy_us", 400.0, "float", "us", "exp", _G,
          "guest work after a wakeup before it halts (inf: never halts, CPU bound; "
          "lat in ping-pong mode)"),
    Param("timer_hz", 250.0, "float", "1/s", "fixed", _G,
          "guest timer tick while halted: wakes the vCPU (0: tickless)"),
    Param("timer_hz_max", 0.0, "float", "1/s", "fixed", _G,
          "if > timer_hz: each VM's tick rate is drawn uniformly from [timer_hz, timer_hz_max]"),
    Param("exit_hz", 5000.0, "float", "1/s", "poisson", _G,
          "in-kernel VM exits (kvm_exit + kvm_entry, no other effect) per second of guest time"),
    Param("exit_us", 1.5, "float", "us", "uni", _G,
          "in-kernel exit handling, kvm_exit to kvm_entry"),
    Param("io_hz", 200.0, "float", "1/s", "poisson", _G,
          "port-I/O exits to userspace (KVM_EXIT_IO) per second of guest time"),
    Param("mmio_hz", 200.0, "float", "1/s", "poisson", _G,
          "MMIO exits to userspace (KVM_EXIT_MMIO) per second of guest time"),
    Param("notify_hz", 300.0, "float", "1/s", "poisson", _G,
          "virtio notifications (in-kernel ioeventfd exits waking the VM's I/O thread) "
          "per second of guest time"),
    Param("ipi_hz", 200.0, "float", "1/s", "poisson", _G,
          "IPIs to another vCPU of the same VM per second of guest time (wakes it if halted)"),
    Param("pingpong", 0, "int", "", "flag", _G,
          "1: vCPUs 2k and 2k+1 of each VM pass one IPI token: each busy period ends with an "
          "IPI to the partner and a HLT (the 2017 ping-pong test)", 0, 1),
    Param("spurious_hz", 0.0, "float", "1/s", "poisson", _G,
          "spurious wakeups of a blocked vCPU per second blocked: switched in, no event, blocks "
          "again without a guest entry (reference §8.2; exact replay needs kvm_entry lines)"),
    Param("halt_poll_us", 0.0, "float", "us", "fixed", _G,
          "halt polling window (KVM halt_poll_ns): a wakeup within it avoids the block"),
    Param("entry_us", 1.0, "float", "us", "lat", _G,
          "KVM_RUN entry or switch-in to the guest entry (kvm_entry)"),
    Param("uexit_us", 2.0, "float", "us", "lat", _G,
          "exit to userspace: kvm_exit to kvm_userspace_exit"),
    Param("hlt_us", 1.0, "float", "us", "lat", _G, "HLT exit to the block (sched_switch S)"),
    # --- kernel ----------------------------------------------------------------
    Param("fpu_ioctl_ignores_mutex", 0, "int", "", "flag", _K,
          "1: a deliberately broken kernel whose KVM_GET_XSAVE does not take the vCPU mutex, so "
          "the migration thread copies the guest FPU buffer even while the vCPU is inside "
          "KVM_RUN (the audit's negative control)", 0, 1),
    # --- trace content -------------------------------------------------------
    Param("xstate", "avx512", "choice", "", "choice", _T,
          "xstate size the x86_fpu lines print (xfeatures): sse 576, avx2 832, avx512 2688, "
          "amx 11008 bytes", None, None, ("sse", "avx2", "avx512", "amx")),
    Param("entry_events", 1, "bool", "", "flag", _T,
          "log kvm_entry/kvm_exit (VMX/SVM hosts; off: as this machine's kvm_pvm host)"),
    Param("fpu_events", 1, "bool", "", "flag", _T, "log x86_fpu_regs_activated/deactivated"),
    Param("ioctl_events", 1, "bool", "", "flag", _T,
          "log sys_enter_ioctl/sys_exit_ioctl (KVM_RUN)"),
    Param("wakeup_events", 1, "bool", "", "flag", _T, "log sched_wakeup"),
    Param("pid_base", 30000, "int", "", "fixed", _T,
          "first pid of the VMM processes (host processes start at pid_base - 1000)", 100,
          4_000_000),
    Param("clock_start_s", 1000.0, "float", "s", "fixed", _T,
          "trace clock at the start of the simulation (uptime)"),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}

#: Presets: overrides of the defaults.  ``mixed`` is the default preset.
PRESETS: dict[str, dict[str, Any]] = {
    "idle": {
        "cpus": 4, "vms": 2, "vcpus_per_vm": 2, "host_tasks": 1, "host_busy_us": 200.0,
        "host_sleep_us": 20000.0, "guest_busy_us": 40.0, "timer_hz": 250.0,
        "timer_hz_max": 1000.0, "exit_hz": 2000.0, "io_hz": 5.0, "mmio_hz": 5.0,
        "notify_hz": 20.0, "ipi_hz": 50.0, "signal_hz": 1.0,
    },
    "io-heavy": {
        "cpus": 4, "vms": 2, "vcpus_per_vm": 2, "host_tasks": 1, "guest_busy_us": 3000.0,
        "timer_hz": 250.0, "exit_hz": 5000.0, "io_hz": 8000.0, "mmio_hz": 6000.0,
        "notify_hz": 4000.0, "user_io_us": 8.0, "iothread_us": 10.0, "ipi_hz": 200.0,
    },
    "overcommit": {
        "cpus": 4, "overcommit": 3.0, "vcpus_per_vm": 4, "host_tasks": 0,
        "guest_busy_us": math.inf, "exit_hz": 3000.0, "io_hz": 50.0, "mmio_hz": 50.0,
        "notify_hz": 100.0, "ipi_hz": 100.0, "migrate_prob": 0.05,
    },
    "pingpong": {
        "cpus": 2, "vms": 1, "vcpus_per_vm": 2, "pingpong": 1, "guest_busy_us": 4.5,
        "timer_hz": 0.0, "halt_poll_us": 0.0, "host_tasks": 0, "kthread_hz": 20.0,
        "vmm_main_hz": 10.0, "exit_hz": 0.0, "io_hz": 0.0, "mmio_hz": 0.0, "notify_hz": 0.0,
        "ipi_hz": 0.0, "signal_hz": 0.0,
    },
    "mixed": {
        "cpus": 8, "vms": 3, "vcpus_per_vm": 4, "host_tasks": 4, "guest_busy_us": 1500.0,
        "timer_hz": 250.0, "timer_hz_max": 1000.0, "exit_hz": 5000.0, "io_hz": 500.0,
        "mmio_hz": 500.0, "notify_hz": 500.0, "ipi_hz": 300.0, "signal_hz": 5.0,
        "halt_poll_us": 20.0,
    },
    "migration": {
        "cpus": 4, "vms": 2, "vcpus_per_vm": 4, "host_tasks": 1, "host_busy_us": 2000.0,
        "host_sleep_us": 3000.0, "guest_busy_us": 3000.0, "timer_hz": 250.0, "exit_hz": 2000.0,
        "io_hz": 5000.0, "mmio_hz": 1000.0, "notify_hz": 200.0, "ipi_hz": 100.0,
        "signal_hz": 2.0, "migration_ms": 1.0, "xsave_us": 4.0,
    },
}  # fmt: skip

PRESET_HELP: dict[str, str] = {
    "idle": "mostly halted guests woken by a 250-1000 Hz timer; light host load",
    "io-heavy": "busy guests with frequent port-I/O and MMIO exits to the VMM",
    "overcommit": "3 CPU-bound vCPUs per pCPU: vCPUs are preempted inside KVM_RUN",
    "pingpong": "two vCPUs on two CPUs passing an IPI, ~20 us round trip (the 2017 test)",
    "mixed": "12 vCPUs on 8 CPUs with some of everything (the default)",
    "migration": "2 VMs of 4 busy vCPUs on 4 CPUs, each VM live-migrated: KVM_GET_XSAVE of "
    "every vCPU every millisecond from a migration thread (the audit's workload)",
}

DEFAULT_PRESET = "mixed"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ParamError(ValueError):
    """A bad ``--param``, ``--grid`` or preset name (the CLI exits 2 with the message)."""


def parse_value(p: Param, text: str) -> Any:
    """The typed value of ``text`` for parameter ``p``; ParamError when it does not fit."""
    raw = text.strip()
    if p.kind == "choice":
        if raw not in p.choices:
            raise ParamError(f"{p.name}={raw!r}: expected one of {', '.join(p.choices)}")
        return raw
    try:
        if p.kind == "int":
            value: Any = int(raw)
        elif p.kind == "float":
            value = float(raw)
            if math.isnan(value):
                raise ValueError
        else:
            low = raw.lower()
            if low not in _TRUE | _FALSE:
                raise ValueError
            value = int(low in _TRUE)
    except ValueError:
        raise ParamError(f"{p.name}={raw!r}: expected {_kind_words(p)}") from None
    return check(p, value)


def check(p: Param, value: Any) -> Any:
    """``value`` if it lies in the parameter's bounds, else ParamError."""
    if p.kind in ("int", "float"):
        if p.lo is not None and value < p.lo:
            raise ParamError(f"{p.name}={value}: must be >= {_num(p.lo)}")
        if p.hi is not None and value > p.hi:
            raise ParamError(f"{p.name}={value}: must be <= {_num(p.hi)}")
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _kind_words(p: Param) -> str:
    return {"int": "an integer", "float": "a number", "bool": "0 or 1"}.get(p.kind, p.kind)


def split_assignment(text: str) -> tuple[str, str]:
    """``key=value`` -> (key, value); ParamError for anything else or an unknown key."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ParamError(f"{text!r}: expected KEY=VALUE")
    if key not in BY_NAME:
        raise ParamError(f"unknown parameter {key!r} (see `fpureplay simulate --show-params`)")
    return key, value


def resolve(preset: str, assignments: Iterable[str] = ()) -> dict[str, Any]:
    """Defaults, then the preset's values, then ``key=value`` assignments, in that order."""
    if preset not in PRESETS:
        raise ParamError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    values = {p.name: p.default for p in PARAMS}
    values.update(PRESETS[preset])
    for text in assignments:
        key, raw = split_assignment(text)
        values[key] = parse_value(BY_NAME[key], raw)
    return values


def namespace(values: Mapping[str, Any]) -> SimpleNamespace:
    """Attribute access for the simulation's hot code."""
    return SimpleNamespace(**values)


def canonical(values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe values in table order (infinity as the string 'inf')."""
    out: dict[str, Any] = {}
    for p in PARAMS:
        v = values[p.name]
        out[p.name] = "inf" if isinstance(v, float) and math.isinf(v) else v
    return out


def help_text() -> str:
    """The parameter list for ``simulate --help`` (one line each)."""
    lines = []
    for group in dict.fromkeys(p.group for p in PARAMS):
        lines.append(f"{group}:")
        for p in (q for q in PARAMS if q.group == group):
            unit = f" {p.unit}" if p.unit else ""
            dist = f", {p.dist}" if p.dist not in ("count", "flag", "choice", "fixed") else ""
            lines.append(f"  {p.name}={show_value(p.default)}{unit}{dist}: {p.help}")
    return "\n".join(lines)


def show_value(v: Any) -> str:
    """A value as the help and the docs print it (inf for infinity, 3 not 3.0)."""
    if isinstance(v, float):
        return "inf" if math.isinf(v) else _num(v)
    return str(v)


def rows(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per parameter (for ``--show-params`` and the docs table)."""
    return [
        {
            "param": p.name,
            "value": show_value(values[p.name]),
            "default": show_value(p.default),
            "unit": p.unit,
            "distribution": p.dist,
            "group": p.group,
            "meaning": p.help,
        }
        for p in PARAMS
    ]
