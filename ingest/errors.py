"""The one error type ingest raises for bad input."""

from __future__ import annotations


class InputError(Exception):
    """Bad input: names the file, the line (when one is to blame) and the reason.

    The CLI prints it as ``path:line: reason`` and exits 2.
    """

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str, int | None]]:
        # Rebuilt from its fields when it crosses a process boundary (a fleet
        # worker's failure), not from the formatted message.
        return (type(self), (self.path, self.reason, self.line))
