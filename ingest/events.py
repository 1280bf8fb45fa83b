"""The events fpureplay decodes, declared as data.

Each :class:`EventSpec` names the events it covers, and lists one or more
*forms*: a regular expression over the event's ``args`` whose named groups
are columns of the `events` table, and the type each group converts to.  The
first form that matches wins, so a kernel format and a libtraceevent plugin
format of the same event sit side by side.  Adding an event is adding an
entry here; the decoder in :func:`decode_args` needs no change.

Any event not listed is kept with its raw ``args`` and null decoded fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ingest.schema import EVENT_COLUMNS
from ingest.xstate import xstate_bytes

#: ioctl command numbers (x86-64) named in `ioctl_cmd`; others print as hex.
IOCTL_NAMES: dict[int, str] = {
    0xAE80: "KVM_RUN",
    0x9000AEA4: "KVM_GET_XSAVE",
    0x5000AEA5: "KVM_SET_XSAVE",
    0x9000AECF: "KVM_GET_XSAVE2",
    0x8004AE98: "KVM_GET_MP_STATE",
    0x4004AE99: "KVM_SET_MP_STATE",
    0x81A0AE8C: "KVM_GET_FPU",
    0x41A0AE8D: "KVM_SET_FPU",
    0x4020AEA5: "KVM_SIGNAL_MSI",
    0xAE41: "KVM_CREATE_VCPU",
    0x4008AE90: "KVM_SET_CPUID2",
    0x4008AE89: "KVM_SET_MSRS",
    0x8138AE83: "KVM_GET_SREGS",
    0x4138AE84: "KVM_SET_SREGS",
    0x8090AE81: "KVM_GET_REGS",
    0x4090AE82: "KVM_SET_REGS",
}

#: libtraceevent's sched_switch plugin builds STATE from the table "SDTtZXxW",
#: which predates the 4.14 renumbering: map its letters to the kernel's.
PLUGIN_STATE_LETTERS = {"W": "I", "X": "Z", "Z": "X", "x": "P"}

# Field converters: how a captured group becomes a typed column.
INT = "int"  # decimal (signed)
HEX = "hex"  # hexadecimal, with or without 0x, unsigned 64-bit
AUTO_INT = "auto_int"  # 0x-prefixed hex, else decimal
SIGNED_HEX = "signed_hex"  # 64-bit two's complement as printed by syscall exits
BOOL01 = "bool01"
STR = "str"
LOAD_SYMBOL = "load_symbol"  # kvm_fpu: load -> True, unload -> False
PLUGIN_STATE = "plugin_state"  # plugin STATE letters -> kernel letters
IOCTL_CMD = "ioctl_cmd"  # hex number -> KVM_* name or '0x...'


@dataclass(frozen=True)
class Form:
    """One printed layout of an event's arguments."""

    pattern: str
    types: dict[str, str]


@dataclass(frozen=True)
class EventSpec:
    """The events sharing a set of forms."""

    names: tuple[str, ...]
    forms: tuple[Form, ...]
    derived: tuple[str, ...] = field(default=())  # columns computed after decoding


_SWITCH_INTS = {"prev_pid": INT, "prev_prio": INT, "next_pid": INT, "next_prio": INT}
_WAKE_INTS = {"wake_pid": INT, "wake_prio": INT, "target_cpu": INT}

X86_FPU_EVENTS = tuple(
    f"x86_fpu_{n}"
    for n in (
        "regs_activated",
        "regs_deactivated",
        "before_save",
        "after_save",
        "before_restore",
        "after_restore",
        "init_state",
        "dropped",
        "copy_src",
        "copy_dst",
        "xstate_check_failed",
    )
)

SPECS: tuple[EventSpec, ...] = (
    EventSpec(("kvm_fpu",), (Form(r"^(?P<fpu_load>load|unload)\s*$", {"fpu_load": LOAD_SYMBOL}),)),
    EventSpec(
        ("sched_switch",),
        (
            Form(
                r"^prev_comm=(?P<prev_comm>.*?) prev_pid=(?P<prev_pid>-?\d+)"
                r" prev_prio=(?P<prev_prio>-?\d+) prev_state=(?P<prev_state>\S+)"
                r" ==> next_comm=(?P<next_comm>.*?) next_pid=(?P<next_pid>-?\d+)"
                r" next_prio=(?P<next_prio>-?\d+)\s*$",
                {"prev_comm": STR, "prev_state": STR, "next_comm": STR, **_SWITCH_INTS},
            ),
            # libtraceevent plugin: "prev:pid [prio] STATE ==> next:pid [prio]"
            Form(
                r"^(?P<prev_comm>.*?):(?P<prev_pid>-?\d+) \[(?P<prev_prio>-?\d+)\]"
                r" (?P<prev_state>\S+) ==> (?P<next_comm>.*?):(?P<next_pid>-?\d+)"
                r" \[(?P<next_prio>-?\d+)\]\s*$",
                {"prev_comm": STR, "prev_state": PLUGIN_STATE, "next_comm": STR, **_SWITCH_INTS},
            ),
        ),
    ),
    EventSpec(
        ("sched_wakeup", "sched_waking", "sched_wakeup_new"),
        (
            Form(
                r"^comm=(?P<wake_comm>.*?) pid=(?P<wake_pid>-?\d+) prio=(?P<wake_prio>-?\d+)"
                r"(?: success=\d+)? target_cpu=(?P<target_cpu>\d+)\s*$",
                {"wake_comm": STR, **_WAKE_INTS},
            ),
            Form(
                r"^(?P<wake_comm>.*?):(?P<wake_pid>-?\d+) \[(?P<wake_prio>-?\d+)\]"
                r"(?: success=\d+)? CPU:(?P<target_cpu>\d+)\s*$",
                {"wake_comm": STR, **_WAKE_INTS},
            ),
        ),
    ),
    EventSpec(
        ("kvm_entry",),
        (
            Form(
                r"^vcpu (?P<vcpu_id>\d+)(?:,? rip 0x(?P<guest_rip>[0-9a-fA-F]+))?",
                {"vcpu_id": INT, "guest_rip": HEX},
            ),
        ),
    ),
    EventSpec(
        ("kvm_exit",),
        (
            Form(
                r"^(?:vcpu (?P<vcpu_id>\d+) )?reason (?P<exit_reason>\S+)"
                r"(?:.*? rip 0x(?P<guest_rip>[0-9a-fA-F]+))?",
                {"exit_reason": STR, "vcpu_id": INT, "guest_rip": HEX},
            ),
        ),
    ),
    EventSpec(
        ("kvm_userspace_exit",),
        (
            Form(
                r"^reason (?P<exit_reason>\S+) \((?P<exit_code>-?\d+)\)\s*$",
                {"exit_reason": STR, "exit_code": INT},
            ),
        ),
    ),
    EventSpec(
        X86_FPU_EVENTS,
        (
            Form(
                r"^x86/fpu: (?:0x)?[0-9a-fA-F]+ (?:load: (?P<fpu_tif>[01])|initialized:"
                r" (?P<fpu_initialized>[01])) xfeatures: (?P<xfeatures>[0-9a-fA-F]+)"
                r" xcomp_bv: (?P<xcomp_bv>[0-9a-fA-F]+)\s*$",
                {"xfeatures": HEX, "xcomp_bv": HEX, "fpu_tif": BOOL01, "fpu_initialized": BOOL01},
            ),
        ),
        derived=("xstate_bytes",),
    ),
    EventSpec(
        ("sys_enter_ioctl",),
        (
            Form(
                r"^fd: (?P<ioctl_fd>(?:0x)?[0-9a-fA-F]+), cmd: (?P<ioctl_cmd>(?:0x)?[0-9a-fA-F]+),"
                r" arg: (?:0x)?[0-9a-fA-F]+\s*$",
                {"ioctl_fd": AUTO_INT, "ioctl_cmd": IOCTL_CMD},
            ),
        ),
    ),
    EventSpec(
        ("sys_exit_ioctl",),
        (Form(r"^(?P<ioctl_ret>0x[0-9a-fA-F]+|-?\d+)\s*$", {"ioctl_ret": SIGNED_HEX}),),
    ),
)

#: Every event name with a decoder.
DECODED_EVENTS: frozenset[str] = frozenset(n for s in SPECS for n in s.names)


def _convert(expr: pl.Expr, kind: str, column: str) -> pl.Expr:
    dtype = EVENT_COLUMNS[column]
    if kind == STR:
        return expr
    if kind == INT:
        return expr.cast(dtype, strict=False)
    if kind == HEX:
        return expr.str.strip_prefix("0x").str.to_integer(base=16, dtype=pl.UInt64, strict=False)
    if kind == AUTO_INT:
        as_hex = expr.str.strip_prefix("0x").str.to_integer(base=16, dtype=pl.Int64, strict=False)
        as_dec = expr.cast(pl.Int64, strict=False)
        return pl.when(expr.str.starts_with("0x")).then(as_hex).otherwise(as_dec).cast(dtype)
    if kind == SIGNED_HEX:
        unsigned = expr.str.strip_prefix("0x").str.to_integer(
            base=16, dtype=pl.UInt64, strict=False
        )
        return (
            pl.when(expr.str.starts_with("0x"))
            .then(unsigned.reinterpret(signed=True))
            .otherwise(expr.cast(pl.Int64, strict=False))
        )
    if kind == BOOL01:
        return expr == "1"
    if kind == LOAD_SYMBOL:
        return expr == "load"
    if kind == PLUGIN_STATE:
        return expr.str.replace_many(PLUGIN_STATE_LETTERS)
    if kind == IOCTL_CMD:
        number = expr.str.strip_prefix("0x").str.to_integer(base=16, dtype=pl.Int64, strict=False)
        digits = expr.str.strip_prefix("0x").str.to_lowercase().str.strip_chars_start("0")
        hex_text = pl.when(number.is_not_null()).then(
            pl.lit("0x") + pl.when(digits == "").then(pl.lit("0")).otherwise(digits)
        )
        named = number.replace_strict(IOCTL_NAMES, default=None, return_dtype=pl.String)
        return pl.coalesce(named, hex_text)
    raise ValueError(f"unknown converter {kind!r} for {column}")


def decode_args(df: pl.DataFrame) -> pl.DataFrame:
    """Decode ``args`` of every declared event into typed columns.

    Takes a frame with ``event`` and ``args``; returns it with every column
    of :data:`ingest.schema.EVENT_COLUMNS` that a spec fills, plus a boolean
    ``decoded`` that is false for a declared event whose args match none of
    its forms (the caller turns those lines into rejects).
    """
    exprs: dict[str, pl.Expr] = {}
    matched: list[pl.Expr] = []
    for spec in SPECS:
        is_spec = pl.col("event").is_in(list(spec.names))
        spec_matched: pl.Expr = pl.lit(False)
        for form in spec.forms:
            # Regexes run only on rows of this event not matched by an earlier
            # form: the others are null, which the regex engine skips.
            take = is_spec & ~spec_matched
            groups = pl.when(take).then(pl.col("args")).str.extract_groups(form.pattern)
            # The first group of every form is one the pattern always captures.
            hit = groups.struct.field(next(iter(form.types))).is_not_null()
            for column, kind in form.types.items():
                value = _convert(groups.struct.field(column), kind, column)
                exprs[column] = (
                    pl.coalesce(exprs[column], value) if column in exprs else value
                )
            spec_matched = spec_matched | hit
        matched.append(pl.when(is_spec).then(spec_matched))
    decoded = pl.coalesce(*matched, pl.lit(True)).alias("decoded")
    out = df.with_columns(
        [e.cast(EVENT_COLUMNS[c]).alias(c) for c, e in exprs.items()] + [decoded]
    )
    return _with_xstate_bytes(out)


def _with_xstate_bytes(df: pl.DataFrame) -> pl.DataFrame:
    pairs = df.select("xfeatures", "xcomp_bv").drop_nulls().unique()
    keys = zip(pairs["xfeatures"], pairs["xcomp_bv"], strict=True)
    sizes = {(x, c): xstate_bytes(x, c) for x, c in keys}
    if not sizes:
        return df.with_columns(pl.lit(None, dtype=pl.Int32).alias("xstate_bytes"))
    table = pl.DataFrame(
        {
            "xfeatures": [k[0] for k in sizes],
            "xcomp_bv": [k[1] for k in sizes],
            "xstate_bytes": list(sizes.values()),
        },
        schema={"xfeatures": pl.UInt64, "xcomp_bv": pl.UInt64, "xstate_bytes": pl.Int32},
    )
    return df.join(table, on=["xfeatures", "xcomp_bv"], how="left", maintain_order="left")
