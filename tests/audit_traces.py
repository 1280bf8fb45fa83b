"""Hand-written traces for the migration-safety audit (tests/test_audit*.py, test_queries.py).

MIGRATE (6.x tracefs, 2 CPUs), times in µs after 100 s.  vCPU thread
``CPU 0/KVM`` (pid 4321) runs KVM_RUN on fd 5 on CPU 0; a VMM thread
``live_migration`` (pid 4330) on CPU 1 calls KVM_GET_XSAVE / KVM_SET_XSAVE.
The vCPU's KVM_RUN calls, as the audit's held intervals (first to last kvm
event: kvm_fpu load to kvm_userspace_exit), are run 0 = lines 4-10
(102-151 µs), run 1 = lines 22-30 (192-251 µs), run 2 = lines 35-39
(272-291 µs).  The calls:

====  =====  ======  ==================================================================
call  lines  cmd fd  what happens
====  =====  ======  ==================================================================
0     5-6    GET 5   110-112 inside run 0 with the vCPU in the guest: violation, stale
                     under every policy (registers)
1     7-14   GET 5   enters at 120 inside run 0, sleeps (D) at 121, is woken when run 0
                     returns (151, line 10), runs again at 155 and returns at 158:
                     waited; held off 151-120 = 31 µs, slept 155-121 = 34 µs, wait 34 µs
2     15-16  GET 5   160-163, by the vCPU thread itself between runs: fine (own fd)
3     17-18  GET 9   fd 9 is no vCPU's KVM_RUN fd: unknown vCPU (it returns -EBADF, -9)
4     19-20  SET 5   180-183 between runs: fine
5     23-24  SET 5   200-204 inside run 1 with the vCPU in the guest: violation (a write)
6     26-27  GET 5   212-214 inside run 1 while the vCPU is preempted (R at 210, line
                     25): violation; the state is in memory under legacy (the preempt
                     notifier put it back) and deferred (the context switch saved it
                     into the guest fpstate), in the thread's own fpstate under vcpu_run
7     32-37  GET 5   enters at 260 between runs, is preempted (R) at 261 after its
                     copy; its return is logged at 281 inside run 2, which it entered
                     before: fine, judged just before run 2's load (272, line 35)
====  =====  ======  ==================================================================

So 8 calls: 3 violations (0, 5, 6), 1 unknown vCPU (3), 4 that entered
inside KVM_RUN (0, 1, 5, 6), 1 that waited (1).
"""

from __future__ import annotations

_V = "       CPU 0/KVM-4321    [000]"
_M = "  live_migration-4330    [001]"
_SW_M_OUT = (
    " d..2. 100.000{t}: sched_switch: prev_comm=live_migration prev_pid=4330 prev_prio=120"
    " prev_state={s} ==> next_comm=swapper/1 next_pid=0 next_prio=120"
)
_SW_M_IN = (
    "          <idle>-0       [001] d..2. 100.000{t}: sched_switch: prev_comm=swapper/1"
    " prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=live_migration next_pid=4330"
    " next_prio=120"
)


def _get(t: str, fd: int) -> str:
    return f"{_M} ..... 100.000{t}: sys_ioctl(fd: {fd}, cmd: 0x9000aea4, arg: 0x7f0000001000)"


def _set(t: str, fd: int) -> str:
    return f"{_M} ..... 100.000{t}: sys_ioctl(fd: {fd}, cmd: 0x5000aea5, arg: 0x7f0000001000)"


def _ret(who: str, t: str, value: str = "0x0") -> str:
    return f"{who} ..... 100.000{t}: sys_ioctl -> {value}"


MIGRATE_LINES = [
    "# tracer: nop",
    "#",
    f"{_V} ..... 100.000100: sys_ioctl(fd: 5, cmd: 0xae80, arg: 0x0)",  # KVM_RUN (run 0)
    f"{_V} ..... 100.000102: kvm_fpu: load",
    _get("110", 5),  # call 0
    _ret(_M, "112"),
    _get("120", 5),  # call 1
    _M + _SW_M_OUT.format(t="121", s="D"),
    f"{_V} ..... 100.000150: kvm_fpu: unload",
    f"{_V} ..... 100.000151: kvm_userspace_exit: reason KVM_EXIT_IO (2)",
    f"{_V} d..4. 100.000151: sched_wakeup: comm=live_migration pid=4330 prio=120"
    " target_cpu=001",
    _ret(_V, "152"),
    _SW_M_IN.format(t="155"),
    _ret(_M, "158"),
    f"{_V} ..... 100.000160: sys_ioctl(fd: 5, cmd: 0x9000aea4, arg: 0x7f0000002000)",  # call 2
    _ret(_V, "163"),
    _get("170", 9),  # call 3
    _ret(_M, "171", "0xfffffffffffffff7"),
    _set("180", 5),  # call 4
    _ret(_M, "183"),
    f"{_V} ..... 100.000190: sys_ioctl(fd: 5, cmd: 0xae80, arg: 0x0)",  # KVM_RUN (run 1)
    f"{_V} ..... 100.000192: kvm_fpu: load",
    _set("200", 5),  # call 5
    _ret(_M, "204"),
    f"{_V} d..2. 100.000210: sched_switch: prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120"
    " prev_state=R ==> next_comm=kworker/0:1 next_pid=87 next_prio=120",
    _get("212", 5),  # call 6
    _ret(_M, "214"),
    "     kworker/0:1-87      [000] d..2. 100.000230: sched_switch: prev_comm=kworker/0:1"
    " prev_pid=87 prev_prio=120 prev_state=I ==> next_comm=CPU 0/KVM next_pid=4321"
    " next_prio=120",
    f"{_V} ..... 100.000250: kvm_fpu: unload",
    f"{_V} ..... 100.000251: kvm_userspace_exit: reason KVM_EXIT_IO (2)",
    _ret(_V, "252"),
    _get("260", 5),  # call 7
    _M + _SW_M_OUT.format(t="261", s="R"),
    f"{_V} ..... 100.000270: sys_ioctl(fd: 5, cmd: 0xae80, arg: 0x0)",  # KVM_RUN (run 2)
    f"{_V} ..... 100.000272: kvm_fpu: load",
    _SW_M_IN.format(t="280"),
    _ret(_M, "281"),
    f"{_V} ..... 100.000290: kvm_fpu: unload",
    f"{_V} ..... 100.000291: kvm_userspace_exit: reason KVM_EXIT_IO (2)",
    _ret(_V, "292"),
]

MIGRATE = "\n".join(MIGRATE_LINES) + "\n"
