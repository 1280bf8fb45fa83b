"""The model's library entry point: simulate once, then write any format, era or the dataset.

>>> from pipeline.model.api import generate
>>> m = generate("pingpong", seed=1, duration_ms=2)
>>> m.truth()["vcpus"][0]["comm"], m.policy, m.era.name
('CPU 0/KVM', 'deferred', '6.18')

The schedule does not depend on the recording policy, the era or the
output format (FPU operations take no simulated time), so one
:class:`Model` can be written as several traces of the same run.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pipeline.model import params as P
from pipeline.model.eras import Era, era_for

#: Output formats: two texts and the dataset (fast path).
FORMATS = ("tracefs", "perf-script", "dataset")
POLICIES = ("legacy", "vcpu_run", "deferred")
_FLAVOUR = {"tracefs": "tracefs", "perf-script": "perf"}


@dataclass
class Model:
    """One simulation and everything derived from it (lazily)."""

    preset: str
    seed: int
    duration_ns: int
    values: dict[str, Any]
    policy: str
    era: Era
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def schedule(self):
        """The simulated host (pipeline.model.schedule.Schedule)."""
        from pipeline.model.simulation import simulate

        return simulate(self.values, self.seed, self.duration_ns)

    @cached_property
    def _ops(self):
        from pipeline.model.truth import all_policies

        return all_policies(self.schedule, self.policy)

    @property
    def ops(self):
        """Per policy, the vCPU threads' operations (truth.Ops)."""
        return self._ops[0]

    @cached_property
    def lines(self):
        """The recording policy's trace lines in file order (lines.LineTable)."""
        from pipeline.model import lines

        v = self.values
        return lines.build(
            self.schedule, self._ops[1], self.policy, self.era,
            entry_events=bool(v["entry_events"]), fpu_events=bool(v["fpu_events"]),
            ioctl_events=bool(v["ioctl_events"]), wakeup_events=bool(v["wakeup_events"]),
            exit_hz=v["exit_hz"], exit_us=v["exit_us"],
        )  # fmt: skip

    def recorded_as(self, policy: str, kernel_era: str | None = None) -> Model:
        """The same simulated run, as recorded by a kernel running ``policy`` (era default).

        The schedule (and so the truth of every policy) is shared, not re-simulated.
        """
        other = Model(self.preset, self.seed, self.duration_ns, self.values, policy,
                      era_for(policy, kernel_era))  # fmt: skip
        if "schedule" in self.__dict__:
            other.__dict__["schedule"] = self.__dict__["schedule"]
        return other

    def identity(self) -> dict[str, Any]:
        """What determines the output: seed, preset, parameters, duration."""
        return {
            "seed": self.seed,
            "preset": self.preset,
            "duration_ns": self.duration_ns,
            "params": P.canonical(self.values),
        }

    def truth(self) -> dict[str, Any]:
        """The ground-truth document (architecture.md: ``TRACE.truth.json``)."""
        from pipeline.model.truth import truth_document

        extra: dict[str, Any] = {"kernel_era": self.era.name, "trace_lines": len(self.lines)}
        if self.values.get("migration_ms", 0) > 0:
            from pipeline.model import migration

            # what the migration audit must find in this trace (pipeline.audit)
            extra["migration"] = migration.truth(self.schedule, self.policy)
        return truth_document(
            self.schedule, self.ops, seed=self.seed, preset=self.preset,
            params=P.canonical(self.values), policy=self.policy, extra=extra,
        )  # fmt: skip

    def text(self, fmt: str) -> bytes:
        """The trace as ``fmt`` (tracefs or perf-script) text."""
        from pipeline.model.text import render

        return render(self.schedule, self.lines, self.era, _FLAVOUR[fmt], self.values["xstate"])

    def events(self, *, args: bool = True):
        """The `events` table of the trace (the dataset fast path), a polars frame."""
        return self._events(args).frame

    def _events(self, args: bool):
        """The `events` rows (frame.Events: the polars frame and the table for the writer)."""
        from pipeline.model.frame import build_events

        return build_events(self.schedule, self.lines, self.era, self.values["xstate"], args=args)

    def write(self, output: Path, fmt: str, *, force: bool = False, args: bool = True) -> str:
        """Write the trace (or dataset) and ``OUTPUT.truth.json``; returns what happened.

        Each is written aside and renamed into place (:func:`_write_bytes`,
        a staged dataset), so neither is ever seen half written.  The truth
        is computed before anything is written, which leaves only the moment
        between the two renames for a kill to leave a new trace beside the
        old truth.
        """
        output = Path(output)
        truth = (json.dumps(self.truth(), indent=1) + "\n").encode()
        status = "written"
        if fmt == "dataset":
            from pipeline.model.frame import source_entry, write_dataset

            events = self._events(args)
            entry = source_entry(
                events.frame, path=f"simulated:{output.name}", identity=self.identity(),
                era=self.era, policy=self.policy,
            )  # fmt: skip
            status = write_dataset(output, events, entry, force=force)
        else:
            data = self.text(fmt)
            output.parent.mkdir(parents=True, exist_ok=True)
            _write_bytes(output, data)
        _write_bytes(output.with_name(output.name + ".truth.json"), truth)
        return status


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` whole or not at all, compressed when the name ends in .gz or .zst.

    Compression is deterministic (no gzip timestamp), so the same model
    writes the same bytes.
    """
    from ingest.dataset import atomic_write

    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6, mtime=0)
    elif path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdCompressor(level=3).compress(data)
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def generate(
    preset: str = P.DEFAULT_PRESET,
    *,
    seed: int = 0,
    duration_ms: float = 1000.0,
    policy: str = "deferred",
    kernel_era: str | None = None,
    params: Iterable[str] = (),
    values: Mapping[str, Any] | None = None,
) -> Model:
    """A Model for ``preset`` with ``params`` (``key=value``) applied; nothing runs yet.

    ``values`` (a full parameter mapping, e.g. from a sweep) replaces the
    preset and ``params``.  ValueError (ParamError) for bad input.
    """
    if policy not in POLICIES:
        raise P.ParamError(f"unknown policy {policy!r}; expected {', '.join(POLICIES)}")
    era = era_for(policy, kernel_era)
    resolved = dict(values) if values is not None else P.resolve(preset, params)
    if duration_ms <= 0:
        raise P.ParamError("--duration-ms must be positive")
    return Model(preset, int(seed), round(duration_ms * 1e6), resolved, policy, era)
