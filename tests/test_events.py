"""Every event decoder of ingest.events, on the bodies each kernel era prints (reference §5.4).

``decode`` runs :func:`ingest.events.decode_args` on one (event, args) pair
and returns the typed fields it filled, so each expectation lists every
column the decoder sets and nothing else.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from ingest.events import DECODED_EVENTS, IOCTL_NAMES, SPECS, decode_args
from ingest.schema import EVENT_COLUMNS
from ingest.xstate import COMPACTED, CPU_PROFILES, xstate_bytes
from tests.test_formats import parse, rows


def decode(event: str, args: str) -> dict[str, Any] | None:
    """The decoded fields of one event, or None when its args match no form."""
    out = decode_args(pl.DataFrame({"event": [event], "args": [args]}))
    row = out.row(0, named=True)
    if not row.pop("decoded"):
        return None
    return {k: v for k, v in row.items() if v is not None and k not in ("event", "args")}


RIP = 0xFFFFFFFF81C3D9E4


# -- kvm ----------------------------------------------------------------------------


def test_kvm_fpu():
    assert decode("kvm_fpu", "load") == {"fpu_load": True}
    assert decode("kvm_fpu", "unload") == {"fpu_load": False}
    assert decode("kvm_fpu", "loaded") is None


@pytest.mark.parametrize(
    "args,expected",
    [
        ("vcpu 0", {"vcpu_id": 0}),  # ≤5.8
        ("vcpu 3, rip 0xffffffff81c3d9e4", {"vcpu_id": 3, "guest_rip": RIP}),  # 5.9-6.8
        ("vcpu 0, rip 0xffffffff81c3d9e4[immediate exit]", {"vcpu_id": 0, "guest_rip": RIP}),
        (
            "vcpu 12, rip 0xffffffff81c3d9e4 intr_info 0x80000b0e error_code 0x00000000",
            {"vcpu_id": 12, "guest_rip": RIP},
        ),  # ~6.13+
        ("vcpu 1 rip 0xfff0", {"vcpu_id": 1, "guest_rip": 0xFFF0}),  # trace-cmd kvm plugin
    ],
)
def test_kvm_entry_every_era(args: str, expected: dict[str, Any]):
    assert decode("kvm_entry", args) == expected


@pytest.mark.parametrize(
    "args,expected",
    [
        # 4.14 (and the trace-cmd kvm plugin): no vCPU id
        (
            "reason IO_INSTRUCTION rip 0xffffffff8102f6f4 info 1f10049 0",
            {"exit_reason": "IO_INSTRUCTION", "guest_rip": 0xFFFFFFFF8102F6F4},
        ),
        (
            "vcpu 2 reason EPT_MISCONFIG rip 0xffffffff81a0b2c6 info 0 0",
            {"vcpu_id": 2, "exit_reason": "EPT_MISCONFIG", "guest_rip": 0xFFFFFFFF81A0B2C6},
        ),
        # ≈5.11+
        (
            "vcpu 0 reason EPT_MISCONFIG rip 0xffffffff81a0b2c6 info1 0x0000000000000000 "
            "info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000",
            {"vcpu_id": 0, "exit_reason": "EPT_MISCONFIG", "guest_rip": 0xFFFFFFFF81A0B2C6},
        ),
        # VMX exit-reason flags printed after the reason
        (
            "vcpu 1 reason EXCEPTION_NMI FAILED_VMENTRY rip 0x1000 info1 0x0 info2 0x0 "
            "intr_info 0x0 error_code 0x0",
            {"vcpu_id": 1, "exit_reason": "EXCEPTION_NMI", "guest_rip": 0x1000},
        ),
        # SVM: lower-case reasons
        ("vcpu 1 reason npf rip 0xffffffff81000000 info 100000004 fee00300",
         {"vcpu_id": 1, "exit_reason": "npf", "guest_rip": 0xFFFFFFFF81000000}),
        ("reason hlt rip 0x1234 info 0 0", {"exit_reason": "hlt", "guest_rip": 0x1234}),
    ],
)
def test_kvm_exit_every_era(args: str, expected: dict[str, Any]):
    assert decode("kvm_exit", args) == expected


@pytest.mark.parametrize(
    "args,reason,code",
    [
        ("reason KVM_EXIT_IO (2)", "KVM_EXIT_IO", 2),
        ("reason KVM_EXIT_MMIO (6)", "KVM_EXIT_MMIO", 6),
        ("reason KVM_EXIT_HLT (5)", "KVM_EXIT_HLT", 5),
        ("reason KVM_EXIT_SHUTDOWN (8)", "KVM_EXIT_SHUTDOWN", 8),
        ("reason restart (4)", "restart", 4),  # -EINTR, e.g. a signal kicked the vCPU
        ("reason error (14)", "error", 14),  # -EFAULT
        ("reason 0x28 (40)", "0x28", 40),  # a reason missing from the kernel's table
    ],
)
def test_kvm_userspace_exit(args: str, reason: str, code: int):
    assert decode("kvm_userspace_exit", args) == {"exit_reason": reason, "exit_code": code}


def test_kvm_userspace_exit_needs_its_number():
    assert decode("kvm_userspace_exit", "reason KVM_EXIT_IO") is None


# -- sched ----------------------------------------------------------------------------


SWITCH = {"prev_comm": "CPU 0/KVM", "prev_pid": 4321, "prev_prio": 120,
          "next_comm": "kworker/0:1", "next_pid": 87, "next_prio": 120}


@pytest.mark.parametrize("state", ["R", "R+", "S", "D", "T", "t", "X", "Z", "P", "I", "D|K"])
def test_sched_switch_kernel_form_keeps_the_state(state: str):
    args = (
        f"prev_comm=CPU 0/KVM prev_pid=4321 prev_prio=120 prev_state={state} ==> "
        "next_comm=kworker/0:1 next_pid=87 next_prio=120"
    )
    assert decode("sched_switch", args) == {**SWITCH, "prev_state": state}


def test_sched_switch_comms_with_spaces_equals_and_arrows():
    args = (
        "prev_comm=a b=c prev_pid=1 prev_prio=-51 prev_state=R+ ==> "
        "next_comm=x ==> y next_pid=0 next_prio=139"
    )
    assert decode("sched_switch", args) == {
        "prev_comm": "a b=c", "prev_pid": 1, "prev_prio": -51, "prev_state": "R+",
        "next_comm": "x ==> y", "next_pid": 0, "next_prio": 139,
    }


@pytest.mark.parametrize(
    "printed,kernel", [("R", "R"), ("W", "I"), ("X", "Z"), ("Z", "X"), ("x", "P"), ("S|W", "S|I")]
)
def test_sched_switch_plugin_form_maps_the_state(printed: str, kernel: str):
    args = f"CPU 0/KVM:4321 [120] {printed} ==> kworker/0:1:87 [120]"
    assert decode("sched_switch", args) == {**SWITCH, "prev_state": kernel}


@pytest.mark.parametrize("event", ["sched_wakeup", "sched_waking", "sched_wakeup_new"])
@pytest.mark.parametrize(
    "args",
    [
        "comm=CPU 0/KVM pid=4321 prio=120 target_cpu=002",
        "comm=CPU 0/KVM pid=4321 prio=120 success=1 target_cpu=002",  # ≤4.2
        "CPU 0/KVM:4321 [120] CPU:002",  # libtraceevent plugin
        "CPU 0/KVM:4321 [120] success=1 CPU:002",
    ],
)
def test_sched_wakeup_forms(event: str, args: str):
    assert decode(event, args) == {
        "wake_comm": "CPU 0/KVM", "wake_pid": 4321, "wake_prio": 120, "target_cpu": 2,
    }


# -- x86_fpu ----------------------------------------------------------------------------


def test_x86_fpu_load_form():
    args = "x86/fpu: 00000000223137da load: 1 xfeatures: a3 xcomp_bv: 80000000000000e7"
    assert decode("x86_fpu_regs_deactivated", args) == {
        "fpu_tif": True,
        "xfeatures": 0xA3,
        "xcomp_bv": 0x80000000000000E7,
        "xstate_bytes": 576 + 64 + 1024,  # legacy+header, opmask, Hi16_ZMM (compacted)
    }


def test_x86_fpu_initialized_form_and_raw_pointer():
    # 4.14-5.1 print "initialized:", 4.14 raw kernel pointers
    args = "x86/fpu: 0xffff88810ab35100 initialized: 0 xfeatures: 7 xcomp_bv: 0"
    assert decode("x86_fpu_regs_activated", args) == {
        "fpu_initialized": False,
        "xfeatures": 0x7,
        "xcomp_bv": 0,
        "xstate_bytes": 832,  # x87+SSE+AVX, standard format
    }


@pytest.mark.parametrize(
    "event",
    ["x86_fpu_before_save", "x86_fpu_after_save", "x86_fpu_init_state", "x86_fpu_dropped",
     "x86_fpu_copy_src", "x86_fpu_copy_dst", "x86_fpu_xstate_check_failed"],
)
def test_every_x86_fpu_event_uses_the_same_form(event: str):
    assert decode(event, "x86/fpu: 000000007c9cda69 load: 0 xfeatures: 2 xcomp_bv: 0") == {
        "fpu_tif": False, "xfeatures": 2, "xcomp_bv": 0, "xstate_bytes": 576,
    }


@pytest.mark.parametrize(
    "xfeatures,xcomp_bv,size",
    [
        # standard (non-compacted): the end of the highest component present
        (0x0, 0, 576),
        (0x3, 0, 576),  # x87 + SSE: 512-byte legacy area + 64-byte header
        (0x7, 0, 832),  # + AVX at 576, 256 bytes
        (0xE7, 0, 2688),  # + opmask 1088+64, ZMM_Hi256 1152+512, Hi16_ZMM 1664+1024
        (0x2E7, 0, 2696),  # + PKRU at 2688, 8 bytes
        (0x60003, 0, 11008),  # AMX: XTILEDATA at 2816, 8192 bytes
        (0x107, 0, 832),  # a supervisor component (PT) has no place in the standard format
        # compacted (xcomp_bv bit 63): the components present, packed
        (0x3, COMPACTED | 0x3, 576),
        (0x2, COMPACTED | 0xE7, 576),  # a guest's "xfeatures: 2"
        (0xE7, COMPACTED | 0xE7, 576 + 256 + 64 + 512 + 1024),
        (0xA3, COMPACTED | 0xE7, 576 + 64 + 1024),
        (0x2E7, COMPACTED | 0x2E7, 2432 + 8),
        # XTILEDATA is 64-byte aligned: 576 + 64 (XTILECFG) = 640, already aligned
        (0x60003, COMPACTED | 0x60003, 640 + 8192),
        (0x20207, COMPACTED | 0x60207, 832 + 8 + 64),  # AVX, PKRU, XTILECFG
        (0x40207, COMPACTED | 0x60207, 896 + 8192),  # 840 rounds up to 896 for XTILEDATA
    ],
)
def test_xstate_bytes_by_hand(xfeatures: int, xcomp_bv: int, size: int):
    assert xstate_bytes(xfeatures, xcomp_bv) == size
    args = f"x86/fpu: 0 load: 0 xfeatures: {xfeatures:x} xcomp_bv: {xcomp_bv:x}"
    assert decode("x86_fpu_regs_activated", args)["xstate_bytes"] == size


def test_cpu_profiles_are_the_standard_sizes():
    assert CPU_PROFILES == {
        "sse": xstate_bytes(0x3),
        "avx2": xstate_bytes(0x7),
        "avx512": xstate_bytes(0xE7),
        "amx": xstate_bytes(0x60003),
    } == {"sse": 576, "avx2": 832, "avx512": 2688, "amx": 11008}


# -- ioctl syscalls ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "cmd,name",
    [
        (0xAE80, "KVM_RUN"),
        (0x9000AEA4, "KVM_GET_XSAVE"),
        (0x5000AEA5, "KVM_SET_XSAVE"),
        (0x9000AECF, "KVM_GET_XSAVE2"),
        (0x8004AE98, "KVM_GET_MP_STATE"),
        (0x5401, "0x5401"),  # TCGETS: not a KVM ioctl, kept as hex
        (0x2400, "0x2400"),
        (0x0, "0x0"),
    ],
)
def test_sys_enter_ioctl_both_spellings(cmd: int, name: str):
    # perf / trace-cmd print the format file's "%08lx"-style fields
    perf = f"fd: 0x00000003, cmd: 0x{cmd:08x}, arg: 0x7ffc0b1c3aa0"
    assert decode("sys_enter_ioctl", perf) == {"ioctl_fd": 3, "ioctl_cmd": name}
    # tracefs prints "sys_ioctl(fd: 3, cmd: 0x..., arg: 0x...)": the parser names it
    # sys_enter_ioctl and hands over what is between the parentheses
    tracefs = f"fd: 14, cmd: 0x{cmd:x}, arg: 0x0"
    assert decode("sys_enter_ioctl", tracefs) == {"ioctl_fd": 14, "ioctl_cmd": name}


def test_ioctl_names_are_the_reference_numbers():
    named = {v: k for k, v in IOCTL_NAMES.items()}
    assert [hex(named[n]) for n in ("KVM_RUN", "KVM_GET_XSAVE", "KVM_SET_XSAVE",
                                    "KVM_GET_XSAVE2", "KVM_GET_MP_STATE")] == [
        "0xae80", "0x9000aea4", "0x5000aea5", "0x9000aecf", "0x8004ae98",
    ]


@pytest.mark.parametrize(
    "args,ret",
    [
        ("0x0", 0),
        ("0x1", 1),
        ("0xffffffffffffffe7", -25),  # -ENOTTY, as tracefs and perf print it
        ("0xfffffffffffffffc", -4),  # -EINTR: a KVM_RUN cut short by a signal
        ("-4", -4),
        ("25", 25),
    ],
)
def test_sys_exit_ioctl(args: str, ret: int):
    assert decode("sys_exit_ioctl", args) == {"ioctl_ret": ret}


def test_ioctl_lines_in_every_format():
    tracefs = parse(
        """
                vmm-main-30797   [001] .....  2194.985610: sys_ioctl(fd: 3, cmd: 0xae80, arg: 0x0)
                vmm-main-30797   [001] .....  2194.985612: sys_ioctl -> 0xffffffffffffffe7
        """,
        "tracefs",
    )
    trace_cmd = parse(
        """
        capture_xsave:         vmm-main-30850 [001]  2196.472987: sys_enter_ioctl:      fd: 0x00000003, cmd: 0x9000aea4, arg: 0x7ffc0b1c3aa0
        capture_xsave:         vmm-main-30850 [001]  2196.472989: sys_exit_ioctl:       0x0
        """,  # noqa: E501
        "trace-cmd",
    )
    perf = parse(
        """
                vmm-main 30850 [001]  2198.099260:         syscalls:sys_enter_ioctl: fd: 0x00000003, cmd: 0x5000aea5, arg: 0x00000000
                vmm-main 30850 [001]  2198.099264:          syscalls:sys_exit_ioctl: 0x0
        """,  # noqa: E501
        "perf-script",
    )
    picked = ("event", "args", "ioctl_fd", "ioctl_cmd", "ioctl_ret")
    assert [{k: r[k] for k in picked if k in r} for r in rows(tracefs.events)] == [
        {"event": "sys_enter_ioctl", "args": "fd: 3, cmd: 0xae80, arg: 0x0", "ioctl_fd": 3,
         "ioctl_cmd": "KVM_RUN"},
        {"event": "sys_exit_ioctl", "args": "0xffffffffffffffe7", "ioctl_ret": -25},
    ]
    assert [r.get("ioctl_cmd", r.get("ioctl_ret")) for r in rows(trace_cmd.events)] == [
        "KVM_GET_XSAVE", 0,
    ]
    assert [r.get("ioctl_cmd", r.get("ioctl_ret")) for r in rows(perf.events)] == [
        "KVM_SET_XSAVE", 0,
    ]


# -- the declarations ---------------------------------------------------------------------


def test_undeclared_events_are_decoded_to_nothing():
    assert decode("sched_migrate_task", "comm=x pid=1 prio=120 orig_cpu=0 dest_cpu=1") == {}
    assert decode("kvm_pio", "pio_write at 0x70 size 1 count 1 val 0x8f") == {}


def test_declared_event_with_unmatched_args_is_not_decoded():
    assert decode("sched_switch", "prev_comm=a prev_pid=1") is None
    assert decode("x86_fpu_regs_activated", "x86/fpu: 0 load: 2 xfeatures: 0 xcomp_bv: 0") is None
    assert decode("sys_enter_ioctl", "fd: 3") is None


def test_specs_fill_only_event_columns_with_known_converters():
    for spec in SPECS:
        for form in spec.forms:
            assert set(form.types) <= set(EVENT_COLUMNS), spec.names
    assert {"kvm_fpu", "sched_switch", "sched_wakeup", "sched_waking", "kvm_entry", "kvm_exit",
            "kvm_userspace_exit", "x86_fpu_regs_activated", "sys_enter_ioctl",
            "sys_exit_ioctl"} <= DECODED_EVENTS


def test_decoding_many_rows_keeps_their_order():
    events = ["kvm_fpu", "sched_wakeup", "kvm_fpu", "other", "kvm_userspace_exit"]
    args = ["load", "c:5 [120] CPU:001", "unload", "whatever", "reason restart (4)"]
    out = decode_args(pl.DataFrame({"event": events, "args": args}))
    assert out["fpu_load"].to_list() == [True, None, False, None, None]
    assert out["wake_pid"].to_list() == [None, 5, None, None, None]
    assert out["exit_code"].to_list() == [None, None, None, None, 4]
    assert out["decoded"].to_list() == [True] * 5
