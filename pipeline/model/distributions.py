"""Seeded random draws for the model, cheap enough for a per-event Python loop.

numpy's Generator is fast per array and slow per scalar, so standard
exponentials and uniforms are drawn in batches and handed out one by one
through C-level iterators (``Draws.e()`` and ``Draws.u()`` cost one call each).
All draws of a simulation come from one :class:`Draws` in event order, so the
same seed and parameters give the same numbers; the vectorised parts (in-kernel
exits) use a sibling generator, so switching trace content on or off never
changes the schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain

import numpy as np

_BATCH = 1 << 15


def _stream(batch: Callable[[int], np.ndarray]) -> Callable[[], float]:
    """An endless draw-one function over batches from ``batch``."""
    return chain.from_iterable(iter(lambda: batch(_BATCH).tolist(), None)).__next__


class Draws:
    """Batched scalar draws from one numpy Generator."""

    __slots__ = ("e", "u")

    def __init__(self, rng: np.random.Generator) -> None:
        #: a standard exponential (mean 1)
        self.e = _stream(rng.standard_exponential)
        #: a uniform in [0, 1)
        self.u = _stream(rng.random)

    def uniform(self) -> float:
        """A uniform in [0, 1)."""
        return self.u()

    def exp_ns(self, mean_ns: float) -> int:
        """``exp``: exponential with mean ``mean_ns``, in whole ns (at least 1)."""
        return int(mean_ns * self.e()) + 1

    def lat_ns(self, mean_ns: float) -> int:
        """``lat``: half the mean fixed plus an exponential with the other half as mean."""
        return int(0.5 * mean_ns * (1.0 + self.e())) + 1

    def gap_ns(self, rate_hz: float) -> int:
        """Time to the next event of a Poisson process at ``rate_hz`` (huge when the rate is 0)."""
        if rate_hz <= 0:
            return 1 << 62
        return int(1e9 / rate_hz * self.e()) + 1

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        return int(self.u() * n)

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return p > 0 and self.u() < p


def generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(the schedule's generator, the vectorised expansion's generator) for ``seed``."""
    sim, expand = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(sim), np.random.default_rng(expand)
