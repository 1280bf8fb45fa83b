"""What the recording host is: kernel, CPU model, XSAVE state sizes, KVM module.

The XSAVE sizes come from the CPU itself (``CPUID`` leaf 0xD and ``XGETBV``),
run as a few bytes of machine code through ctypes, because no file in
``/proc`` or ``/sys`` states them and they differ between vendors even for
the same features (AVX-512 state is 2432 bytes on AMD Zen 4 and 2688 on
Intel: AMD does not leave Intel's MPX hole in the standard layout).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

# void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4])   (System V ABI)
#   push %rbx; mov %edi,%eax; mov %esi,%ecx; mov %rdx,%r8; cpuid
#   mov %eax,(%r8); mov %ebx,4(%r8); mov %ecx,8(%r8); mov %edx,12(%r8); pop %rbx; ret
_CPUID_CODE = bytes.fromhex("53" "89f8" "89f1" "4989d0" "0fa2" "418900" "41895804" "41894808"
                            "4189500c" "5b" "c3")  # fmt: skip
# uint64_t xgetbv0(void):  xor %ecx,%ecx; xgetbv; shl $32,%rdx; or %rdx,%rax; ret
_XGETBV_CODE = bytes.fromhex("31c90f01d048c1e2204809d0c3")

_CPUID_FN = ctypes.CFUNCTYPE(
    None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)
)
_XGETBV_FN = ctypes.CFUNCTYPE(ctypes.c_uint64)


class _Code:
    """A page of our machine code, written while writable, then made read+execute only."""

    def __init__(self) -> None:
        self.page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.page[: len(_CPUID_CODE)] = _CPUID_CODE
        self.page[64 : 64 + len(_XGETBV_CODE)] = _XGETBV_CODE
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.page))
        if _libc.mprotect(self.base, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            raise OSError(ctypes.get_errno(), "mprotect(PROT_EXEC) refused")
        self.cpuid = _CPUID_FN(self.base)
        self.xgetbv0 = _XGETBV_FN(self.base + 64)


_code: _Code | None = None


def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """``CPUID`` (eax, ebx, ecx, edx) for ``leaf``/``subleaf``; OSError if code cannot run."""
    global _code
    if _code is None:
        _code = _Code()
    out = (ctypes.c_uint32 * 4)()
    _code.cpuid(leaf, subleaf, out)
    return out[0], out[1], out[2], out[3]


@dataclass(frozen=True)
class XState:
    """The XSAVE figures of this CPU as the kernel set it up."""

    xfeatures: int  #: XCR0: user state components enabled
    xstate_bytes: int  #: standard-format XSAVE area for XCR0 (CPUID 0xD.0 EBX)
    xsaves_bytes: int | None  #: compacted XSAVES area for XCR0|IA32_XSS (CPUID 0xD.1 EBX)


def xstate() -> XState | None:
    """This CPU's XSAVE figures, or None (no XSAVE, not x86-64, or no executable memory)."""
    if os.uname().machine != "x86_64":
        return None
    try:
        max_leaf = cpuid(0)[0]
        if max_leaf < 0xD or not cpuid(1)[2] >> 27 & 1:  # OSXSAVE: XGETBV usable
            return None
        assert _code is not None
        xcr0 = _code.xgetbv0()
        ebx0 = cpuid(0xD, 0)[1]
        eax1, ebx1, _, _ = cpuid(0xD, 1)
    except OSError:
        return None
    # 0xD.1 EBX is defined only with XSAVES (EAX bit 3)
    return XState(xfeatures=xcr0, xstate_bytes=ebx0, xsaves_bytes=ebx1 if eax1 & 8 else None)


def cpu_model() -> str | None:
    """The first ``model name`` of ``/proc/cpuinfo``."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return None


def kvm_module() -> str | None:
    """The KVM vendor module loaded (``kvm_intel``, ``kvm_amd``, ``kvm_pvm``), or None."""
    for name in ("kvm_intel", "kvm_amd", "kvm_pvm"):
        if os.path.isdir(f"/sys/module/{name}"):
            return name
    return None
