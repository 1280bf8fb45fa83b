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

import functools
from dataclasses import dataclass, field

import polars as pl

from ingest.schema import EVENT_COLUMNS
from ingest.xstate import COMPACTED, xstate_bytes

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
                r"^prev_comm=(?P<prev_comm>.*?) prev_pid=(?P<prev_pid>-?[0-9]+)"
                r" prev_prio=(?P<prev_prio>-?[0-9]+) prev_state=(?P<prev_state>\S+)"
                r" ==> next_comm=(?P<next_comm>.*?) next_pid=(?P<next_pid>-?[0-9]+)"
                r" next_prio=(?P<next_prio>-?[0-9]+)\s*$",
                {"prev_comm": STR, "prev_state": STR, "next_comm": STR, **_SWITCH_INTS},
            ),
            # libtraceevent plugin: "prev:pid [prio] STATE ==> next:pid [prio]"
            Form(
                r"^(?P<prev_comm>.*?):(?P<prev_pid>-?[0-9]+) \[(?P<prev_prio>-?[0-9]+)\]"
                r" (?P<prev_state>\S+) ==> (?P<next_comm>.*?):(?P<next_pid>-?[0-9]+)"
                r" \[(?P<next_prio>-?[0-9]+)\]\s*$",
                {"prev_comm": STR, "prev_state": PLUGIN_STATE, "next_comm": STR, **_SWITCH_INTS},
            ),
        ),
    ),
    EventSpec(
        ("sched_wakeup", "sched_waking", "sched_wakeup_new"),
        (
            Form(
                r"^comm=(?P<wake_comm>.*?) pid=(?P<wake_pid>-?[0-9]+) prio=(?P<wake_prio>-?[0-9]+)"
                r"(?: success=[0-9]+)? target_cpu=(?P<target_cpu>[0-9]+)\s*$",
                {"wake_comm": STR, **_WAKE_INTS},
            ),
            Form(
                r"^(?P<wake_comm>.*?):(?P<wake_pid>-?[0-9]+) \[(?P<wake_prio>-?[0-9]+)\]"
                r"(?: success=[0-9]+)? CPU:(?P<target_cpu>[0-9]+)\s*$",
                {"wake_comm": STR, **_WAKE_INTS},
            ),
        ),
    ),
    EventSpec(
        ("kvm_entry",),
        (
            Form(
                r"^vcpu (?P<vcpu_id>[0-9]+)(?:,? rip 0x(?P<guest_rip>[0-9a-fA-F]+))?",
                {"vcpu_id": INT, "guest_rip": HEX},
            ),
        ),
    ),
    EventSpec(
        ("kvm_exit",),
        (
            Form(
                r"^(?:vcpu (?P<vcpu_id>[0-9]+) )?reason (?P<exit_reason>\S+)"
                r"(?:.*? rip 0x(?P<guest_rip>[0-9a-fA-F]+))?",
                {"exit_reason": STR, "vcpu_id": INT, "guest_rip": HEX},
            ),
        ),
    ),
    EventSpec(
        ("kvm_userspace_exit",),
        (
            Form(
                r"^reason (?P<exit_reason>\S+) \((?P<exit_code>-?[0-9]+)\)\s*$",
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
        (Form(r"^(?P<ioctl_ret>0x[0-9a-fA-F]+|-?[0-9]+)\s*$", {"ioctl_ret": SIGNED_HEX}),),
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


@dataclass(frozen=True)
class _Plan:
    """The expressions of :func:`decode_args`, built once (they do not depend on the data)."""

    stages: tuple[tuple[pl.Expr, ...], ...]  # regex passes; stage k holds every spec's form k
    columns: tuple[pl.Expr, ...]  # typed columns and ``decoded``, from the passes' structs
    scratch: tuple[str, ...]  # the passes' struct columns, dropped at the end


@functools.cache
def _plan() -> _Plan:
    event, args = pl.col("event"), pl.col("args")
    is_spec = [event.is_in(list(spec.names)) for spec in SPECS]
    stages: list[tuple[pl.Expr, ...]] = []
    scratch: list[str] = []
    for k in range(max(len(spec.forms) for spec in SPECS)):
        stage = []
        for i, spec in enumerate(SPECS):
            if k >= len(spec.forms):
                continue
            take = is_spec[i]
            for j in range(k):  # rows an earlier form of this spec left undecoded
                take = take & _hit(spec.forms[j], f"_m{i}_{j}").not_()
            stage.append(
                pl.when(take).then(args).str.extract_groups(spec.forms[k].pattern)
                .alias(f"_m{i}_{k}")
            )
            scratch.append(f"_m{i}_{k}")
        stages.append(tuple(stage))
    exprs: dict[str, list[pl.Expr]] = {}
    matched: list[pl.Expr] = []
    for i, spec in enumerate(SPECS):
        hits = []
        for k, form in enumerate(spec.forms):
            groups = pl.col(f"_m{i}_{k}").struct
            hits.append(_hit(form, f"_m{i}_{k}"))
            for column, kind in form.types.items():
                exprs.setdefault(column, []).append(_convert(groups.field(column), kind, column))
        matched.append(pl.when(is_spec[i]).then(pl.any_horizontal(hits)))
    columns = [
        (pl.coalesce(es) if len(es) > 1 else es[0]).cast(EVENT_COLUMNS[c]).alias(c)
        for c, es in exprs.items()
    ]
    columns.append(pl.coalesce(*matched, pl.lit(True)).alias("decoded"))
    return _Plan(tuple(stages), tuple(columns), tuple(scratch))


def decode_args(df: pl.DataFrame) -> pl.DataFrame:
    """Decode ``args`` of every declared event into typed columns.

    Takes a frame with ``event`` and ``args``; returns it with every column
    of :data:`ingest.schema.EVENT_COLUMNS` that a spec fills, plus a boolean
    ``decoded`` that is false for a declared event whose args match none of
    its forms (the caller turns those lines into rejects).

    Each form's regex runs once, on the rows of its events that no earlier
    form matched (the others are null, which the regex engine skips); its
    groups are materialized as a struct column before any field is taken
    from it, since eager polars does not share common subexpressions.  The
    parser calls this on the distinct event tails of a block, so its cost
    is mostly the fixed cost of a few polars calls.
    """
    plan = _plan()
    for stage in plan.stages:
        df = df.with_columns(stage)
    df = df.with_columns(plan.columns).drop(plan.scratch)
    return df.with_columns(_xstate_bytes(df))


def _hit(form: Form, column: str) -> pl.Expr:
    # The first group of every form is one the pattern always captures.
    return pl.col(column).struct.field(next(iter(form.types))).is_not_null()


def _xstate_bytes(df: pl.DataFrame) -> pl.Series:
    """``xstate_bytes`` for each row, from ``xfeatures`` and ``xcomp_bv``.

    The size depends on the component bits of ``xfeatures`` and on the
    compacted-format bit of ``xcomp_bv`` only, so one Python call per
    distinct (mask, format) pair of the block serves every row.
    """
    compacted = (pl.col("xcomp_bv") >= COMPACTED).cast(pl.UInt64)
    key = (pl.col("xfeatures") * 2 + compacted).alias("xstate_bytes")
    keys = df.select(key).to_series()
    sizes = {k: xstate_bytes(k >> 1, (k & 1) << 63) for k in keys.drop_nulls().unique()}
    return keys.replace_strict(sizes, default=None, return_dtype=pl.Int32)
