"""Decode an XSAVE feature mask (``xfeatures`` of the x86_fpu events) into bytes.

Offsets and sizes are the architectural ones CPUID leaf 0xD reports on
current Intel parts.  The standard (non-compacted) format places every user
component at a fixed offset, so its size is the end of the highest component;
the compacted format (XSAVEC/XSAVES, ``xcomp_bv`` bit 63 set) packs the
components present one after another.  Both start with the 512-byte legacy
x87/SSE area and the 64-byte XSAVE header.
"""

from __future__ import annotations

LEGACY_AND_HEADER = 576
COMPACTED = 1 << 63

#: bit -> (standard-format offset or None for supervisor state, size, 64-byte aligned)
COMPONENTS: dict[int, tuple[int | None, int, bool]] = {
    2: (576, 256, False),  # AVX (YMM_Hi128)
    3: (960, 64, False),  # MPX BNDREGS
    4: (1024, 64, False),  # MPX BNDCSR
    5: (1088, 64, False),  # AVX-512 opmask
    6: (1152, 512, False),  # AVX-512 ZMM_Hi256
    7: (1664, 1024, False),  # AVX-512 Hi16_ZMM
    8: (None, 72, False),  # PT (supervisor)
    9: (2688, 8, False),  # PKRU
    10: (None, 8, False),  # PASID (supervisor)
    11: (None, 16, False),  # CET user (supervisor-managed)
    12: (None, 24, False),  # CET supervisor
    13: (None, 8, False),  # HDC
    14: (None, 48, False),  # UINTR
    15: (None, 808, False),  # LBR
    16: (None, 8, False),  # HWP
    17: (2752, 64, False),  # AMX XTILECFG
    18: (2816, 8192, True),  # AMX XTILEDATA
}

#: Named CPU profiles: the xstate size one save or restore moves.
CPU_PROFILES: dict[str, int] = {"sse": 576, "avx2": 832, "avx512": 2688, "amx": 11008}


def xstate_bytes(xfeatures: int, xcomp_bv: int = 0) -> int:
    """Bytes of the XSAVE area holding the components set in ``xfeatures``.

    >>> xstate_bytes(0x3), xstate_bytes(0xE7), xstate_bytes(0xA3, COMPACTED | 0xE7)
    (576, 2688, 1664)
    """
    if xcomp_bv & COMPACTED:
        size = LEGACY_AND_HEADER
        for bit, (_, length, aligned) in sorted(COMPONENTS.items()):
            if xfeatures >> bit & 1:
                if aligned:
                    size = (size + 63) // 64 * 64
                size += length
        return size
    end = LEGACY_AND_HEADER
    for bit, (offset, length, _) in COMPONENTS.items():
        if offset is not None and xfeatures >> bit & 1:
            end = max(end, offset + length)
    return end
