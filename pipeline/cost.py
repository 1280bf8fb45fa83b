"""Bytes and nanoseconds per FPU operation.

Bytes: the xstate size of the context saved or restored.  When the trace has
x86_fpu events, a vCPU thread's guest and user contexts each take the size of
the ``xfeatures`` last logged for that context (``xstate_bytes``, computed by
ingest), or the first one logged when the op precedes every such event;
otherwise the configured CPU profile's size (sse 576, avx2 832, avx512 2688,
amx 11008 bytes).

Nanoseconds: ``fixed_ns + ns_per_byte * bytes``.  The defaults (20 ns +
0.03 ns/byte) make one save or restore of AVX-512 state (2688 bytes) cost
about 100 ns, the figure the 2017 patch's cover letter gives for an
FPU+xstate load; SSE state then costs ~37 ns and AMX state ~350 ns.
Override per host with constructor arguments or a TOML file::

    [cost]
    fixed_ns = 25.0
    ns_per_byte = 0.035
    cpu_profile = "avx2"
    use_xfeatures = true
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from ingest.xstate import CPU_PROFILES

_FIELDS = {"fixed_ns", "ns_per_byte", "cpu_profile", "profile_bytes", "use_xfeatures"}


@dataclass(frozen=True)
class CostModel:
    """How many bytes and nanoseconds one XSAVE or XRSTOR is taken to cost."""

    fixed_ns: float = 20.0
    ns_per_byte: float = 0.03
    cpu_profile: str = "avx512"
    profile_bytes: int | None = None  # overrides the profile's size
    use_xfeatures: bool = True  # prefer the trace's x86_fpu xfeatures

    def __post_init__(self) -> None:
        if self.cpu_profile not in CPU_PROFILES:
            raise ValueError(
                f"unknown cpu_profile {self.cpu_profile!r}; expected {', '.join(CPU_PROFILES)}"
            )
        if self.fixed_ns < 0 or self.ns_per_byte < 0:
            raise ValueError("fixed_ns and ns_per_byte must not be negative")

    @classmethod
    def default(cls) -> CostModel:
        """The documented default: ~100 ns per AVX-512 save or restore."""
        return cls()

    @classmethod
    def from_toml(cls, path: str | Path) -> CostModel:
        """Read a ``[cost]`` table (or top-level keys) from a TOML file."""
        data = tomllib.loads(Path(path).read_text())
        table = data.get("cost", data)
        unknown = set(table) - _FIELDS
        if unknown:
            raise ValueError(f"unknown cost model keys in {path}: {', '.join(sorted(unknown))}")
        return cls(**table)

    @property
    def default_bytes(self) -> int:
        """Bytes per op when the trace does not say."""
        return self.profile_bytes or CPU_PROFILES[self.cpu_profile]

    def ns(self, nbytes: int) -> float:
        """Cost of one operation moving ``nbytes``."""
        return self.fixed_ns + self.ns_per_byte * nbytes

    def describe(self) -> dict[str, Any]:
        """The model as the manifest records it."""
        d = asdict(self)
        d["default_bytes"] = self.default_bytes
        d["formula"] = "cost_ns = fixed_ns + ns_per_byte * bytes"
        d["bytes_source"] = (
            "x86_fpu xfeatures of the context when logged, else cpu_profile"
            if self.use_xfeatures
            else "cpu_profile"
        )
        d["avx512_op_ns"] = round(self.ns(CPU_PROFILES["avx512"]), 1)
        return d


def apply(ops: pl.DataFrame, evidence: pl.DataFrame | None, model: CostModel) -> pl.DataFrame:
    """Add ``bytes`` and ``cost_ns`` to ``ops`` (columns pid, context, ts_ns).

    ``evidence`` has (pid, context, ts_ns, xbytes): xstate sizes seen in the
    trace for each vCPU thread's contexts.
    """
    default = model.default_bytes
    if model.use_xfeatures and evidence is not None and evidence.height and ops.height:
        ev = evidence.sort("ts_ns")
        ordered = ops["ts_ns"].is_sorted()  # one policy's ops are in trace order
        keyed = ops if ordered else ops.with_row_index("_i").sort("ts_ns")
        # Both sides are sorted by ts_ns (polars cannot verify it per group).
        asof = {"on": "ts_ns", "by": ["pid", "context"], "check_sortedness": False}
        nbytes = keyed.join_asof(ev, strategy="backward", **asof)["xbytes"]
        if nbytes.null_count():  # ops before the context's first evidence: the first one
            nbytes = nbytes.fill_null(keyed.join_asof(ev, strategy="forward", **asof)["xbytes"])
        ops = keyed.with_columns(bytes=nbytes.fill_null(default).cast(pl.Int32))
        if not ordered:
            ops = ops.sort("_i").drop("_i")
    else:
        ops = ops.with_columns(bytes=pl.lit(default, dtype=pl.Int32))
    return ops.with_columns(
        cost_ns=(model.fixed_ns + model.ns_per_byte * pl.col("bytes")).cast(pl.Float64)
    )
