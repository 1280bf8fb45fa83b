"""The trace lines a kernel running the recording policy prints, in file order.

The schedule's records become lines as they are.  The FPU lines come from the
recording policy's own operations (pipeline.model.truth, every task logged),
placed where that kernel's code prints them (reference §1.6, §2, §5.4, and the
6.18 captures under shared/fixtures/real):

* ``kvm_fpu: load``: vcpu_run/deferred at the KVM_RUN entry swap, right after
  ``sys_enter_ioctl``; legacy at each guest entry that finds the guest not
  loaded, right before ``kvm_entry``;
* ``kvm_fpu: unload``: vcpu_run/deferred right before ``kvm_userspace_exit``;
  legacy right after it at the end of the ioctl, and right after the vCPU's
  own ``sched_switch`` for the preempt notifier's put;
* ``x86_fpu_regs_deactivated``: after the ``sched_switch`` whose outgoing task
  saved, with that task's pid (switch_fpu() runs before ``current`` changes);
* ``x86_fpu_regs_activated``: up to 5.1 after every switch-in of an FPU task,
  with the *previous* task's pid; from 5.2 at each real restore: a deferred
  restore of a task returning to userspace (``d....``), of a vCPU before its
  guest entry (``d..1.``), and the KVM swap's ``fpregs_mark_activate()`` right
  before each ``kvm_fpu`` (``b....``).

Lines sort by (time, anchoring record, position around it), so the lines a
record carries stay next to it on its CPU: the timeline relies on a legacy
notifier unload directly following its ``sched_switch``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from pipeline.model.eras import Era
from pipeline.model.schedule import (
    L_ACT,
    L_DEACT,
    L_FPU,
    R_ANCHOR,
    R_ENTRY,
    R_EXIT,
    R_RUN_IN,
    R_RUN_OUT,
    R_SWITCH,
    R_UEXIT,
    R_WAKE,
    Schedule,
    inner_exits,
)
from pipeline.model.truth import Ops
from pipeline.policies import sites as S

# Flag-column styles (tracefs irq-flags; 4-column eras drop the last character).
F_SWITCH, F_WAKE, F_PLAIN, F_GUEST, F_SWAP, F_USER, F_PREEMPT1 = range(7)
FLAGS5 = ("d..2.", "d..3.", ".....", "d..1.", "b....", "d....", "...1.")

#: Style of each record kind as it is.
_RECORD_STYLE = {
    R_SWITCH: F_SWITCH, R_WAKE: F_WAKE, R_RUN_IN: F_PLAIN, R_ENTRY: F_GUEST,
    R_EXIT: F_GUEST, R_UEXIT: F_PLAIN, R_RUN_OUT: F_PLAIN,
}  # fmt: skip


@dataclass
class LineTable:
    """Trace lines in file order, as parallel columns.

    ``task`` is the task whose pid the line is printed with; per kind ``a``,
    ``b``, ``c`` hold: sched_switch prev, next, prev_state code; sched_wakeup
    woken task, target CPU; kvm_exit reason; kvm_userspace_exit code;
    sys_enter_ioctl fd and command (schedule.CMD_*); sys_exit_ioctl return;
    kvm_fpu 1 load / 0 unload;
    x86_fpu_* the task whose state it is, the flag printed (TIF or
    initialized), the context (0 user, 1 guest).
    """

    ts: np.ndarray
    cpu: np.ndarray
    task: np.ndarray
    kind: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    style: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)


def _fpu_lines(ops: Ops, legacy: bool, era: Era) -> dict[str, np.ndarray]:
    """kvm_fpu and x86_fpu lines from the recording policy's every-task operations."""
    site, code, task, anchor = ops.site, ops.code, ops.task, ops.line
    restore = (code & 1) == 1
    parts: list[tuple[np.ndarray, ...]] = []  # (mask, kind, a, b, c, sub, style, logger)

    def add(mask, kind, a, b, c, sub, style, logger=None) -> None:
        n = int(mask.sum())
        if n == 0:
            return
        full = np.full(n, 0, dtype=np.int64)
        parts.append((
            anchor[mask], full + kind, _pick(a, mask, n), _pick(b, mask, n), _pick(c, mask, n),
            _pick(sub, mask, n), _pick(style, mask, n),
            task[mask] if logger is None else _pick(logger, mask, n),
        ))  # fmt: skip

    # kvm_fpu: load (the guest restore of a KVM load) and unload (the user restore of a put)
    swap_load = restore & (code == 3) & (site == S.KVM_LOAD)
    entry_load = restore & (code == 3) & ((site == S.ENTRY_LOAD) | (site == S.FIRST_ENTRY_LOAD))
    notifier = restore & (code == 1) & (site == S.NOTIFIER_PUT)
    put = restore & (code == 1) & (site == S.KVM_PUT)
    plain = F_PREEMPT1 if legacy else F_PLAIN
    add(swap_load, L_FPU, 1, 0, 0, 2, F_PLAIN)
    add(entry_load, L_FPU, 1, 0, 0, -1, F_PREEMPT1)
    add(notifier, L_FPU, 0, 0, 0, 1, F_SWITCH)
    add(put, L_FPU, 0, 0, 0, 1 if legacy else -1, plain)
    # x86_fpu_regs_deactivated: the context-switch save, with the outgoing pid
    cs_save = ~restore & (site == S.CS_OUT)
    tif = era.fpu_switch_tif if era.fpu_new_format else 1
    add(cs_save, L_DEACT, task, tif, code >> 1, 2, F_SWITCH)
    if era.fpu_new_format:
        # >= 5.2: activated at each real restore (fpregs_restore_userregs / mark_activate)
        add(restore & (site == S.DEFER_USER), L_ACT, task, 1, code >> 1, 3, F_USER)
        add(restore & (site == S.DEFER_GUEST), L_ACT, task, 1, code >> 1, -1, F_GUEST)
        add(swap_load, L_ACT, task, 0, 1, 1, F_SWAP)
        add(put, L_ACT, task, 0, 0, -2, F_SWAP)
    if not parts:
        z = np.zeros(0, dtype=np.int64)
        return {k: z for k in ("anchor", "kind", "a", "b", "c", "sub", "style", "task")}
    cols = [np.concatenate(col) for col in zip(*parts, strict=True)]
    return dict(zip(("anchor", "kind", "a", "b", "c", "sub", "style", "task"), cols, strict=True))


def _pick(x, mask: np.ndarray, n: int) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x[mask].astype(np.int64)
    return np.full(n, x, dtype=np.int64)


def _old_activated(sched: Schedule) -> dict[str, np.ndarray]:
    """<= 5.1: activated after every switch-in of an FPU task, printed with the prev pid."""
    fpu_kind = np.array([t.kind >= 2 for t in sched.tasks])
    sw = np.flatnonzero(sched.kind == R_SWITCH)
    sw = sw[fpu_kind[sched.b[sw]]]
    n = len(sw)
    return {
        "anchor": sw, "kind": np.full(n, L_ACT, dtype=np.int64), "a": sched.b[sw],
        "b": np.ones(n, dtype=np.int64), "c": np.zeros(n, dtype=np.int64),
        "sub": np.full(n, 3, dtype=np.int64), "style": np.full(n, F_SWITCH, dtype=np.int64),
        "task": sched.task[sw],
    }  # fmt: skip


def build(
    sched: Schedule,
    ops: Ops,
    policy: str,
    era: Era,
    *,
    entry_events: bool = True,
    fpu_events: bool = True,
    ioctl_events: bool = True,
    wakeup_events: bool = True,
    exit_hz: float = 0.0,
    exit_us: float = 1.5,
) -> LineTable:
    """All lines of the trace ``policy`` logs on ``sched`` in ``era``, in file order."""
    n = sched.n_records
    keep_kind = np.ones(R_ANCHOR + 1, dtype=bool)
    keep_kind[R_ANCHOR] = False  # anchors FPU lines; no line of its own
    keep_kind[[R_ENTRY, R_EXIT]] = entry_events
    keep_kind[[R_RUN_IN, R_RUN_OUT]] = ioctl_events
    keep_kind[R_WAKE] = wakeup_events
    keep_kind[[L_ACT, L_DEACT]] = fpu_events

    style_of = np.zeros(R_ANCHOR + 1, dtype=np.int64)
    for k, s in _RECORD_STYLE.items():
        style_of[k] = s
    # Each group's columns; a plain int is a value the whole group shares (no array
    # is made for it: these columns are hundreds of thousands of lines long).
    groups: list[dict[str, np.ndarray | int]] = [
        {
            "ts": sched.ts, "cpu": sched.cpu, "task": sched.task, "kind": sched.kind,
            "a": sched.a, "b": sched.b, "c": sched.c, "seq": np.arange(n, dtype=np.int64),
            "sub": 0, "style": style_of[sched.kind],
        }
    ]  # fmt: skip
    extra = [_fpu_lines(ops, policy == "legacy", era)]
    if fpu_events and not era.fpu_new_format:
        extra.append(_old_activated(sched))
    for e in extra:
        anchor = e["anchor"]
        groups.append({
            "ts": sched.ts[anchor], "cpu": sched.cpu[anchor], "task": e["task"],
            "kind": e["kind"], "a": e["a"], "b": e["b"], "c": e["c"], "seq": anchor,
            "sub": e["sub"], "style": e["style"],
        })  # fmt: skip
    if entry_events and exit_hz > 0:
        from pipeline.model.distributions import generators

        inner = inner_exits(sched, exit_hz, exit_us, generators(sched.seed)[1])
        groups.append({**inner, "b": 0, "c": 0, "seq": n, "sub": 0, "style": F_GUEST})
    groups = [_keep(g, keep_kind) for g in groups]
    return _in_file_order(groups)


def _keep(group: dict[str, np.ndarray | int], keep_kind: np.ndarray) -> dict[str, np.ndarray | int]:
    """``group`` without the lines of kinds the trace does not log."""
    mask = keep_kind[group["kind"]]
    if mask.all():
        return group
    return {k: v[mask] if isinstance(v, np.ndarray) else v for k, v in group.items()}


_FIELDS = ("ts", "cpu", "task", "kind", "a", "b", "c", "style")
_SUB_BITS = 3  # sub runs from -2 to +3


def _in_file_order(groups: list[dict[str, np.ndarray | int]]) -> LineTable:
    """The groups' lines as one LineTable sorted by (ts, seq, sub), ties in group order.

    Each output column is assembled in one reused buffer and gathered from it: no
    concatenated copy of every column is alive at once, which saves allocating (and
    faulting in) tens of megabytes for half a million lines.
    """
    bounds = [0, *itertools.accumulate(len(g["ts"]) for g in groups)]
    spans = list(itertools.pairwise(bounds))
    buf = np.empty(bounds[-1], dtype=np.int64)

    def fill(field: str) -> np.ndarray:
        for g, (lo, hi) in zip(groups, spans, strict=True):
            buf[lo:hi] = g[field]  # an int fills its span
        return buf

    order = _file_order(groups, spans, buf)
    return LineTable(**{k: np.take(fill(k), order) for k in _FIELDS})


def _file_order(
    groups: list[dict[str, np.ndarray | int]], spans: list[tuple[int, int]], buf: np.ndarray
) -> np.ndarray:
    """The permutation sorting by (ts, seq, sub): one packed int64 key (built in ``buf``)
    when it fits, a lexsort otherwise; stable, so ties keep the groups' order."""
    if len(buf) == 0:
        return np.zeros(0, dtype=np.int64)
    present = [g for g, (lo, hi) in zip(groups, spans, strict=True) if hi > lo]
    seq_bits = max(int(np.max(g["seq"])) for g in present).bit_length()
    ts_bits = max(int(np.max(g["ts"])) for g in present).bit_length()
    if ts_bits + seq_bits + _SUB_BITS > 62:
        ts, seq, sub = (
            np.concatenate(
                [np.broadcast_to(g[k], hi - lo) for g, (lo, hi) in zip(groups, spans, strict=True)]
            )
            for k in ("ts", "seq", "sub")
        )
        return np.lexsort((sub + 2, seq, ts))
    for g, (lo, hi) in zip(groups, spans, strict=True):
        key = buf[lo:hi]
        np.left_shift(g["ts"], seq_bits + _SUB_BITS, out=key)
        key |= np.left_shift(g["seq"], _SUB_BITS)
        key |= np.add(g["sub"], 2)
    return np.argsort(buf, kind="stable")
