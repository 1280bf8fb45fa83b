"""A minimal KVM virtual machine through ``/dev/kvm`` ioctls, with ctypes (no QEMU).

Only what the built-in workloads need: one memory slot, vCPUs with long-mode
register state, CPUID and MSRs, an in-kernel irqchip with the local APIC in
x2APIC mode, and ``KVM_RUN``.  The ioctl numbers are computed from the
structure sizes the way ``<linux/kvm.h>`` does (``_IOW(KVMIO, nr, type)``),
so a layout mistake shows up as ``EINVAL``/``ENOTTY`` rather than silently.

ctypes foreign calls release the GIL, so a vCPU thread sleeping in
``KVM_RUN`` does not hold up the other Python threads.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import signal
import struct
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_libc.prctl.restype = ctypes.c_int

KVM_DEVICE = "/dev/kvm"
KVM_API_VERSION = 12

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class Segment(ctypes.Structure):
    """``struct kvm_segment``."""

    _fields_ = [
        ("base", u64),
        ("limit", u32),
        ("selector", u16),
        ("type", u8),
        ("present", u8),
        ("dpl", u8),
        ("db", u8),
        ("s", u8),
        ("l", u8),
        ("g", u8),
        ("avl", u8),
        ("unusable", u8),
        ("padding", u8),
    ]


class DTable(ctypes.Structure):
    """``struct kvm_dtable`` (GDTR / IDTR)."""

    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


class Sregs(ctypes.Structure):
    """``struct kvm_sregs``."""

    _fields_ = [
        *((name, Segment) for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")),
        ("gdt", DTable),
        ("idt", DTable),
        *((name, u64) for name in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")),
        ("interrupt_bitmap", u64 * 4),
    ]


class Regs(ctypes.Structure):
    """``struct kvm_regs``."""

    _fields_ = [
        (name, u64)
        for name in (
            "rax",
            "rbx",
            "rcx",
            "rdx",
            "rsi",
            "rdi",
            "rsp",
            "rbp",
            "r8",
            "r9",
            "r10",
            "r11",
            "r12",
            "r13",
            "r14",
            "r15",
            "rip",
            "rflags",
        )
    ]


class MemoryRegion(ctypes.Structure):
    """``struct kvm_userspace_memory_region``."""

    _fields_ = [
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
    ]


class LapicState(ctypes.Structure):
    """``struct kvm_lapic_state``: the APIC register page as the xAPIC MMIO layout."""

    _fields_ = [("regs", ctypes.c_char * 1024)]


class MpState(ctypes.Structure):
    """``struct kvm_mp_state``."""

    _fields_ = [("mp_state", u32)]


assert ctypes.sizeof(Sregs) == 312 and ctypes.sizeof(Regs) == 144


def _ioc(direction: int, nr: int, size: int) -> int:
    # <asm-generic/ioctl.h>: dir(2) | size(14) | type(8) | nr(8); KVMIO is 0xAE
    return (direction << 30) | (size << 16) | (0xAE << 8) | nr


def _io(nr: int) -> int:
    return _ioc(0, nr, 0)


def _iow(nr: int, size: int) -> int:
    return _ioc(1, nr, size)


def _ior(nr: int, size: int) -> int:
    return _ioc(2, nr, size)


def _iowr(nr: int, size: int) -> int:
    return _ioc(3, nr, size)


_CPUID2_HEADER = 8  # struct kvm_cpuid2 { __u32 nent; __u32 padding; entries[] }
_CPUID_ENTRY = 40  # struct kvm_cpuid_entry2
_MSRS_HEADER = 8  # struct kvm_msrs { __u32 nmsrs; __u32 pad; entries[] }
_MSR_ENTRY = 16  # struct kvm_msr_entry { __u32 index; __u32 reserved; __u64 data; }

KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, _CPUID2_HEADER)
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, ctypes.sizeof(MemoryRegion))
KVM_CREATE_IRQCHIP = _io(0x60)
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, ctypes.sizeof(Regs))
KVM_SET_REGS = _iow(0x82, ctypes.sizeof(Regs))
KVM_GET_SREGS = _ior(0x83, ctypes.sizeof(Sregs))
KVM_SET_SREGS = _iow(0x84, ctypes.sizeof(Sregs))
KVM_SET_MSRS = _iow(0x89, _MSRS_HEADER)
KVM_GET_LAPIC = _ior(0x8E, ctypes.sizeof(LapicState))
KVM_SET_LAPIC = _iow(0x8F, ctypes.sizeof(LapicState))
KVM_SET_CPUID2 = _iow(0x90, _CPUID2_HEADER)
KVM_SET_MP_STATE = _iow(0x99, ctypes.sizeof(MpState))

assert KVM_RUN == 0xAE80 and KVM_SET_SREGS == 0x4138AE84  # the values in <linux/kvm.h>

KVM_CAP_IRQCHIP = 0
KVM_MP_STATE_RUNNABLE = 0

#: ``kvm_run.exit_reason`` values this package names (``<linux/kvm.h>``).
EXIT_NAMES: dict[int, str] = {
    0: "KVM_EXIT_UNKNOWN",
    2: "KVM_EXIT_IO",
    5: "KVM_EXIT_HLT",
    6: "KVM_EXIT_MMIO",
    8: "KVM_EXIT_SHUTDOWN",
    9: "KVM_EXIT_FAIL_ENTRY",
    10: "KVM_EXIT_INTR",
    17: "KVM_EXIT_INTERNAL_ERROR",
}
KVM_EXIT_IO = 2
KVM_EXIT_INTR = 10

# struct kvm_run: the fixed part before the exit union starts at byte 32.
_RUN_IMMEDIATE_EXIT = 1
_RUN_EXIT_REASON = 8
_RUN_IO = 32  # struct { __u8 direction, size; __u16 port; __u32 count; __u64 data_offset; }

# x2APIC: IA32_APIC_BASE enable bits and the register offsets in kvm_lapic_state
MSR_IA32_APICBASE = 0x1B
APIC_DEFAULT_BASE = 0xFEE00000
APICBASE_BSP, APICBASE_EXTD, APICBASE_ENABLE = 1 << 8, 1 << 10, 1 << 11
APIC_SVR, APIC_LVTT, APIC_TDCR = 0xF0, 0x320, 0x3E0

PR_SET_NAME = 15


class KvmError(OSError):
    """A failed KVM ioctl, naming it."""


def _ioctl(
    fd: int, request: int, arg: int | ctypes.Array | ctypes.Structure | None = 0, what: str = ""
) -> int:
    ptr = arg if isinstance(arg, int) or arg is None else ctypes.addressof(arg)
    r = _libc.ioctl(fd, request, ptr)
    if r < 0:
        err = ctypes.get_errno()
        raise KvmError(err, f"{what or hex(request)}: {os.strerror(err)}")
    return r


def set_thread_name(name: str) -> None:
    """Name the calling thread (``comm``, at most 15 bytes), as QEMU names vCPU threads."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _libc.prctl(PR_SET_NAME, ctypes.addressof(buf), 0, 0, 0)


class Kvm:
    """The ``/dev/kvm`` system file descriptor."""

    def __init__(self, path: str = KVM_DEVICE) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        version = _ioctl(self.fd, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
        if version != KVM_API_VERSION:
            os.close(self.fd)
            raise KvmError(errno.EPROTO, f"KVM API version {version}, expected 12")
        self.vcpu_mmap_size = _ioctl(self.fd, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")

    def check_extension(self, cap: int) -> int:
        """``KVM_CHECK_EXTENSION``: 0 when the capability is missing."""
        return max(0, _libc.ioctl(self.fd, KVM_CHECK_EXTENSION, cap))

    def supported_cpuid(self) -> bytes:
        """``KVM_GET_SUPPORTED_CPUID`` as a ready ``struct kvm_cpuid2``."""
        n = 64
        while True:
            buf = ctypes.create_string_buffer(_CPUID2_HEADER + _CPUID_ENTRY * n)
            struct.pack_into("<I", buf, 0, n)
            if _libc.ioctl(self.fd, KVM_GET_SUPPORTED_CPUID, ctypes.addressof(buf)) == 0:
                nent = struct.unpack_from("<I", buf, 0)[0]
                return buf.raw[: _CPUID2_HEADER + _CPUID_ENTRY * nent]
            err = ctypes.get_errno()
            if err != errno.E2BIG:
                raise KvmError(err, f"KVM_GET_SUPPORTED_CPUID: {os.strerror(err)}")
            n *= 2  # the kernel says how many it has only by refusing

    def close(self) -> None:
        """Close the system fd."""
        os.close(self.fd)


class Vm:
    """One VM with a single memory slot at guest-physical 0 of ``mem_size`` bytes."""

    def __init__(self, kvm: Kvm, mem_size: int, *, irqchip: bool) -> None:
        self.kvm = kvm
        self.fd = _ioctl(kvm.fd, KVM_CREATE_VM, 0, "KVM_CREATE_VM")
        self.mem_size = mem_size
        # Private anonymous memory; guest-physical address == offset in this map.
        self.memory = mmap.mmap(-1, mem_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._mem_anchor = ctypes.c_char.from_buffer(self.memory)
        region = MemoryRegion(0, 0, 0, mem_size, ctypes.addressof(self._mem_anchor))
        _ioctl(self.fd, KVM_SET_USER_MEMORY_REGION, region, "KVM_SET_USER_MEMORY_REGION")
        self.irqchip = irqchip
        if irqchip:
            if not kvm.check_extension(KVM_CAP_IRQCHIP):
                raise KvmError(errno.ENOTSUP, "KVM has no in-kernel irqchip (KVM_CAP_IRQCHIP)")
            # Must exist before the vCPUs: each then gets an in-kernel local APIC.
            _ioctl(self.fd, KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP")

    def write(self, gpa: int, data: bytes) -> None:
        """Copy ``data`` into guest memory at ``gpa``."""
        self.memory[gpa : gpa + len(data)] = data

    def write_u64(self, gpa: int, value: int) -> None:
        """Store a little-endian 64-bit value at ``gpa``."""
        struct.pack_into("<Q", self.memory, gpa, value & (1 << 64) - 1)

    def read_u64(self, gpa: int) -> int:
        """Load a little-endian 64-bit value from ``gpa``."""
        return struct.unpack_from("<Q", self.memory, gpa)[0]

    def create_vcpu(self, index: int) -> Vcpu:
        """``KVM_CREATE_VCPU`` with id ``index`` and its shared ``kvm_run`` page."""
        return Vcpu(self, index)

    def close(self) -> None:
        """Release the VM fd (the vCPUs must be closed first)."""
        os.close(self.fd)


@dataclass
class IoExit:
    """The ``io`` member of ``kvm_run`` after a ``KVM_EXIT_IO``."""

    out: bool
    size: int
    port: int
    value: int


class Vcpu:
    """One vCPU: its fd, its ``kvm_run`` page, and register/state setters."""

    def __init__(self, vm: Vm, index: int) -> None:
        self.vm = vm
        self.index = index
        self.fd = _ioctl(vm.fd, KVM_CREATE_VCPU, index, "KVM_CREATE_VCPU")
        self.run_page = mmap.mmap(
            self.fd, vm.kvm.vcpu_mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )

    # -- state ---------------------------------------------------------------------
    def set_cpuid(self, cpuid2: bytes) -> None:
        """``KVM_SET_CPUID2`` from a ``struct kvm_cpuid2`` image."""
        buf = ctypes.create_string_buffer(cpuid2, len(cpuid2))
        _ioctl(self.fd, KVM_SET_CPUID2, buf, "KVM_SET_CPUID2")

    def set_msrs(self, msrs: dict[int, int]) -> None:
        """``KVM_SET_MSRS``; every MSR must be accepted."""
        buf = ctypes.create_string_buffer(_MSRS_HEADER + _MSR_ENTRY * len(msrs))
        struct.pack_into("<I", buf, 0, len(msrs))
        for i, (index, value) in enumerate(msrs.items()):
            struct.pack_into("<IIQ", buf, _MSRS_HEADER + _MSR_ENTRY * i, index, 0, value)
        done = _ioctl(self.fd, KVM_SET_MSRS, buf, "KVM_SET_MSRS")
        if done != len(msrs):  # it returns how many it set, stopping at the first refusal
            bad = list(msrs)[done]
            raise KvmError(errno.EINVAL, f"KVM_SET_MSRS: MSR {bad:#x} refused")

    def get_sregs(self) -> Sregs:
        """``KVM_GET_SREGS``."""
        s = Sregs()
        _ioctl(self.fd, KVM_GET_SREGS, s, "KVM_GET_SREGS")
        return s

    def set_sregs(self, s: Sregs) -> None:
        """``KVM_SET_SREGS``."""
        _ioctl(self.fd, KVM_SET_SREGS, s, "KVM_SET_SREGS")

    def get_regs(self) -> Regs:
        """``KVM_GET_REGS``."""
        r = Regs()
        _ioctl(self.fd, KVM_GET_REGS, r, "KVM_GET_REGS")
        return r

    def set_regs(self, r: Regs) -> None:
        """``KVM_SET_REGS``."""
        _ioctl(self.fd, KVM_SET_REGS, r, "KVM_SET_REGS")

    def setup_x2apic(self, *, bsp: bool, timer_vector: int) -> None:
        """Put the in-kernel local APIC in x2APIC mode with a one-shot timer on ``timer_vector``.

        The VMM programs the APIC (software enable, LVT timer, divide by 1)
        so that the guest only has to arm the timer count (one ``WRMSR``)
        and acknowledge interrupts.
        """
        base = APIC_DEFAULT_BASE | APICBASE_ENABLE | APICBASE_EXTD | (APICBASE_BSP if bsp else 0)
        self.set_msrs({MSR_IA32_APICBASE: base})
        state = LapicState()
        _ioctl(self.fd, KVM_GET_LAPIC, state, "KVM_GET_LAPIC")
        regs = bytearray(bytes(state))  # not state.regs: a c_char field stops at a NUL
        struct.pack_into("<I", regs, APIC_SVR, 0x100 | 0xFF)  # enabled, spurious vector 0xff
        struct.pack_into("<I", regs, APIC_LVTT, timer_vector)  # one-shot, unmasked
        struct.pack_into("<I", regs, APIC_TDCR, 0xB)  # divide by 1
        ctypes.memmove(ctypes.addressof(state), bytes(regs), len(regs))
        _ioctl(self.fd, KVM_SET_LAPIC, state, "KVM_SET_LAPIC")

    def set_runnable(self) -> None:
        """Mark an application processor runnable (else it waits for INIT/SIPI)."""
        _ioctl(self.fd, KVM_SET_MP_STATE, MpState(KVM_MP_STATE_RUNNABLE), "KVM_SET_MP_STATE")

    # -- running -------------------------------------------------------------------
    def run(self) -> int:
        """One ``KVM_RUN``; the exit reason (``KVM_EXIT_INTR`` when a signal cut it short)."""
        r = _libc.ioctl(self.fd, KVM_RUN, 0)
        if r < 0:
            err = ctypes.get_errno()
            if err in (errno.EINTR, errno.EAGAIN):
                return KVM_EXIT_INTR
            raise KvmError(err, f"KVM_RUN: {os.strerror(err)}")
        return struct.unpack_from("<I", self.run_page, _RUN_EXIT_REASON)[0]

    def io(self) -> IoExit:
        """The port access of the last ``KVM_EXIT_IO``."""
        direction, size, port, _count, offset = struct.unpack_from("<BBHIQ", self.run_page, _RUN_IO)
        value = int.from_bytes(self.run_page[offset : offset + size], "little")
        return IoExit(out=direction == 1, size=size, port=port, value=value)

    def kick(self, thread_ident: int) -> None:
        """Make the vCPU's current or next ``KVM_RUN`` return at once (``KVM_EXIT_INTR``).

        ``immediate_exit`` covers a thread that is between two ``KVM_RUN``
        calls; the signal interrupts one that is inside.
        """
        self.run_page[_RUN_IMMEDIATE_EXIT] = 1
        signal.pthread_kill(thread_ident, signal.SIGUSR1)

    def close(self) -> None:
        """Unmap ``kvm_run`` and close the vCPU fd."""
        self.run_page.close()
        os.close(self.fd)
