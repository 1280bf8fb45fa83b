"""Generated traces parse with zero rejects in every format and era; the fast path equals ingest.

One short simulation of the ``mixed`` preset is written by every recording
policy in the eras that run it, as tracefs and perf-script text.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import polars as pl
import pytest

from ingest.load import ingest_traces, parse_file
from pipeline.model.api import generate

#: (policy, era): each era that runs the policy, covering every format switch
#: (pid width 5.10, flag columns 5.13, kvm_entry/kvm_exit texts, x86_fpu 5.2).
RECORDINGS = [
    ("legacy", "4.14"),
    ("vcpu_run", "4.14"),
    ("vcpu_run", "4.19"),
    ("deferred", "5.4"),
    ("deferred", "5.10"),
    ("deferred", "5.15"),
    ("deferred", "6.9"),
    ("deferred", "6.18"),
]


@functools.cache
def base():
    return generate("mixed", seed=11, duration_ms=25)


@functools.cache
def written(policy: str, era: str, fmt: str, tmp: str) -> tuple[str, int]:
    model = base().recorded_as(policy, era)
    path = f"{tmp}/{policy}-{era}.{fmt}.txt"
    model.write(path, fmt)
    return path, len(model.lines)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("model-formats"))


@pytest.mark.parametrize("fmt", ["tracefs", "perf-script"])
@pytest.mark.parametrize(("policy", "era"), RECORDINGS)
def test_every_line_is_an_event(policy, era, fmt, tmp):
    path, n_lines = written(policy, era, fmt, tmp)
    (report,) = ingest_traces([path], f"{path}.ds")
    entry = report.manifest_entry()
    assert entry["format"] == fmt
    assert (entry["rejects"], entry["events"]) == (0, n_lines)
    assert entry["ts_backwards"] == 0
    # the model's own figures: every vCPU thread logs, every CPU appears
    truth = json.loads(Path(f"{path}.truth.json").read_text())
    assert sorted(entry["vcpu_threads"]) == sorted(v["pid"] for v in truth["vcpus"])
    assert entry["cpus"] == list(range(truth["cpus"]))


@pytest.mark.parametrize(("policy", "era"), RECORDINGS)
def test_fast_path_equals_ingest_of_the_tracefs_text(policy, era, tmp):
    path, _ = written(policy, era, "tracefs", tmp)
    parsed = parse_file(path)
    fast = base().recorded_as(policy, era).events()
    assert fast.schema == parsed.schema
    for column in fast.columns:
        assert fast[column].equals(parsed[column]), column


def _first(path: str, needle: str) -> str:
    with open(path) as f:
        return next(line.rstrip("\n") for line in f if needle in line)


def test_text_layout_follows_the_era(tmp):
    old, _ = written("legacy", "4.14", "tracefs", tmp)
    new, _ = written("deferred", "6.18", "tracefs", tmp)
    mid, _ = written("deferred", "5.10", "tracefs", tmp)
    # pid width 5 then 7, flags 4 then 5 (reference §5.1)
    assert re.match(r"^ +CPU \d/KVM-\d{5} \[\d{3}\] [.\w]{4} +\d+\.\d{6}: kvm_entry: vcpu \d+$",
                    _first(old, "kvm_entry"))  # fmt: skip
    assert re.match(r"^ +CPU \d/KVM-\d{5}   \[\d{3}\] [.\w]{5} ", _first(new, "kvm_entry"))
    assert re.search(r"kvm_entry: vcpu \d+, rip 0x[0-9a-f]+ intr_info 0x00000000 error_code "
                     r"0x00000000$", _first(new, "kvm_entry"))  # fmt: skip
    assert re.search(r"kvm_entry: vcpu \d+, rip 0x[0-9a-f]+$", _first(mid, "kvm_entry"))
    assert re.search(r"kvm_exit: reason \w+ rip 0x[0-9a-f]+ info [0-9a-f]+ [0-9a-f]+$",
                     _first(old, "kvm_exit"))  # fmt: skip
    assert re.search(r"kvm_exit: vcpu \d+ reason \w+ rip 0x[0-9a-f]+ info1 0x[0-9a-f]{16} info2 "
                     r"0x[0-9a-f]{16} intr_info 0x[0-9a-f]{8} error_code 0x00000000$",
                     _first(new, "kvm_exit"))  # fmt: skip
    assert "initialized: 1" in _first(old, "x86_fpu_regs_deactivated")
    assert " load: 1 xfeatures: e7 xcomp_bv: 0" in _first(new, "x86_fpu_regs_deactivated")
    assert _first(new, "sys_ioctl(").endswith(", cmd: 0xae80, arg: 0)")
    assert Path(new).read_text().startswith("# tracer: nop\n#\n")


def test_the_shape_of_a_6_18_trace(tmp):
    """What the real 6.18 captures show (shared/fixtures/real/README.md)."""
    model = base().recorded_as("deferred", "6.18")
    ev = model.events(args=False).with_row_index("i")
    fpu = ev.filter(pl.col("event") == "kvm_fpu")
    before = ev.filter(pl.col("i").is_in((fpu["i"] - 1).implode()))
    # each kvm_fpu is right after an x86_fpu_regs_activated of the same thread (load: 0)
    assert before["event"].unique().to_list() == ["x86_fpu_regs_activated"]
    assert before["pid"].to_list() == fpu["pid"].to_list()
    assert not before["fpu_tif"].any()
    # each x86_fpu_regs_deactivated follows a sched_switch and carries its outgoing pid
    deact = ev.filter(pl.col("event") == "x86_fpu_regs_deactivated")
    sw = ev.filter(pl.col("i").is_in((deact["i"] - 1).implode()))
    assert sw["event"].unique().to_list() == ["sched_switch"]
    assert sw["prev_pid"].to_list() == deact["pid"].to_list()
    # unload right before kvm_userspace_exit; vCPU threads of one VMM share its tgid
    uexit = ev.filter(pl.col("event") == "kvm_userspace_exit")
    prev = ev.filter(pl.col("i").is_in((uexit["i"] - 1).implode()))
    assert prev["event"].unique().to_list() == ["kvm_fpu"] and not prev["fpu_load"].any()
    vcpus = {t.comm.split()[0] for t in model.schedule.tasks if t.role == 5}
    assert vcpus == {"CPU"}
    # inside KVM_RUN a preempted vCPU shows R, a halted one S
    vcpu_out = (pl.col("event") == "sched_switch") & pl.col("prev_comm").str.ends_with("/KVM")
    states = ev.filter(vcpu_out)
    assert set(states["prev_state"].unique().to_list()) == {"R", "S"}


def test_compressed_outputs_read_back(tmp):
    model = base()
    for suffix in (".gz", ".zst"):
        path = f"{tmp}/c.tracefs.txt{suffix}"
        model.write(path, "tracefs")
        assert parse_file(path).height == len(model.lines)


def test_dataset_output(tmp):
    from ingest.dataset import read_manifest

    model = base()
    out = f"{tmp}/ds"
    assert model.write(out, "dataset") == "added"
    assert model.write(out, "dataset") == "already present"
    other = generate("idle", seed=1, duration_ms=5)
    assert other.write(out, "dataset") == "added"
    manifest = read_manifest(out)
    assert [s["format"] for s in manifest["sources"]] == ["simulated", "simulated"]
    first = manifest["sources"][0]
    assert first["model"]["seed"] == 11 and first["model"]["policy"] == "deferred"
    events = pl.read_parquet(f"{out}/events/*/*/*.parquet", hive_partitioning=True)
    assert events.height == len(model.lines) + len(other.lines)
    mine = events.filter(pl.col("source") == first["id"]).drop("source", "host")
    assert mine.equals(model.events())
    assert json.loads(Path(f"{out}.truth.json").read_text())["preset"] == "idle"  # last write
    assert other.write(out, "dataset", force=True) == "added"
    assert len(read_manifest(out)["sources"]) == 1


def test_dataset_refuses_a_directory_that_is_not_one(tmp):
    from ingest.errors import InputError

    Path(f"{tmp}/notes.txt").write_text("x")
    with pytest.raises(InputError, match="exists and is not an fpureplay dataset"):
        base().write(tmp, "dataset")
