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
    from pipeline.audit import audit_dataset

    audit_dataset(dataset)  # no FPU-state ioctl in either trace: an empty audit table
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


def test_fleet_summary_of_one_unknown_host(golden):
    # Both golden traces have no host anywhere: one host, 'unknown', whose
    # rows are the fleet's.  legacy: ROUGH 10 + STEADY 24 = 34 ops, 10
    # redundant, 3.4 us; vcpu_run and deferred: 10 + 12 = 22 ops, 2.2 us;
    # over SPAN_R + SPAN_S of trace.  Saved: 12 ops and 1.2 us.
    t = SPAN_R + SPAN_S
    legacy = (2, t, 34, 10, 100 * 10 / 34, 3.4, 34 / t, 3.4 / t, 0.0, 0.0)
    patched = (2, t, 22, 0, 0.0, 2.2, 22 / t, 2.2 / t, 12 / t, 1.2 / t)
    got = [
        tuple(round(v, 6) if isinstance(v, float) else v for v in row)
        for row in rows(golden, "fleet_summary")
    ]
    r = lambda row: tuple(round(v, 6) if isinstance(v, float) else v for v in row)  # noqa: E731
    assert got == [
        ("fleet", None, "legacy", *r(legacy), None),
        ("fleet", None, "vcpu_run", *r(patched), None),
        ("fleet", None, "deferred", *r(patched), None),
        ("host", "unknown", "legacy", *r(legacy), None),
        ("host", "unknown", "vcpu_run", *r(patched), 1),
        ("host", "unknown", "deferred", *r(patched), 1),
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
    # deferred: the same RG, deferred to the guest entry at 706.  The same
    # rows as when the query placed operations by sorting: the replay's
    # fpu_ops.sched_out_state names the sched-out each of these follows, and
    # no switch is inferred inside a run (ROUGH's is outside), so the one
    # difference (test_preemption_cost_of_an_inferred_sched_out) does not arise.
    assert rows(golden, "preemption_cost") == [
        (S, "legacy", "preempted", 2, 11, 7, 1.1, 11 / 2, 1100.0 / 2),
        (S, "legacy", "blocked", 1, 5, 3, 0.5, 5 / 1, 500.0 / 1),
        (S, "vcpu_run", "preempted", 2, 3, 0, 0.3, 3 / 2, 300.0 / 2),
        (S, "vcpu_run", "blocked", 1, 1, 0, 0.1, 1 / 1, 100.0 / 1),
        (S, "deferred", "preempted", 2, 3, 0, 0.3, 3 / 2, 300.0 / 2),
        (S, "deferred", "blocked", 1, 1, 0, 0.1, 1 / 1, 100.0 / 1),
    ]


def test_preemption_cost_matches_the_runs_table(golden):
    # The query's sched-outs are the ones the replay counted in runs.
    con = queries.connect(golden)
    [(preempted, blocked)] = con.execute(
        "SELECT sum(preemptions), sum(blocks) FROM runs WHERE source = $s", {"s": S}
    ).fetchall()
    got = {r[2]: r[3] for r in rows(golden, "preemption_cost") if r[:2] == (S, "legacy")}
    assert got == {"preempted": preempted, "blocked": blocked} == {"preempted": 2, "blocked": 1}


#: vCPU E = pid 4600 `CPU 0/KVM`, one KVM_RUN 100 -> 361 µs after 300 s: preempted
#: (R) by kworker at 160 and back at 200 on CPU 0, then seen entering the guest
#: on CPU 1 at 300 with no sched_switch line: the replay infers its sched-out
#: from CPU 0 (state unknown) and its switch-in on CPU 1, where bash had gone idle.
INFERRED_LINES = [
    "# tracer: nop",
    "#",
    "            bash-900     [001] d..2.   300.000050: sched_switch: prev_comm=bash prev_pid=900"
    " prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120",
    "       CPU 0/KVM-4600    [000] .....   300.000100: kvm_fpu: load",
    "       CPU 0/KVM-4600    [000] d..1.   300.000102: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4",
    "       CPU 0/KVM-4600    [000] d..1.   300.000150: kvm_exit: vcpu 0 reason EPT_MISCONFIG"
    " rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000"
    " intr_info 0x00000000 error_code 0x00000000",
    "       CPU 0/KVM-4600    [000] d..2.   300.000160: sched_switch: prev_comm=CPU 0/KVM"
    " prev_pid=4600 prev_prio=120 prev_state=R ==> next_comm=kworker/0:1 next_pid=87"
    " next_prio=120",
    "     kworker/0:1-87      [000] d..2.   300.000200: sched_switch: prev_comm=kworker/0:1"
    " prev_pid=87 prev_prio=120 prev_state=I ==> next_comm=CPU 0/KVM next_pid=4600"
    " next_prio=120",
    "       CPU 0/KVM-4600    [000] d..1.   300.000206: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4",
    "       CPU 0/KVM-4600    [000] d..1.   300.000250: kvm_exit: vcpu 0 reason hlt"
    " rip 0xffffffff81a0b2c6 info1 0x0000000000000000 info2 0x0000000000000000"
    " intr_info 0x00000000 error_code 0x00000000",
    "       CPU 0/KVM-4600    [001] d..1.   300.000300: kvm_entry: vcpu 0, rip 0xffffffff81c3d9e4",
    "       CPU 0/KVM-4600    [001] d..1.   300.000350: kvm_exit: vcpu 0 reason IO_INSTRUCTION"
    " rip 0xffffffff8102f6f4 info1 0x0000000000000000 info2 0x0000000000000000"
    " intr_info 0x00000000 error_code 0x00000000",
    "       CPU 0/KVM-4600    [001] .....   300.000360: kvm_fpu: unload",
    "       CPU 0/KVM-4600    [001] .....   300.000361: kvm_userspace_exit: reason KVM_EXIT_IO (2)",
]


def test_preemption_cost_of_an_inferred_sched_out(tmp_path):
    # Where the query's meaning changed with fpu_ops.sched_out_state.  Before,
    # it placed operations after the last *logged* sched-out by sorting: the
    # inferred sched-out was not counted, the operations at it were left out,
    # and those at E's switch-in on CPU 1 and re-entry there went to the
    # preemption at 160, which had not caused them (legacy 8 ops, 5
    # redundant; vcpu_run and deferred 2 for one preemption).  Now the
    # inferred sched-out counts as other (runs.other_sched_outs) with the
    # operations that name it.  legacy: put SG RU† and CS-out SU† at it, RU†
    # at the switch-in (CPU 1's registers are not E's), SU† RG at the
    # re-entry: 6, 4 redundant.  vcpu_run: SG at it, RG at the switch-in;
    # deferred: SG, RG deferred to the guest entry at 300.  Preempted keeps
    # what the sched-out at 160 caused, as in STEADY: legacy 5 (3 redundant),
    # vcpu_run and deferred 1 (the switch-in at 200 finds the registers
    # valid: kworker is a kernel thread).
    trace = tmp_path / "inferred.txt"
    text = ("\n".join(INFERRED_LINES) + "\n").encode()
    trace.write_bytes(text)
    dataset = tmp_path / "ds"
    from ingest import ingest_traces
    from pipeline.orchestrate import replay_dataset

    ingest_traces([str(trace)], dataset)
    replay_dataset(dataset, cost_model=golden_cost_model())
    i = f"inferred-{hashlib.sha256(text).hexdigest()[:12]}"
    con = queries.connect(dataset)
    assert con.execute(
        "SELECT preemptions, blocks, other_sched_outs, inferred_switch_ins FROM runs"
    ).fetchall() == [(1, 0, 1, 1)]
    assert rows(dataset, "preemption_cost") == [
        (i, "legacy", "preempted", 1, 5, 3, 0.5, 5 / 1, 500.0 / 1),
        (i, "legacy", "other", 1, 6, 4, 0.6, 6 / 1, 600.0 / 1),
        (i, "vcpu_run", "preempted", 1, 1, 0, 0.1, 1 / 1, 100.0 / 1),
        (i, "vcpu_run", "other", 1, 2, 0, 0.2, 2 / 1, 200.0 / 1),
        (i, "deferred", "preempted", 1, 1, 0, 0.1, 1 / 1, 100.0 / 1),
        (i, "deferred", "other", 1, 2, 0, 0.2, 2 / 1, 200.0 / 1),
    ]


def test_preemption_cost_needs_sched_out_state(golden, tmp_path):
    # A dataset replayed before fpu_ops had sched_out_line and sched_out_state:
    # the view gives them as NULL, which would read as no operation at all.
    import shutil

    old = tmp_path / "old"
    shutil.copytree(golden, old)
    for part in old.glob("fpu_ops/*/*/*/*.parquet"):
        pl.read_parquet(part).drop("sched_out_line", "sched_out_state").write_parquet(part)
    with pytest.raises(queries.QueryError, match="no sched_out_state"):
        queries.run(old, "preemption_cost")
    assert queries.run(old, "policy_summary").height == 6  # the other queries still run


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


# -- the dashboard's queries (issue 6) ------------------------------------------------


def test_ops_breakdown(golden):
    # STEADY, the counts of test_policy_summary split by need.  legacy's 3P + k
    # = 10 redundant: SU 2P = 6 (a save at each sched-out after the put's
    # restore, and at each re-entry after it) and RU P + k = 4 (the puts'
    # restores and the eager restore at the switch-in by fpu-hog); SU 8 - 6 = 2
    # and RU 6 - 4 = 2 needed (KVM_RUN's entry and exit, A and B).  vcpu_run
    # and deferred: nothing redundant.  Every operation costs 100 ns.
    b = 2688  # bytes per operation
    steady = [r for r in rows(golden, "ops_breakdown") if r[0] == S]
    assert steady == [
        (S, "legacy", "save", "user", False, 2, 2 * b, 0.2, 100 * 2 / 24),
        (S, "legacy", "save", "user", True, 6, 6 * b, 0.6, 100 * 6 / 24),
        (S, "legacy", "save", "guest", False, 5, 5 * b, 0.5, 100 * 5 / 24),
        (S, "legacy", "restore", "user", False, 2, 2 * b, 0.2, 100 * 2 / 24),
        (S, "legacy", "restore", "user", True, 4, 4 * b, 0.4, 100 * 4 / 24),
        (S, "legacy", "restore", "guest", False, 5, 5 * b, 0.5, 100 * 5 / 24),
        (S, "vcpu_run", "save", "user", False, 2, 2 * b, 0.2, 100 * 2 / 12),
        (S, "vcpu_run", "save", "guest", False, 5, 5 * b, 0.5, 100 * 5 / 12),
        (S, "vcpu_run", "restore", "user", False, 2, 2 * b, 0.2, 100 * 2 / 12),
        (S, "vcpu_run", "restore", "guest", False, 3, 3 * b, 0.3, 100 * 3 / 12),
        (S, "deferred", "save", "user", False, 2, 2 * b, 0.2, 100 * 2 / 12),
        (S, "deferred", "save", "guest", False, 5, 5 * b, 0.5, 100 * 5 / 12),
        (S, "deferred", "restore", "user", False, 2, 2 * b, 0.2, 100 * 2 / 12),
        (S, "deferred", "restore", "guest", False, 3, 3 * b, 0.3, 100 * 3 / 12),
    ]


def test_ops_breakdown_sums_to_the_policy_summary(golden):
    cells = queries.run(golden, "ops_breakdown")
    totals = cells.group_by("source", "policy").agg(pl.col("ops").sum(), pl.col("bytes").sum())
    summary = queries.run(golden, "policy_summary").select("source", "policy", "ops", "bytes")
    assert totals.sort("source", "policy").equals(summary.sort("source", "policy"))


def test_ops_per_run_of_complete_runs(golden):
    # ROUGH's three runs are all cut: none counted.  STEADY: A's run does
    # 4 + 5P + k = 20 operations under legacy, 4 + P + k = 8 under the others;
    # B's plain run 4.
    assert rows(golden, "ops_per_run") == [
        (S, policy, ops, 1, 50.0, cum)
        for policy, a_ops in (("legacy", 20), ("vcpu_run", 8), ("deferred", 8))
        for ops, cum in ((4, 50.0), (a_ops, 100.0))
    ]


def test_ops_per_run_with_incomplete_runs(golden):
    # ROUGH: run 0 holds the 2 operations at its end, run 1 its 4, run 2 the
    # 2 of its load (the migration's 2 are outside any run): buckets 2 (2 runs)
    # and 4 (1 run), under every policy.
    rough = [r for r in rows(golden, "ops_per_run", include_incomplete=True) if r[0] == R]
    assert rough == [
        (R, policy, ops, runs, 100 * runs / 3, 100 * cum / 3)
        for policy in ("legacy", "vcpu_run", "deferred")
        for ops, runs, cum in ((2, 2, 2), (4, 1, 3))
    ]


def test_thread_states(golden):
    # STEADY, A (CPU 0): in KVM_RUN from its first line (100 µs) to its first
    # sched-out (160, R: preempted until kworker switches it back in at 300),
    # blocked 410 (S) -> 500, preempted 560 (R+) -> 700, in KVM_RUN to 812,
    # where the run and the trace end.  B never switches: on CPU 1 (its run's
    # CPU) from the trace's first instant, in userspace but for its run 200 -> 261.
    # ROUGH, C never switches either: CPU 1 (run 0's), runs 0 (cut, from the
    # trace's start at 40), 1 (100 -> 161) and 2 (300 -> the end at 302).
    # Times in ns after 5123 s (STEADY) and 200 s (ROUGH).
    def r(src, cpu, pid, comm, state, start_us, end_us, base_s, first_us):
        start, end = (base_s * 10**9 + us * 1000 for us in (start_us, end_us))
        ms = ((us - first_us) * 1000 / 1000000 for us in (start_us, end_us))
        return (src, cpu, pid, comm, state, start, end, *ms)

    c, a, b = "CPU 1/KVM", "CPU 0/KVM", "CPU 1/KVM"
    assert rows(golden, "thread_states") == [
        r(R, 1, 4400, c, "kvm_run", 40, 61, 200, 40),
        r(R, 1, 4400, c, "user", 61, 100, 200, 40),
        r(R, 1, 4400, c, "kvm_run", 100, 161, 200, 40),
        r(R, 1, 4400, c, "user", 161, 300, 200, 40),
        r(R, 1, 4400, c, "kvm_run", 300, 302, 200, 40),
        r(S, 0, 4321, a, "kvm_run", 100, 160, 5123, 100),
        r(S, 0, 4321, a, "preempted", 160, 300, 5123, 100),
        r(S, 0, 4321, a, "kvm_run", 300, 410, 5123, 100),
        r(S, 0, 4321, a, "blocked", 410, 500, 5123, 100),
        r(S, 0, 4321, a, "kvm_run", 500, 560, 5123, 100),
        r(S, 0, 4321, a, "preempted", 560, 700, 5123, 100),
        r(S, 0, 4321, a, "kvm_run", 700, 812, 5123, 100),
        r(S, 1, 4322, b, "user", 100, 200, 5123, 100),
        r(S, 1, 4322, b, "kvm_run", 200, 261, 5123, 100),
        r(S, 1, 4322, b, "user", 261, 812, 5123, 100),
    ]
    only = queries.run(golden, "thread_states", source=S)
    assert only["source"].unique().to_list() == [S] and only.height == 10


def test_op_marks(golden):
    # STEADY under vcpu_run, in time order: A's KVM_RUN entry at 100 (ioctl
    # entry: save user, restore guest), its three sched-outs (save guest each;
    # only the R+ one's switch-in by a user task needs a restore at 700), B's
    # run 200 -> 260, and A's exit at 811.  t_ms counts from the first event (100).
    steady = [r[2:10] for r in rows(golden, "op_marks", policy="vcpu_run") if r[0] == S]
    ns = 5123 * 10**9

    def m(pid, cpu, us, op, ctx, trigger):
        return (pid, cpu, ns + us * 1000, (us - 100) * 1000 / 1000000, op, ctx, trigger, False)

    assert steady == [
        m(4321, 0, 100, "save", "user", "ioctl_entry"),
        m(4321, 0, 100, "restore", "guest", "ioctl_entry"),
        m(4321, 0, 160, "save", "guest", "sched_out"),
        m(4322, 1, 200, "save", "user", "ioctl_entry"),
        m(4322, 1, 200, "restore", "guest", "ioctl_entry"),
        m(4322, 1, 260, "save", "guest", "ioctl_exit"),
        m(4322, 1, 260, "restore", "user", "ioctl_exit"),
        m(4321, 0, 410, "save", "guest", "sched_out"),
        m(4321, 0, 560, "save", "guest", "sched_out"),
        m(4321, 0, 700, "restore", "guest", "sched_in"),
        m(4321, 0, 811, "save", "guest", "ioctl_exit"),
        m(4321, 0, 811, "restore", "user", "ioctl_exit"),
    ]
    everything = queries.run(golden, "op_marks")
    assert everything.height == 24 + 12 + 12 + 3 * 10  # STEADY's three policies, ROUGH's
    assert queries.run(golden, "op_marks", source=R, policy="legacy").height == 10


def test_cpu_op_buckets(golden):
    # STEADY under legacy in 0.25 ms buckets from 100 µs: CPU 0 (A) holds
    # [100, 350): entry 2 + sched-out at 160 (3) + re-entry at 306 (2) = 7,
    # saves 4 (SU 100, SG 160, SU 160, SU 306), redundant 3 (SU, RU at 160;
    # SU at 306); [350, 600): sched-out at 410 (3), re-entry 506 (2), sched-out
    # 560 (3) = 8, saves 5, redundant 5; [600, 850): switch-in restore at 700,
    # re-entry 706 (2), exit 811 (2) = 5, saves 2, redundant 2.  CPU 1 (B): 4.
    legacy = [r for r in rows(golden, "cpu_op_buckets", bucket_ms=0.25) if r[:2] == (S, "legacy")]
    assert legacy == [
        (S, "legacy", 0, 0, 0.0, 7, 4, 3, 0.7),
        (S, "legacy", 0, 1, 0.25, 8, 5, 5, 0.8),
        (S, "legacy", 0, 2, 0.5, 5, 2, 2, 0.5),
        (S, "legacy", 1, 0, 0.0, 4, 2, 0, 0.4),
    ]
    # The default 10 ms bucket holds a whole source per CPU: ROUGH's 10
    # operations are 3 on CPU 0 (the switch-in's restore and run 2's load)
    # and 7 on CPU 1, in every policy.
    assert [r for r in rows(golden, "cpu_op_buckets", source=R) if r[1] == "deferred"] == [
        (R, "deferred", 0, 0, 0.0, 3, 1, 0, 300 / 1000),
        (R, "deferred", 1, 0, 0.0, 7, 4, 0, 700 / 1000),
    ]


def test_validation(golden):
    # Both traces were recorded under deferred, have kvm_fpu lines but no
    # x86_fpu events, so only the kvm_fpu loads and unloads are compared:
    # STEADY's A and B each load once and unload once; ROUGH's C twice each
    # (run 0's unload, run 1's load and unload, run 2's load).
    def v(src, pid, comm, check, n):
        return (src, "deferred", pid, comm, check, n, n, 0, 100.0, None)

    assert rows(golden, "validation") == [
        v(R, 4400, "CPU 1/KVM", "kvm_fpu_load", 2),
        v(R, 4400, "CPU 1/KVM", "kvm_fpu_unload", 2),
        v(S, 4321, "CPU 0/KVM", "kvm_fpu_load", 1),
        v(S, 4321, "CPU 0/KVM", "kvm_fpu_unload", 1),
        v(S, 4322, "CPU 1/KVM", "kvm_fpu_load", 1),
        v(S, 4322, "CPU 1/KVM", "kvm_fpu_unload", 1),
    ]


def test_validation_of_a_dataset_replayed_before_validation_existed(golden, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(golden, old)
    shutil.rmtree(old / "validation")
    with pytest.raises(queries.QueryError, match="has no validation table yet") as err:
        queries.run(old, "validation")
    assert f"`fpureplay replay {old}` writes it" in str(err.value)


# -- the migration audit (issue 10) -----------------------------------------------------------


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> Path:
    """tests/audit_traces.py's MIGRATE, ingested and audited (no replay needed)."""
    from ingest import ingest_traces
    from pipeline.audit import audit_dataset
    from tests.audit_traces import MIGRATE

    root = tmp_path_factory.mktemp("audited")
    (root / "migrate.txt").write_text(MIGRATE)
    ingest_traces([str(root / "migrate.txt")], root / "ds")
    audit_dataset(root / "ds")
    return root / "ds"


def test_fpu_state_access(audited):
    # MIGRATE's calls (tests/audit_traces.py): times in ms since its first event
    # (100.000100 s); 0, 5 and 6 lie inside run 0 (lines 4-10) or run 1 (22-30).
    from tests.audit_traces import MIGRATE

    src = f"migrate-{hashlib.sha256(MIGRATE.encode()).hexdigest()[:12]}"
    got = rows(audited, "fpu_state_access")
    assert [(r[0], r[1], r[2], r[3], r[23], r[24]) for r in got] == [
        (src, 0, 5, 6, "violation", True),
        (src, 1, 7, 14, "ok", False),
        (src, 2, 15, 16, "ok", False),
        (src, 3, 17, 18, "unknown_vcpu", False),
        (src, 4, 19, 20, "ok", False),
        (src, 5, 23, 24, "violation", True),
        (src, 6, 26, 27, "violation", True),
        (src, 7, 32, 37, "ok", False),
    ]
    flagged = [r[:23] for r in rows(audited, "fpu_state_access", flagged=True)]
    g, s_, lm = "KVM_GET_XSAVE", "KVM_SET_XSAVE", "live_migration"
    regs = ("registers", "registers", "registers", "legacy,vcpu_run,deferred")
    assert flagged == [
        # call 0: 110 -> 112 µs, 2 µs, no wait, in the run that returns at line 10
        (src, 0, 5, 6, 4330, lm, g, 5, 4321, "CPU 0/KVM", "unique_fd", "other_thread",
         10000 / 1000000, 12000 / 1000000, 2000 / 1000, 0 / 1000, True, 10, True, *regs),
        # call 5: a write, 200 -> 204 µs, in run 1 (returns at line 30)
        (src, 5, 23, 24, 4330, lm, s_, 5, 4321, "CPU 0/KVM", "unique_fd", "other_thread",
         100000 / 1000000, 104000 / 1000000, 4000 / 1000, 0 / 1000, True, 30, True, *regs),
        # call 6: 212 -> 214 µs, the vCPU preempted: stale only under vcpu_run
        (src, 6, 26, 27, 4330, lm, g, 5, 4321, "CPU 0/KVM", "unique_fd", "other_thread",
         112000 / 1000000, 114000 / 1000000, 2000 / 1000, 0 / 1000, True, 30, True,
         "memory", "task_fpstate", "memory", "vcpu_run"),
    ]  # fmt: skip
    waited = queries.run(audited, "fpu_state_access").filter(pl.col("call_idx") == 1)
    assert waited.select("wait_us", "duration_us", "in_run_at_enter", "inside_run").row(0) == (
        34000 / 1000, 38000 / 1000, True, False)  # fmt: skip
    assert queries.run(audited, "fpu_state_access", source="other").height == 0
