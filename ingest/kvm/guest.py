"""The built-in guest: its code, its memory layout, and the VM / vCPU setup around it.

The guest is about a hundred bytes of x86-64 code of our own (``GUEST_ASM``
below, assembled with GNU as into ``GUEST_CODE``).  No guest kernel and no
firmware: the VMM writes page tables, a GDT, an IDT and a TSS per vCPU into
guest memory and starts every vCPU directly in 64-bit user mode (CPL3).

Why user mode: on this project's hosts the KVM module is ``kvm_pvm``
(pagetable-based virtualization, no VMX/SVM), which runs guest user code
natively but emulates guest kernel-mode code instruction by instruction.  So
the loops that burn time run at CPL3 and kernel mode is entered only to
halt: ``int3`` through a DPL3 gate (``syscall`` and ``int $0x80`` do not
reach guest CPL0 on kvm_pvm), arm the x2APIC one-shot timer with one
``WRMSR``, ``STI; HLT``.  Port I/O needs no kernel at all: the TSS I/O
permission bitmap lets CPL3 ``OUT`` to ports 0xf0-0xff, which exits to the
VMM as ``KVM_EXIT_IO``.  The VMM programs the local APIC itself
(``KVM_SET_LAPIC``) rather than having the guest do it at CPL0.

To stop, the VMM writes 1 to the ``STOP`` byte; every loop iteration checks
it and the guest answers with an ``OUT`` to ``PORT_DONE``, so each vCPU's
last ``KVM_RUN`` returns normally and the workload's counts stay exact.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ingest.kvm.vm import DTable, Kvm, Regs, Segment, Sregs, Vcpu, Vm

#: The guest's source (GNU as, AT&T syntax).  ``tests/test_record.py``
#: re-assembles it and checks that it still gives ``GUEST_CODE`` and ``SYMBOLS``.
GUEST_ASM = r"""
# fpureplay built-in guest (x86-64 long mode, identity mapped).
# Each vCPU starts in user mode (CPL3) at pio_loop or halt_loop, r15 = its
# parameter block.  User mode runs natively on every KVM backend; the few
# kernel-mode (CPL0) instructions are in k_halt and k_irq only, because
# kvm_pvm emulates guest CPL0 code instruction by instruction.
	.code64
	.set STOP, 0x8000		# byte: the VMM writes 1 to end the run
	.set PORT_TICK, 0xf0		# OUT from CPL3 (TSS I/O bitmap): KVM_EXIT_IO
	.set PORT_DONE, 0xf1		# the guest saw STOP: last KVM_RUN of this vCPU
	.set PORT_FAULT, 0xfe		# an unexpected exception
	.set P_SPIN, 0x00		# dec/jnz iterations per loop (>= 1)
	.set P_TIMER, 0x08		# LAPIC one-shot count (ns: KVM's APIC bus is 1 GHz)
	.set P_OUT_EVERY, 0x10		# halt_loop: KVM_EXIT_IO every N halts
	.set P_LOOPS, 0x18		# loop iterations, counted by the guest
	.set MSR_X2APIC_TMICT, 0x838
	.set MSR_X2APIC_EOI, 0x80b

pio_loop:				# spin, then exit to the VMM with port I/O
	cmpb $0, STOP
	jne done
	mov P_SPIN(%r15), %rcx
1:	dec %rcx
	jnz 1b
	incq P_LOOPS(%r15)
	out %al, $PORT_TICK
	jmp pio_loop

halt_loop:				# spin, halt until the LAPIC timer fires
	mov P_OUT_EVERY(%r15), %r14
2:	cmpb $0, STOP
	jne done
	mov P_SPIN(%r15), %rcx
3:	dec %rcx
	jnz 3b
	incq P_LOOPS(%r15)
	int3				# -> k_halt (DPL3 gate); returns after the halt
	dec %r14
	jnz 2b
	out %al, $PORT_TICK
	jmp halt_loop

done:
	out %al, $PORT_DONE
	jmp done

k_halt:					# CPL0, interrupts off (interrupt gate)
	mov $MSR_X2APIC_TMICT, %ecx	# arm the one-shot timer
	mov P_TIMER(%r15), %eax
	xor %edx, %edx
	wrmsr
	sti				# STI's shadow: the wakeup cannot slip in before HLT
	hlt				# KVM sleeps inside KVM_RUN until the timer interrupt
	cli
	iretq

k_irq:					# timer (and any other) interrupt: acknowledge it
	push %rax
	push %rcx
	push %rdx
	mov $MSR_X2APIC_EOI, %ecx
	xor %eax, %eax
	xor %edx, %edx
	wrmsr
	pop %rdx
	pop %rcx
	pop %rax
	iretq

k_fault:				# exceptions 0-31: report and stay
	out %al, $PORT_FAULT
	jmp k_fault
"""

#: ``as --64 GUEST_ASM && objcopy -O binary -j .text``
GUEST_CODE = bytes.fromhex(
    "803c2500800000007534498b0f48ffc975fb49ff4718e6f0ebe64d8b7710803c2500800000007516498b0f48ffc975fb"
    "49ff4718cc49ffce75e4e6f0ebdce6f1ebfcb938080000418b470831d20f30fbf4fa48cf505152b90b08000031c031d2"
    "0f305a595848cfe6feebfc"
)

#: Offsets of the labels in ``GUEST_CODE``.
SYMBOLS = {
    "pio_loop": 0x00,
    "halt_loop": 0x1A,
    "done": 0x3E,
    "k_halt": 0x42,
    "k_irq": 0x54,
    "k_fault": 0x67,
}

# -- guest-physical memory layout (identity mapped: virtual == physical) ------------
MEM_SIZE = 2 << 20  #: one 2 MiB page maps everything
PML4, PDPT, PD = 0x1000, 0x2000, 0x3000
IDT = 0x4000  #: 256 gates x 16 bytes
GDT = 0x5000  #: one GDT per vCPU, GDT_STRIDE apart (each holds that vCPU's TSS descriptor)
GDT_STRIDE = 0x40
TSS = 0x6000  #: one TSS per vCPU, TSS_STRIDE apart
TSS_STRIDE = 0x100
STOP = 0x8000  #: byte: 1 = stop (GUEST_ASM's STOP)
PARAMS = 0x9000  #: parameter block per vCPU, PARAMS_STRIDE apart (r15)
PARAMS_STRIDE = 0x40
CODE = 0x10000
KSTACKS = 0x100000  #: kernel stack of vCPU i: top at KSTACKS + 0x1000 * (i + 1)
USTACKS = 0x180000  #: user stack of vCPU i: top at USTACKS + 0x1000 * (i + 1)
MAX_VCPUS = 32

# parameter block fields (GUEST_ASM's P_*)
P_SPIN, P_TIMER, P_OUT_EVERY, P_LOOPS = 0x00, 0x08, 0x10, 0x18

PORT_TICK, PORT_DONE, PORT_FAULT = 0xF0, 0xF1, 0xFE
TIMER_VECTOR = 0x40

# GDT selectors: null, kernel code, kernel data, user data, user code, TSS (16 bytes)
KERNEL_CS, KERNEL_DS, USER_DS, USER_CS, TSS_SEL = 0x08, 0x10, 0x1B, 0x23, 0x28
_GDT_ENTRIES = (
    0,
    0x00AF9A000000FFFF,  # 0x08 kernel code, 64-bit, DPL0
    0x00CF92000000FFFF,  # 0x10 kernel data
    0x00CFF2000000FFFF,  # 0x18 user data, DPL3
    0x00AFFA000000FFFF,  # 0x20 user code, 64-bit, DPL3
)
_TSS_SIZE = 0x68
_IOPB_BYTES = 32  # ports 0-255; one more 0xff byte must follow the bitmap
TSS_LIMIT = _TSS_SIZE + _IOPB_BYTES  # last byte: the trailing 0xff

CR0_PE, CR0_ET, CR0_NE, CR0_PG = 1, 1 << 4, 1 << 5, 1 << 31
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
RFLAGS_RESERVED, RFLAGS_IF = 1 << 1, 1 << 9
_PTE_P, _PTE_RW, _PTE_US, _PDE_PS = 1, 2, 4, 0x80


@dataclass(frozen=True)
class GuestProgram:
    """What one vCPU's guest does: its loop and that loop's parameters."""

    loop: str  #: "pio_loop" or "halt_loop"
    spin: int  #: dec/jnz iterations per loop iteration
    timer_ns: int = 0  #: halt_loop: LAPIC one-shot period
    out_every: int = 0  #: halt_loop: a KVM_EXIT_IO every this many halts

    def __post_init__(self) -> None:
        if self.loop not in ("pio_loop", "halt_loop"):
            raise ValueError(f"unknown guest loop {self.loop!r}")
        if self.spin < 1:
            raise ValueError("spin must be >= 1 (0 would wrap to 2**64 iterations)")
        if self.loop == "halt_loop" and (self.timer_ns < 1 or self.out_every < 1):
            raise ValueError("halt_loop needs timer_ns >= 1 and out_every >= 1")


def _gate(offset: int, dpl: int) -> bytes:
    """A 64-bit interrupt gate (IF cleared on entry) to ``offset`` in the kernel code segment."""
    low = (
        (offset & 0xFFFF)
        | KERNEL_CS << 16
        | (0x8E00 | dpl << 13) << 32  # present, interrupt gate, DPL
        | (offset >> 16 & 0xFFFF) << 48
    )
    return struct.pack("<QQ", low, offset >> 32)


def create_vm(kvm: Kvm) -> Vm:
    """A VM with an in-kernel irqchip and the guest's page tables, IDT and code in memory."""
    vm = Vm(kvm, MEM_SIZE, irqchip=True)
    vm.write_u64(PML4, PDPT | _PTE_P | _PTE_RW | _PTE_US)
    vm.write_u64(PDPT, PD | _PTE_P | _PTE_RW | _PTE_US)
    vm.write_u64(PD, 0 | _PTE_P | _PTE_RW | _PTE_US | _PDE_PS)  # 2 MiB at 0, user-accessible
    for vector in range(256):
        if vector == 3:
            gate = _gate(CODE + SYMBOLS["k_halt"], dpl=3)  # int3 from user mode
        elif vector < 32:
            gate = _gate(CODE + SYMBOLS["k_fault"], dpl=0)
        else:
            gate = _gate(CODE + SYMBOLS["k_irq"], dpl=0)
        vm.write(IDT + 16 * vector, gate)
    vm.write(CODE, GUEST_CODE)
    return vm


def _tss_descriptor(base: int) -> tuple[int, int]:
    low = (
        (TSS_LIMIT & 0xFFFF)
        | (base & 0xFFFFFF) << 16
        | 0x89 << 40  # present, DPL0, available 64-bit TSS
        | (TSS_LIMIT >> 16 & 0xF) << 48
        | (base >> 24 & 0xFF) << 56
    )
    return low, base >> 32


def setup_vcpu(vm: Vm, vcpu: Vcpu, program: GuestProgram, cpuid: bytes) -> None:
    """Give ``vcpu`` its GDT, TSS, parameters, APIC and registers, ready to run ``program``."""
    i = vcpu.index
    if not 0 <= i < MAX_VCPUS:
        raise ValueError(f"vCPU index {i} outside 0..{MAX_VCPUS - 1}")
    vcpu.set_cpuid(cpuid)
    gdt, tss, params = GDT + GDT_STRIDE * i, TSS + TSS_STRIDE * i, PARAMS + PARAMS_STRIDE * i
    gdt_entries = (*_GDT_ENTRIES, *_tss_descriptor(tss))
    vm.write(gdt, struct.pack(f"<{len(gdt_entries)}Q", *gdt_entries))

    # TSS: RSP0 for traps from user mode, and an I/O bitmap that lets CPL3
    # use ports 0xf0-0xff (a clear bit allows the port).
    iopb = bytearray(b"\xff" * _IOPB_BYTES)
    iopb[0xF0 // 8] = iopb[0xF8 // 8] = 0
    vm.write(tss, bytes(_TSS_SIZE) + bytes(iopb) + b"\xff")
    vm.write_u64(tss + 4, KSTACKS + 0x1000 * (i + 1))
    vm.write(tss + 0x66, struct.pack("<H", _TSS_SIZE))  # I/O map base

    vm.write_u64(params + P_SPIN, program.spin)
    vm.write_u64(params + P_TIMER, program.timer_ns)
    vm.write_u64(params + P_OUT_EVERY, program.out_every)
    vm.write_u64(params + P_LOOPS, 0)

    vcpu.setup_x2apic(bsp=i == 0, timer_vector=TIMER_VECTOR)
    s: Sregs = vcpu.get_sregs()
    s.cs = Segment(
        base=0, limit=0xFFFFFFFF, selector=USER_CS, type=0xB, present=1, dpl=3, s=1, l=1, g=1
    )
    data = Segment(
        base=0, limit=0xFFFFFFFF, selector=USER_DS, type=0x3, present=1, dpl=3, db=1, s=1, g=1
    )
    s.ds = s.es = s.fs = s.gs = s.ss = data
    s.tr = Segment(base=tss, limit=TSS_LIMIT, selector=TSS_SEL, type=0xB, present=1, s=0)
    s.ldt = Segment(unusable=1)
    s.gdt = DTable(base=gdt, limit=8 * len(gdt_entries) - 1)
    s.idt = DTable(base=IDT, limit=16 * 256 - 1)
    s.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG
    s.cr3 = PML4
    s.cr4 = CR4_PAE
    s.efer = EFER_LME | EFER_LMA
    vcpu.set_sregs(s)

    r = Regs()
    r.r15 = params
    r.rip = CODE + SYMBOLS[program.loop]
    r.rsp = USTACKS + 0x1000 * (i + 1)
    r.rflags = RFLAGS_RESERVED | RFLAGS_IF
    vcpu.set_regs(r)
    if i != 0:
        vcpu.set_runnable()  # with an in-kernel LAPIC, APs would wait for INIT/SIPI


def guest_loops(vm: Vm, index: int) -> int:
    """How many loop iterations vCPU ``index``'s guest has counted."""
    return vm.read_u64(PARAMS + PARAMS_STRIDE * index + P_LOOPS)


def request_stop(vm: Vm) -> None:
    """Ask every vCPU's guest to finish (it exits through ``PORT_DONE``)."""
    vm.memory[STOP] = 1
