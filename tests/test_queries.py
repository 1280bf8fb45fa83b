"""Golden tests of every shipped query, in the style of Perfetto's diff tests.

Two tiny inline traces are ingested and replayed (pipeline.orchestrate, what
`fpureplay replay` runs) into one dataset; each test runs one query and
compares its exact rows with values worked out by hand from the traces, the
arithmetic in the comments.

The cost model is chosen so that every operation costs exactly 100 ns
(16 ns + 2688 bytes / 32), which keeps cost sums exact in binary floating
point.  Float expectations are written as the same operations the SQL does
(``100 * 10 / 24`` for ``100 * CAST(10 AS DOUBLE) / 24``) so they compare
exactly.

STEADY (6.x tracefs, deferred recording), times in µs after 5123 s:

* vCPU A = pid 4321 `CPU 0/KVM` on CPU 0, one KVM_RUN 100 → 812 with three
  sched-outs after guest runs: 160 preempted (R) by kworker (a kernel
  thread: registers still valid at 300), 410 blocked (S) to idle (valid at
  500), 560 preempted (R+) by `fpu-hog`, a user task that takes the
  registers (invalid at 700).  So P = 3, k = 1.
* vCPU B = pid 4322 `CPU 1/KVM` on CPU 1, one plain KVM_RUN 200 → 261.

By the model's closed forms, A does 4 + 5P + k = 20 operations under legacy
(3P + k = 10 redundant) and 4 + P + k = 8 under vcpu_run and deferred
(none redundant); B does 4 under every policy.

ROUGH (same format): vCPU C = pid 4400 `CPU 1/KVM`, 40 → 302 µs after
200 s.  Run 0 is in progress when the trace starts (cut), run 1 holds a
lost-events marker (cut), run 2 is open when the trace ends (cut); line 7
does not parse; C's last run starts on CPU 0, where `bash` had gone idle,
without a logged switch: one inferred switch-in.  Every policy does 10
operations, none redundant: 2 at the end of run 0, 4 for run 1, 2 at the
(inferred) migration to CPU 0 outside any run, 2 at run 2's load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest

import queries

ROOT = Path(__file__).resolve().parents[1]

STEADY_LINES = [
    "# tracer: nop",
    "#",
    "       CPU 0/KVM-4321    [000] ..... 5123.000100: kvm_fpu: load",
    "       CPU 0/KVM-4321    [000] d..1. 5123.000102: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4",
    "       CPU 0/KVM-4321    [000] d..1. 5123.000150: kvm_exit: vcpu 0 reason EPT_MISCONFIG"
    " rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000"
    " intr_info 0x00000000 error_code 0x00000000",
    "       CPU 0/KVM-4321    [000] d..2. 5123.000160: sched_switch: prev_comm=CPU 0/KVM"
    " prev_pid=4321 prev_prio=120 prev_state=R ==> next_comm=kworker/0:1 next_pid=87"
    " next_prio=120",
    "       CPU 1/KVM-4322    [001] ..... 5123.000200: kvm_fpu: load",
    "       CPU 1/KVM-4322    [001] d..1. 5123.000202: kvm_entry: vcpu 1, rip 0xffffffff81c3d9e4",
    "       CPU 1/KVM-4322    [001] d..1. 5123.000250: kvm_exit: vcpu 1 reason IO_INSTRUCTION"
    " rip 0xffffffff8102f6f4 info1 0x0000000000000000 info2 0x0000000000000000"
    " intr_info 0x00000000 error_code 0x00000000",
    "       CPU 1/KVM-4322    [001] ..... 5123.000260: kvm_fpu: unload",
    "       CPU 1/KVM-4322    [001] ..... 5123.000261: kvm_userspace_exit: reason KVM_EXIT_IO (2)",
    "     kworker/0:1-87      [000] d..2. 5123.000300: sched_switch: prev_comm=kworker/0:1"
    " prev_pid=87 prev_prio=120 prev_state=I ==> next_comm=CPU 0/KVM next_pid=4321"
    " next_prio=120",
    "       CPU 0/KVM-4321    [000] d..1. 5123.000306: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4",
    "       CPU 0/KVM-4321    [000] d..1. 5123.000400: kvm_exit: vcpu 0 reason hlt"
    " rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000"
    " intr_info 0x00000000 error_code 0x00000000",
    "       CPU 0/KVM-4321    [000] d..2. 5123.000410: sched_switch: prev_comm=CPU 0/KVM"
    " prev_pid=4321 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0"
    " next_prio=120",
    "          <idle>-0       [000] d..2. 5123.000500: sched_switch: prev_comm=swapper/0"
    " prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=CPU 0/KVM next_pid=4321"
    " next_prio=120",
    "       CPU 0/KVM-4321    [000] d..1. 5123.000506: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4",
    "       CPU 0/KVM-4321    [000] d..1. 5123.000550: kvm_exit: vcpu 0 reason EXTERNAL_INTERRUPT"
    " rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000"
    " intr_info 0x00000000 error_code 0x00000000",
    "       CPU 0/KVM-4321    [000] d..2. 5123.000560: sched_switch: prev_comm=CPU 0/KVM"
    " prev_pid=4321 prev_prio=120 prev_state=R+ ==> next_comm=fpu-hog next_pid=5000"
    " next_prio=120",
    "         fpu-hog-5000    [000] d..2. 5123.000700: sched_switch: prev_comm=fpu-hog"
    " prev_pid=5000 prev_prio=120 prev_state=R ==> next_comm=CPU 0/KVM next_pid=4321"
    " next_prio=120",
    "       CPU 0/KVM-4321    [000] d..1. 5123.000706: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4",
    "       CPU 0/KVM-4321    [000] d..1. 5123.000800: kvm_exit: vcpu 0 reason IO_INSTRUCTION"
    " rip 0xffffffff8102f6f4 info1 0x0000000000000000 info2 0x0000000000000000"
    " intr_info 0x00000000 error_code 0x00000000",
    "       CPU 0/KVM-4321    [000] ..... 5123.000811: kvm_fpu: unload",
    "       CPU 0/KVM-4321    [000] ..... 5123.000812: kvm_userspace_exit: reason KVM_EXIT_IO (2)",
]

ROUGH_LINES = [
    "# tracer: nop",
    "#",
    "            bash-900     [000] d..2.   200.000040: sched_switch: prev_comm=bash prev_pid=900"
    " prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120",
    "       CPU 1/KVM-4400    [001] d..1.   200.000050: kvm_exit: vcpu 1 reason hlt"
    " rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000"
    " intr_info 0x00000000 error_code 0x00000000",
    "       CPU 1/KVM-4400    [001] .....   200.000060: kvm_fpu: unload",
    "       CPU 1/KVM-4400    [001] .....   200.000061: kvm_userspace_exit: reason KVM_EXIT_IO (2)",
    "this line is not an event",
    "       CPU 1/KVM-4400    [001] .....   200.000100: kvm_fpu: load",
    "       CPU 1/KVM-4400    [001] d..1.   200.000102: kvm_entry: vcpu 1, rip 0xffffffff81c3d9e4",
    "CPU:1 [LOST 3 EVENTS]",
    "       CPU 1/KVM-4400    [001] d..1.   200.000150: kvm_exit: vcpu 1 reason IO_INSTRUCTION"
    " rip 0xffffffff8102f6f4 info1 0x0000000000000000 info2 0x0000000000000000"
    " intr_info 0x00000000 error_code 0x00000000",
    "       CPU 1/KVM-4400    [001] .....   200.000160: kvm_fpu: unload",
    "       CPU 1/KVM-4400    [001] .....   200.000161: kvm_userspace_exit:"
    " reason KVM_EXIT_MMIO (6)",
    "       CPU 1/KVM-4400    [000] .....   200.000300: kvm_fpu: load",
    "       CPU 1/KVM-4400    [000] d..1.   200.000302: kvm_entry: vcpu 1, rip 0xffffffff81c3d9e4",
]

STEADY = ("\n".join(STEADY_LINES) + "\n").encode()
ROUGH = ("\n".join(ROUGH_LINES) + "\n").encode()
S = f"steady-{hashlib.sha256(STEADY).hexdigest()[:12]}"  # source ids: stem + sha256 prefix
R = f"rough-{hashlib.sha256(ROUGH).hexdigest()[:12]}"

SPAN_S = 712000 / 1000000000  # STEADY: 5123.000812 - 5123.000100
SPAN_R = 262000 / 1000000000  # ROUGH: 200.000302 - 200.000040

REASON_PUT_RESTORE = (
    "user state restored by the preempt notifier's put (kvm_sched_out) only to be saved"
    " at the context switch, before it ran"
)
REASON_CS_SAVE = (
    "user state saved at the context switch though it has not run since it was restored"
    " by the preempt notifier's put (kvm_sched_out): memory already holds it"
)
REASON_ENTRY_SAVE_AFTER_SAVE = (
    "user state saved when guest entry reloads the guest FPU though it has not run since"
    " it was saved at the context switch: memory already holds it"
)
REASON_ENTRY_SAVE_AFTER_CS_IN = (
    "user state saved when guest entry reloads the guest FPU though it has not run since"
    " it was restored eagerly at switch-in: memory already holds it"
)
REASON_CS_IN_RESTORE = (
    "user state restored eagerly at switch-in only to be saved when guest entry reloads"
    " the guest FPU, before it ran"
)


def golden_cost_model():
    """16 ns + 2688 bytes * 1/32 ns = exactly 100 ns per operation (2688: AVX-512)."""
    from pipeline.cost import CostModel

    return CostModel(fixed_ns=16.0, ns_per_byte=0.03125, cpu_profile="avx512")


def build_golden(root: Path) -> Path:
    """The two traces, ingested and replayed (all three policies) into ``root/ds``."""
    from ingest import ingest_traces
    from pipeline.orchestrate import replay_dataset

    (root / "steady.txt").write_bytes(STEADY)
    (root / "rough.txt").write_bytes(ROUGH)
    dataset = root / "ds"
    ingest_traces([str(root / "steady.txt"), str(root / "rough.txt")], dataset)
    replay_dataset(dataset, cost_model=golden_cost_model())
    return dataset


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Path:
    return build_golden(tmp_path_factory.mktemp("golden"))


def rows(dataset: Path, name: str, **params) -> list[tuple]:
    """The query's rows, after checking its columns are the documented ones."""
    frame = queries.run(dataset, name, **params)
    assert frame.columns == [c.name for c in queries.get(name).columns]
    return frame.rows()


def test_policy_summary(golden):
    # ROUGH, every policy: end of run 0 (save guest, restore user), run 1
    # (save user, restore guest; save guest, restore user), the inferred
    # migration (save user at sched-out, restore user at sched-in), run 2's
    # load (save user, restore guest): saves 5 = SU 3 + SG 2, restores 5 =
    # RU 3 + RG 2; 10 * 2688 bytes; 10 * 100 ns = 1.0 µs; all but the two
    # migration ops lie in cut runs: 8.
    rough = [10, 5, 5, 3, 3, 2, 2, 0, 0.0, 26880, 1.0, 0.0, 8]
    assert rows(golden, "policy_summary") == [
        (R, "legacy", *rough),
        (R, "vcpu_run", *rough),
        (R, "deferred", *rough),
        # STEADY legacy: A's 20 = XS_u 1+2P=7, XR_u 1+P+k=5, XS_g 1+P=4,
        # XR_g 1+P=4, plus B's 4 (one of each): SU 8, RU 6, SG 5, RG 5.
        # Redundant 3P+k = 10 of 24; cost 24 * 100 ns, redundant 10 * 100 ns.
        (S, "legacy", 24, 13, 11, 8, 6, 5, 5, 10, 100 * 10 / 24, 24 * 2688, 2.4, 1.0, 0),
        # vcpu_run and deferred: A's 8 = XS_u 1, XR_u 1, XS_g 1+P=4, XR_g 1+k=2, plus B's 4.
        (S, "vcpu_run", 12, 7, 5, 2, 2, 5, 3, 0, 0.0, 12 * 2688, 1.2, 0.0, 0),
        (S, "deferred", 12, 7, 5, 2, 2, 5, 3, 0, 0.0, 12 * 2688, 1.2, 0.0, 0),
    ]


def test_savings_against_legacy(golden):
    # ROUGH: every policy does the same 10 operations, nothing saved.
    # STEADY: 24 - 12 = 12 operations, 2.4 - 1.2 µs, over 712 µs of trace.
    nothing = (10, 10, 0, 0.0, 0 / SPAN_R, 1.0, 1.0, 0.0, 0.0 / 1000 / SPAN_R, SPAN_R)
    halved = (24, 12, 12, 100 * 12 / 24, 12 / SPAN_S, 2.4, 1.2, 1.2, 1200.0 / 1000 / SPAN_S, SPAN_S)
    assert rows(golden, "savings") == [
        (R, "legacy", "vcpu_run", *nothing),
        (R, "legacy", "deferred", *nothing),
        (S, "legacy", "vcpu_run", *halved),
        (S, "legacy", "deferred", *halved),
    ]


def test_savings_against_another_baseline(golden):
    # Against vcpu_run, legacy saves -12 operations (-100 % of vcpu_run's 12).
    got = [r for r in rows(golden, "savings", baseline="vcpu_run") if r[0] == S]
    assert got == [
        (S, "vcpu_run", "legacy", 12, 24, -12, 100 * -12 / 12, -12 / SPAN_S, 1.2, 2.4, -1.2,
         -1200.0 / 1000 / SPAN_S, SPAN_S),
        (S, "vcpu_run", "deferred", 12, 12, 0, 0.0, 0 / SPAN_S, 1.2, 1.2, 0.0, 0.0, SPAN_S),
    ]  # fmt: skip


def test_savings_of_an_unknown_baseline_is_empty(golden):
    assert rows(golden, "savings", baseline="D52") == []


def test_redundant_by_trigger(golden):
    # Only STEADY's legacy wastes.  Per sched-out (3): the notifier put's
    # user restore and the context switch's user save; per re-entry (3): the
    # user save of the load, after the CS-out save (2 re-entries) or after
    # the eager CS-in restore (the one after fpu-hog took the registers);
    # that CS-in restore itself (1).  3 + 3 + 2 + 1 + 1 = 10.
    assert rows(golden, "redundant_by_trigger") == [
        (S, "legacy", "sched_out", "restore", "user", REASON_PUT_RESTORE, 3, 3, 100.0, 30.0, 0.3),
        (S, "legacy", "sched_out", "save", "user", REASON_CS_SAVE, 3, 3, 100.0, 30.0, 0.3),
        # 3 user saves at guest entry (after each sched-out), 2 and 1 of them per reason.
        (S, "legacy", "guest_entry", "save", "user", REASON_ENTRY_SAVE_AFTER_SAVE, 2, 3,
         100 * 2 / 3, 20.0, 0.2),
        (S, "legacy", "guest_entry", "save", "user", REASON_ENTRY_SAVE_AFTER_CS_IN, 1, 3,
         100 * 1 / 3, 10.0, 0.1),
        (S, "legacy", "sched_in", "restore", "user", REASON_CS_IN_RESTORE, 1, 1, 100.0, 10.0,
         0.1),
    ]  # fmt: skip


def test_timeline_default_bucket_holds_everything(golden):
    # Both traces last < 10 ms: one bucket per source and policy.
    got = [(r[0], r[1], r[2], r[3], r[4]) for r in rows(golden, "timeline")]
    assert got == [
        (R, "legacy", 0, 0.0, 10),
        (R, "vcpu_run", 0, 0.0, 10),
        (R, "deferred", 0, 0.0, 10),
        (S, "legacy", 0, 0.0, 24),
        (S, "vcpu_run", 0, 0.0, 12),
        (S, "deferred", 0, 0.0, 12),
    ]


def test_timeline_quarter_millisecond_buckets(golden):
    # 250 µs buckets from each source's first event; cpu_pct = 100 * ns / 250000.
    # ROUGH (from 40 µs): ops at 60, 100/102, 160 -> bucket 0 (6 ops);
    # 300, 300/302 -> bucket 1 (4 ops), half saves, half restores.
    r0 = (0, 0.0, 6, 3, 3, 0, 0.6, 100 * 600.0 / 250000)
    r1 = (1, 0.25, 4, 2, 2, 0, 0.4, 100 * 400.0 / 250000)
    # STEADY (from 100 µs), bucket 0 = [100, 350), 1 = [350, 600), 2 = [600, 850).
    assert rows(golden, "timeline", bucket_ms=0.25) == [
        (R, "legacy", *r0),
        (R, "legacy", *r1),
        (R, "vcpu_run", *r0),
        (R, "vcpu_run", *r1),
        (R, "deferred", *r0),
        (R, "deferred", *r1),
        # legacy 0: A 102 (SU RG), 160 (SG RU† SU†), 306 (SU† RG); B 202 (SU RG), 260 (SG RU).
        (S, "legacy", 0, 0.0, 11, 6, 5, 3, 1.1, 100 * 1100.0 / 250000),
        # legacy 1: 410 (SG RU† SU†), 506 (SU† RG), 560 (SG RU† SU†).
        (S, "legacy", 1, 0.25, 8, 5, 3, 5, 0.8, 100 * 800.0 / 250000),
        # legacy 2: 700 (RU† at switch-in), 706 (SU† RG), 811 (SG RU).
        (S, "legacy", 2, 0.5, 5, 2, 3, 2, 0.5, 100 * 500.0 / 250000),
        # vcpu_run 0: A 100 (SU RG), 160 (SG); B 200 (SU RG), 260 (SG RU).
        (S, "vcpu_run", 0, 0.0, 7, 4, 3, 0, 0.7, 100 * 700.0 / 250000),
        (S, "vcpu_run", 1, 0.25, 2, 2, 0, 0, 0.2, 100 * 200.0 / 250000),  # 410, 560: SG
        (S, "vcpu_run", 2, 0.5, 3, 1, 2, 0, 0.3, 100 * 300.0 / 250000),  # 700 RG, 811 SG RU
        (S, "deferred", 0, 0.0, 7, 4, 3, 0, 0.7, 100 * 700.0 / 250000),
        (S, "deferred", 1, 0.25, 2, 2, 0, 0, 0.2, 100 * 200.0 / 250000),
        (S, "deferred", 2, 0.5, 3, 1, 2, 0, 0.3, 100 * 300.0 / 250000),  # RG deferred to 706
    ]


def test_vcpu_summary(golden):
    # ROUGH: C has 3 runs, all cut; no sched-out inside a run.
    c = (4400, "CPU 1/KVM", 3, 3, 0, 0, 0, 10, 0, 0.0, 1.0)
    # STEADY: A has 1 run with 2 preemptions (R, R+) and 1 block (S); B 1 plain run.
    a_runs = (4321, "CPU 0/KVM", 1, 0, 2, 1, 0)
    b_runs = (4322, "CPU 1/KVM", 1, 0, 0, 0, 0)
    assert rows(golden, "vcpu_summary") == [
        (R, "legacy", *c),
        (R, "vcpu_run", *c),
        (R, "deferred", *c),
        (S, "legacy", *a_runs, 20, 10, 100 * 10 / 20, 2.0),
        (S, "legacy", *b_runs, 4, 0, 0.0, 0.4),
        (S, "vcpu_run", *a_runs, 8, 0, 0.0, 0.8),
        (S, "vcpu_run", *b_runs, 4, 0, 0.0, 0.4),
        (S, "deferred", *a_runs, 8, 0, 0.0, 0.8),
        (S, "deferred", *b_runs, 4, 0, 0.0, 0.4),
    ]


def test_run_histogram_of_complete_runs(golden):
    # ROUGH has no complete run.  STEADY: A 812 - 100 = 712 µs in [512, 1024)
    # with 3 sched-outs; B 261 - 200 = 61 µs in [32, 64) with none.
    assert rows(golden, "run_histogram") == [
        (S, "run_us", 32, 64, 1, 50.0, 50.0),
        (S, "run_us", 512, 1024, 1, 50.0, 100.0),
        (S, "sched_outs", 0, 1, 1, 50.0, 50.0),
        (S, "sched_outs", 3, 4, 1, 50.0, 100.0),
    ]


def test_run_histogram_with_incomplete_runs(golden):
    # ROUGH's cut runs: 61 - 40 = 21 µs (from the trace start) in [16, 32),
    # 161 - 100 = 61 µs in [32, 64), 302 - 300 = 2 µs in [2, 4); none has a sched-out.
    got = [r for r in rows(golden, "run_histogram", include_incomplete=True) if r[0] == R]
    third, two_thirds = 100 * 1.0 / 3, 100 * 2.0 / 3
    assert got == [
        (R, "run_us", 2, 4, 1, third, third),
        (R, "run_us", 16, 32, 1, third, two_thirds),
        (R, "run_us", 32, 64, 1, third, 100.0),
        (R, "sched_outs", 0, 1, 3, 100.0, 100.0),
    ]


def test_preemption_cost(golden):
    # ROUGH: no sched-out of C inside a run.  STEADY legacy, preempted (160,
    # 560): 5 ops (put SG RU†, CS-out SU†, re-entry SU† RG) + 6 (the same and
    # RU† at the invalid switch-in) = 11, 3 + 4 = 7 redundant; blocked (410): 5, 3.
    # vcpu_run: SG per sched-out, plus RG at the invalid switch-in (700);
    # deferred: the same RG, deferred to the guest entry at 706.
    assert rows(golden, "preemption_cost") == [
        (S, "legacy", "preempted", 2, 11, 7, 1.1, 11 / 2, 1100.0 / 2),
        (S, "legacy", "blocked", 1, 5, 3, 0.5, 5 / 1, 500.0 / 1),
        (S, "vcpu_run", "preempted", 2, 3, 0, 0.3, 3 / 2, 300.0 / 2),
        (S, "vcpu_run", "blocked", 1, 1, 0, 0.1, 1 / 1, 100.0 / 1),
        (S, "deferred", "preempted", 2, 3, 0, 0.3, 3 / 2, 300.0 / 2),
        (S, "deferred", "blocked", 1, 1, 0, 0.1, 1 / 1, 100.0 / 1),
    ]


def test_preemption_cost_matches_the_runs_table(golden):
    # The sched-outs the query finds in runs are the ones the replay counted.
    con = queries.connect(golden)
    [(preempted, blocked)] = con.execute(
        "SELECT sum(preemptions), sum(blocks) FROM runs WHERE source = $s", {"s": S}
    ).fetchall()
    got = {r[2]: r[3] for r in rows(golden, "preemption_cost") if r[:2] == (S, "legacy")}
    assert got == {"preempted": preempted, "blocked": blocked} == {"preempted": 2, "blocked": 1}


def test_fpu_reload_rate(golden):
    # Puts = user restores at ioctl_exit, sched_out (legacy notifier) or init_reset.
    # ROUGH: C's puts end runs 0 and 1 under every policy (the restore at the
    # inferred migration is a context switch's, not a put); 2 unload lines.
    c = (4400, "CPU 1/KVM", 2, 2 / SPAN_R, 2, 2 / SPAN_R, SPAN_R)
    # STEADY legacy: A puts at each of its 3 sched-outs and at the end, B at the end.
    # vcpu_run and deferred: once per KVM_RUN.  The recording logged 1 unload each.
    assert rows(golden, "fpu_reload_rate") == [
        (R, "legacy", *c),
        (R, "vcpu_run", *c),
        (R, "deferred", *c),
        (S, "legacy", 4321, "CPU 0/KVM", 4, 4 / SPAN_S, 1, 1 / SPAN_S, SPAN_S),
        (S, "legacy", 4322, "CPU 1/KVM", 1, 1 / SPAN_S, 1, 1 / SPAN_S, SPAN_S),
        (S, "vcpu_run", 4321, "CPU 0/KVM", 1, 1 / SPAN_S, 1, 1 / SPAN_S, SPAN_S),
        (S, "vcpu_run", 4322, "CPU 1/KVM", 1, 1 / SPAN_S, 1, 1 / SPAN_S, SPAN_S),
        (S, "deferred", 4321, "CPU 0/KVM", 1, 1 / SPAN_S, 1, 1 / SPAN_S, SPAN_S),
        (S, "deferred", 4322, "CPU 1/KVM", 1, 1 / SPAN_S, 1, 1 / SPAN_S, SPAN_S),
    ]


def test_event_counts(golden):
    # ROUGH: 12 rows (the lost-events marker is one), 1 reject, a marker for 3 events.
    # STEADY: 22 rows: sched_switch 6, kvm_entry 5, kvm_exit 5, kvm_fpu 4, kvm_userspace_exit 2.
    rough = (1, 1, 3)
    steady = (0, 0, 0)
    assert rows(golden, "event_counts") == [
        (R, "kvm_fpu", 4, 100 * 4 / 12, *rough),
        (R, "kvm_entry", 2, 100 * 2 / 12, *rough),
        (R, "kvm_exit", 2, 100 * 2 / 12, *rough),
        (R, "kvm_userspace_exit", 2, 100 * 2 / 12, *rough),
        (R, "lost_events", 1, 100 * 1 / 12, *rough),
        (R, "sched_switch", 1, 100 * 1 / 12, *rough),
        (S, "sched_switch", 6, 100 * 6 / 22, *steady),
        (S, "kvm_entry", 5, 100 * 5 / 22, *steady),
        (S, "kvm_exit", 5, 100 * 5 / 22, *steady),
        (S, "kvm_fpu", 4, 100 * 4 / 22, *steady),
        (S, "kvm_userspace_exit", 2, 100 * 2 / 22, *steady),
    ]


def test_event_rates(golden):
    # kvm_stat's shape; the marker is not an event: ROUGH has 11, STEADY 22.
    # An exit reason's pct_total is its share of the parent event.
    def r(event, n, pct):
        return (R, event, n, pct, n / SPAN_R)

    def s(event, n, pct):
        return (S, event, n, pct, n / SPAN_S)

    assert rows(golden, "event_rates") == [
        r("kvm_fpu", 4, 100 * 4 / 11),
        r("kvm_entry", 2, 100 * 2 / 11),
        r("kvm_exit", 2, 100 * 2 / 11),
        r("kvm_exit(IO_INSTRUCTION)", 1, 50.0),
        r("kvm_exit(hlt)", 1, 50.0),
        r("kvm_userspace_exit", 2, 100 * 2 / 11),
        r("kvm_userspace_exit(KVM_EXIT_IO)", 1, 50.0),
        r("kvm_userspace_exit(KVM_EXIT_MMIO)", 1, 50.0),
        r("sched_switch", 1, 100 * 1 / 11),
        r("Total", 11, None),
        s("sched_switch", 6, 100 * 6 / 22),
        s("kvm_entry", 5, 100 * 5 / 22),
        s("kvm_exit", 5, 100 * 5 / 22),
        s("kvm_exit(IO_INSTRUCTION)", 2, 40.0),  # B's exit and A's last
        s("kvm_exit(EPT_MISCONFIG)", 1, 20.0),
        s("kvm_exit(EXTERNAL_INTERRUPT)", 1, 20.0),
        s("kvm_exit(hlt)", 1, 20.0),
        s("kvm_fpu", 4, 100 * 4 / 22),
        s("kvm_userspace_exit", 2, 100 * 2 / 22),
        s("kvm_userspace_exit(KVM_EXIT_IO)", 2, 100.0),
        s("Total", 22, None),
    ]


def test_event_rates_without_exit_reasons(golden):
    got = [r[1] for r in rows(golden, "event_rates", exit_reasons=False) if r[0] == S]
    assert got == [
        "sched_switch",
        "kvm_entry",
        "kvm_exit",
        "kvm_fpu",
        "kvm_userspace_exit",
        "Total",
    ]


def test_data_quality(golden):
    # ROUGH: 15 lines = 2 comments + 12 events (with the marker) + 1 reject (line 7);
    # 3 runs, all cut (by the start, by lost events, by the end); 1 inferred switch-in.
    # STEADY: 24 lines, 22 events, 2 complete runs.
    assert rows(golden, "data_quality") == [
        (R, "tracefs", 15, 12, 1, 100 * 1 / 15, 7, "not a tracefs event line", 1, 3, 0, 0,
         False, 1, 3, 3, 100.0, "deferred"),
        (S, "tracefs", 24, 22, 0, 0.0, None, None, 0, 0, 0, 0, False, 0, 2, 0, 0.0,
         "deferred"),
    ]  # fmt: skip


def test_every_query_has_a_golden_test():
    tested = {
        name.removeprefix("test_").split("_of_")[0]
        for name in globals()
        if name.startswith("test_")
    }
    missing = [q for q in queries.catalog() if not any(t.startswith(q) for t in tested)]
    assert missing == []


def test_output_types_are_plain(golden):
    # DuckDB sums integers into HUGEINT; the SQL casts them back so that
    # every consumer (polars, CSV, JSON, Spark) sees BIGINT.
    plain = (pl.Int32, pl.Int64, pl.Float64, pl.String, pl.Boolean)
    for name, query in queries.catalog().items():
        frame = queries.run(golden, name)
        assert frame.columns == [c.name for c in query.columns], name
        for col, dtype in frame.schema.items():
            assert isinstance(dtype, plain), (name, col, dtype)
