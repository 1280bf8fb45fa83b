"""From the first pass's records to the `runs` table and the replay steps.

The first pass (pipeline.timeline) lists, in trace order, every context
switch (logged or inferred), every kvm-related event of a task and every
lost-events marker.  Here the kvm events of each vCPU thread are classified
into KVM_RUN boundaries (pipeline.kvmrun), and one more walk over the records
emits the steps the policies replay, while counting each run's preemptions,
blocks, migrations and inferred switch-ins.

Guest entries: with ``kvm_entry`` in the trace those are the entries;
without, an entry is synthesised at the start of each KVM_RUN, after each
sched-in inside it and after an INIT reset, since a vCPU thread on a CPU
inside KVM_RUN is there to run its guest (fpu-model.md, Redundancy).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pipeline import kvmrun
from pipeline.codes import (
    E_FPU,
    E_IOCTL_IN,
    E_UEXIT,
    R_LOST,
    R_SWITCH,
    S_BLOCK,
    S_EXIT,
    S_PREEMPT,
    ST_CLOSE,
    ST_EMUL,
    ST_ENTRY,
    ST_INIT,
    ST_MP,
    ST_OPEN,
    ST_RUN_END,
    ST_RUN_START,
    ST_SWITCH,
    STATE_NAMES,
)
from pipeline.tasks import Kind

_NO_EXIT = (None, None)

#: Slice id of a switch-in inside KVM_RUN (the task cannot return to userspace then).
IN_IOCTL = -2


class StepBuilder:
    """Classifies KVM_RUN boundaries and emits steps, runs and switches."""

    def __init__(
        self,
        *,
        df: pl.DataFrame,
        records: list[Any],
        task_kvm: list[list[int]],
        task_pid: list[int],
        task_comm: list[str | None],
        task_kind: list[Kind],
        legacy: bool,
        has_entry: bool,
        first_ts: int | None,
        last_ts: int | None,
        initial_cpu: dict[int, int],
    ) -> None:
        self.df = df
        self.records = records
        self.task_kvm = task_kvm
        self.task_pid = task_pid
        self.task_comm = task_comm
        self.task_kind = task_kind
        self.legacy = legacy
        self.has_entry = has_entry
        self.first_ts = first_ts if first_ts is not None else 0
        self.last_ts = last_ts if last_ts is not None else 0
        self.initial_cpu = initial_cpu
        self.steps: list[tuple[int, ...]] = []
        self.run_at_start: dict[int, int] = {}
        self.runs: list[kvmrun.Run] = []
        #: runs (indices into ``runs``) cut by their thread's exit
        self.cut_by_exit: list[int] = []

    # -- KVM_RUN boundaries ----------------------------------------------------
    def _classify(self) -> list[int]:
        df = self.df
        code = df["code"].to_list()
        flag = df["flag"].to_list()
        ts = self.ts
        uexit = df.select(
            row=pl.int_range(pl.len(), dtype=pl.Int64), reason="exit_reason", exit="exit_code"
        ).filter(pl.col("reason").is_not_null() | pl.col("exit").is_not_null())
        exits = dict(
            zip(
                uexit["row"].to_list(),
                zip(uexit["reason"].to_list(), uexit["exit"].to_list(), strict=True),
                strict=True,
            )
        )
        roles = [0] * len(self.records)
        records = self.records
        seen_pids: set[int] = set()
        next_idx: dict[int, int] = {}
        Rec = kvmrun.KvmRecord
        for t, recs in enumerate(self.task_kvm):
            pid = self.task_pid[t]
            first_life = pid not in seen_pids
            seen_pids.add(pid)
            if self.task_kind[t] != Kind.VCPU or not recs:
                continue
            kvm_recs = []
            for i in recs:
                _, row, _, tail, switches = records[i]
                ev = code[row]
                reason, ec = exits.get(row, _NO_EXIT) if ev == E_UEXIT else _NO_EXIT
                f = flag[row]
                kvm_recs.append(
                    Rec(i, ev, ts[row], ev == E_FPU and f == 1, tail, switches,
                        ev == E_IOCTL_IN and f == 1, reason, ec)
                )  # fmt: skip
            if self.legacy:
                runs = kvmrun.classify_legacy(t, kvm_recs, roles, self.first_ts, first_life)
            else:
                runs = kvmrun.classify_vd(
                    t, kvm_recs, roles, self.first_ts, first_life, self.has_entry
                )
            for run in runs:
                run.run_idx = next_idx.get(pid, 0)
                next_idx[pid] = run.run_idx + 1
                self.runs.append(run)
        return roles

    # -- the walk --------------------------------------------------------------
    def build(self) -> None:
        """Classify runs, then walk the records once to emit the steps."""
        df = self.df
        self.ts = df["ts_ns"].to_list()
        roles = self._classify()
        ts, line = self.ts, df["line_no"].to_list()
        cpus = df["cpu"].to_list()
        steps = self.steps
        synth = not self.has_entry
        n_tasks = len(self.task_pid)
        n_runs = len(self.runs)
        trun = [-1] * n_tasks  # table run open per task (gid)
        swap_run = [False] * n_tasks  # between the KVM_RUN entry and exit swap points
        last_out_cpu = [-1] * n_tasks  # where the task was switched out inside its run
        self.r_preempt = r_preempt = [0] * n_runs
        self.r_block = r_block = [0] * n_runs
        self.r_other = r_other = [0] * n_runs
        self.r_migr = r_migr = [0] * n_runs
        self.r_inferred = r_inferred = [0] * n_runs
        self.r_cpus = r_cpus = [0] * n_runs
        self.r_lost = r_lost = [False] * n_runs
        self.r_cpu_start = r_cpu_start = [-1] * n_runs
        open_at: dict[int, int] = {}
        resume_at: dict[int, int] = {}
        close_at: dict[int, int] = {}
        for gid, run in enumerate(self.runs):
            if run.open_rec is not None:
                open_at[run.open_rec] = gid
            elif run.at_start:
                trun[run.task] = gid
                swap_run[run.task] = True
                self.run_at_start[run.task] = run.run_idx
            else:
                resume_at[run.first_rec] = gid
            if run.close_rec is not None:
                close_at[run.close_rec] = gid
        for t, gid in list((t, g) for t, g in enumerate(trun) if g >= 0):
            cpu = next((c for c, tt in self.initial_cpu.items() if tt == t), -1)
            r_cpu_start[gid] = cpu
            if cpu >= 0:
                r_cpus[gid] |= 1 << cpu

        sw_prev_in = self._sw_prev_in = []

        for i, rec in enumerate(self.records):
            kind = rec[0]
            if kind == R_SWITCH:
                _, row, cpu, tp, tn, state, inferred, sid, _, _ = rec
                t_ns, ln = ts[row], line[row]
                prev_in = tp >= 0 and trun[tp] >= 0
                if prev_in:
                    g = trun[tp]
                    if state == S_PREEMPT:
                        r_preempt[g] += 1
                    elif state == S_BLOCK:
                        r_block[g] += 1
                    else:
                        r_other[g] += 1
                    last_out_cpu[tp] = cpu
                if tn >= 0 and trun[tn] >= 0:
                    g = trun[tn]
                    if inferred:
                        r_inferred[g] += 1
                    if last_out_cpu[tn] >= 0 and last_out_cpu[tn] != cpu:
                        r_migr[g] += 1
                    r_cpus[g] |= 1 << cpu
                if tn >= 0 and trun[tn] >= 0:
                    sid = IN_IOCTL  # inside KVM_RUN: it cannot return to userspace now
                steps.append((ST_SWITCH, t_ns, ln, cpu, tp, tn, sid, state))
                if synth and tn >= 0 and swap_run[tn]:
                    steps.append((ST_ENTRY, t_ns, ln, cpu, tn, 0, 0))
                sw_prev_in.append(prev_in)
                if prev_in and state == S_EXIT:
                    self._end_at_exit(tp, t_ns, ln, cpu, trun)
                continue
            if kind == R_LOST:
                bit = 1 << rec[2] if rec[2] >= 0 else -1  # -1: every CPU
                for g in set(trun):
                    if g >= 0 and r_cpus[g] & bit:
                        r_lost[g] = True
                continue
            role = roles[i]
            if not role and i not in resume_at:
                continue
            row, t = rec[1], rec[2]
            t_ns, ln, cpu = ts[row], line[row], cpus[row]
            g = resume_at.get(i)
            if g is not None:
                self._open(t, g, t_ns, ln, cpu, trun, swap_run, last_out_cpu, resume=True)
            if role & kvmrun.OPEN:
                if swap_run[t]:
                    # The previous run's exit was never seen (cut at this run): its
                    # put happened before this run began, so it is replayed here,
                    # while that run is still the thread's open one.
                    steps.append((ST_RUN_END, t_ns, ln, cpu, t, 0, 0))
                    swap_run[t] = False
                self._open(t, open_at[i], t_ns, ln, cpu, trun, swap_run, last_out_cpu)
            if role & kvmrun.SWAPIN:
                if swap_run[t]:  # the previous run's exit was never seen
                    steps.append((ST_RUN_END, t_ns, ln, cpu, t, 0, 0))
                steps.append(
                    (
                        ST_RUN_START,
                        t_ns,
                        ln,
                        cpu,
                        t,
                        self.runs[trun[t]].run_idx if trun[t] >= 0 else -1,
                        0,
                    )
                )
                swap_run[t] = True
                if synth:
                    steps.append((ST_ENTRY, t_ns, ln, cpu, t, 0, 0))
            if role & kvmrun.ENTRY and not synth:
                steps.append((ST_ENTRY, t_ns, ln, cpu, t, 0, 0))
            if role & kvmrun.INIT:
                steps.append((ST_INIT, t_ns, ln, cpu, t, 0, 0))
                if synth:
                    steps.append((ST_ENTRY, t_ns, ln, cpu, t, 0, 0))
            if role & kvmrun.MP:
                steps.append((ST_MP, t_ns, ln, cpu, t, 0, 0))
            if role & kvmrun.EMUL:
                steps.append((ST_EMUL, t_ns, ln, cpu, t, 0, 0))
            if role & kvmrun.CLOSE_SWAP:
                if swap_run[t]:
                    steps.append((ST_RUN_END, t_ns, ln, cpu, t, 0, 0))
                swap_run[t] = False
            if role & kvmrun.CLOSE:
                g = close_at.get(i, trun[t])
                self._close(t, g, t_ns, ln, cpu, trun)

    def _open(
        self,
        t: int,
        g: int,
        t_ns: int,
        ln: int,
        cpu: int,
        trun: list[int],
        swap_run: list[bool],
        last_out_cpu: list[int],
        resume: bool = False,
    ) -> None:
        if trun[t] >= 0:  # a run whose end was never seen: cut here
            self._close(t, trun[t], t_ns, ln, cpu, trun)
        trun[t] = g
        last_out_cpu[t] = -1
        self.r_cpu_start[g] = cpu
        self.r_cpus[g] |= 1 << cpu
        idx = self.runs[g].run_idx
        self.steps.append((ST_OPEN, t_ns, ln, cpu, t, idx, int(resume)))
        if resume:
            # In a run whose start the trace does not show (a gap): the guest
            # is taken to be loaded, as at the trace start.
            swap_run[t] = True

    def _end_at_exit(self, t: int, t_ns: int, ln: int, cpu: int, trun: list[int]) -> None:
        """Thread ``t`` exits (prev_state X/Z) inside a run: the run ends at its exit.

        A thread cannot exit inside KVM_RUN: the ioctl returns first (a fatal
        signal makes it return -EINTR), logging its unload and
        kvm_userspace_exit, so those lines are missing from the trace.  The
        run is cut at the exit, which is where it certainly ended, rather
        than left open to the trace's end (where a later lost-events marker
        on the CPU would also be charged to it).  No put is replayed: the
        thread never returned from the ioctl in this trace.
        """
        g = trun[t]
        run = self.runs[g]
        if run.end_ts is None:
            run.end_ts = t_ns
        run.cut_end = True
        self.cut_by_exit.append(g)
        self._close(t, g, t_ns, ln, cpu, trun)

    def _close(self, t: int, g: int, t_ns: int, ln: int, cpu: int, trun: list[int]) -> None:
        if g < 0:
            return
        if trun[t] == g:
            trun[t] = -1
        self.steps.append((ST_CLOSE, t_ns, ln, cpu, t, self.runs[g].run_idx, 0))

    # -- tables ------------------------------------------------------------------
    def runs_frame(self) -> pl.DataFrame:
        """The `runs` table (architecture.md) plus a few useful extras."""
        rows: dict[str, list[Any]] = {
            k: []
            for k in (
                "pid", "run_idx", "start_ns", "end_ns", "exit_reason", "exit_code",
                "preemptions", "blocks", "migrations", "complete", "comm", "cpu_start",
                "other_sched_outs", "inferred_switch_ins", "cut_by_trace_start",
                "cut_by_trace_end", "cut_by_lost_events",
            )
        }  # fmt: skip
        for g, run in enumerate(self.runs):
            end = run.end_ts if run.end_ts is not None else self.last_ts
            cut_end = run.cut_end or run.end_ts is None
            rows["pid"].append(self.task_pid[run.task])
            rows["run_idx"].append(run.run_idx)
            rows["start_ns"].append(run.start_ts)
            rows["end_ns"].append(end)
            rows["exit_reason"].append(run.exit_reason)
            rows["exit_code"].append(run.exit_code)
            rows["preemptions"].append(self.r_preempt[g])
            rows["blocks"].append(self.r_block[g])
            rows["migrations"].append(self.r_migr[g])
            rows["complete"].append(not (run.cut_start or cut_end or self.r_lost[g]))
            rows["comm"].append(self.task_comm[run.task])
            rows["cpu_start"].append(self.r_cpu_start[g] if self.r_cpu_start[g] >= 0 else None)
            rows["other_sched_outs"].append(self.r_other[g])
            rows["inferred_switch_ins"].append(self.r_inferred[g])
            rows["cut_by_trace_start"].append(run.cut_start)
            rows["cut_by_trace_end"].append(cut_end)
            rows["cut_by_lost_events"].append(self.r_lost[g])
        return pl.DataFrame(rows, schema=RUNS_SCHEMA).sort("pid", "run_idx")

    def switches_frame(self) -> pl.DataFrame:
        """Every context switch the replay used, logged or inferred."""
        recs = [r for r in self.records if r[0] == R_SWITCH]
        if not recs:
            return pl.DataFrame(schema=SWITCHES_SCHEMA)
        _, rows, cpu, prev, nxt, state, inferred, _, saved, _ = zip(*recs, strict=True)
        rows_s = pl.Series(rows, dtype=pl.UInt32)
        pids = pl.Series([*self.task_pid, None], dtype=pl.Int32)  # index -1: unknown task
        names = pl.Series([STATE_NAMES[k] for k in sorted(STATE_NAMES)])
        return pl.DataFrame(
            {
                "line_no": self.df["line_no"].gather(rows_s),
                "ts_ns": self.df["ts_ns"].gather(rows_s),
                "cpu": pl.Series(cpu, dtype=pl.Int32),
                "prev_pid": pids.gather(pl.Series(prev, dtype=pl.Int64) % pids.len()),
                "next_pid": pids.gather(pl.Series(nxt, dtype=pl.Int64) % pids.len()),
                "prev_task": pl.Series(prev, dtype=pl.Int32),
                "next_task": pl.Series(nxt, dtype=pl.Int32),
                "state": names.gather(pl.Series(state, dtype=pl.UInt32)),
                "inferred": pl.Series(inferred, dtype=pl.Boolean),
                "saved_observed": pl.Series(saved, dtype=pl.Boolean),
                "prev_in_run": pl.Series(self._sw_prev_in, dtype=pl.Boolean),
            },
            schema=SWITCHES_SCHEMA,
        )


RUNS_SCHEMA = pl.Schema(
    {
        "pid": pl.Int32(),
        "run_idx": pl.Int32(),
        "start_ns": pl.Int64(),
        "end_ns": pl.Int64(),
        "exit_reason": pl.String(),
        "exit_code": pl.Int64(),
        "preemptions": pl.Int32(),
        "blocks": pl.Int32(),
        "migrations": pl.Int32(),
        "complete": pl.Boolean(),
        "comm": pl.String(),
        "cpu_start": pl.Int32(),
        "other_sched_outs": pl.Int32(),
        "inferred_switch_ins": pl.Int32(),
        "cut_by_trace_start": pl.Boolean(),
        "cut_by_trace_end": pl.Boolean(),
        "cut_by_lost_events": pl.Boolean(),
    }
)

SWITCHES_SCHEMA = pl.Schema(
    {
        "line_no": pl.Int64(),
        "ts_ns": pl.Int64(),
        "cpu": pl.Int32(),
        "prev_pid": pl.Int32(),
        "next_pid": pl.Int32(),
        "prev_task": pl.Int32(),
        "next_task": pl.Int32(),
        "state": pl.String(),
        "inferred": pl.Boolean(),
        "saved_observed": pl.Boolean(),
        "prev_in_run": pl.Boolean(),
    }
)
