"""The shipped queries, read from the header comment of each ``.sql`` file.

Every query is one file, ``queries/<area>/<name>.sql``, that starts with a
header comment in this shape (docs/queries.md has the full grammar)::

    -- timeline: FPU operations and their cost per policy per time bucket.
    --
    -- Free text: what it answers, how to read it, caveats.
    --
    -- Parameters:
    --   bucket_ms (DOUBLE > 0, default 10)  width of a bucket, in milliseconds
    --
    -- Columns:
    --   source        trace source id
    --   bucket        bucket number, 0 for the one holding the source's first
    --                 event (a deeper-indented line continues the entry above)

The header is the single source of truth for ``--list``, for parameter
checking and for docs/queries.md, so it cannot drift from what the runner
enforces.  Parsing needs no database: ``fpureplay query --list`` stays fast.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent

#: The views shipped SQL may read (registered by queries.tables).
VIEWS = ("events", "rejects", "runs", "fpu_ops", "validation", "audit", "sources")

#: Parameter types a header may declare, with what a value must be.
PARAM_TYPES = {
    "BIGINT": "an integer",
    "DOUBLE": "a number",
    "VARCHAR": "a string",
    "BOOLEAN": "true or false",
}

_TITLE = re.compile(r"^-- (?P<name>[a-z][a-z0-9_]*): (?P<text>\S.*)$")
_ENTRY = re.compile(r"^--   (?P<name>[a-z_][a-z0-9_]*)(?P<rest>\s.*)?$")
_MORE = re.compile(r"^--    +(?P<text>\S.*)$")
_PARAM = re.compile(
    r"^\((?P<type>[A-Z]+)"
    r"(?:\s*(?P<op>>=|>)\s*(?P<bound>-?\d+(?:\.\d+)?))?"
    r"(?:,\s*default\s+(?P<default>[^)]+?))?\)\s+(?P<text>\S.*)$"
)
# A named parameter as DuckDB binds it; Spark SQL spells it :name.
PARAM_REF = re.compile(r"\$([a-z_][a-z0-9_]*)")
# The views a query reads: a view name right after FROM or JOIN.
_READS = re.compile(r"\b(?:FROM|JOIN)\s+(" + "|".join(VIEWS) + r")\b", re.I)


class CatalogError(Exception):
    """A shipped .sql file whose header breaks the grammar (a bug, caught by the tests)."""


@dataclass(frozen=True)
class Param:
    """One parameter of a query, as its header declares it."""

    name: str
    type: str  # BIGINT, DOUBLE, VARCHAR or BOOLEAN
    description: str
    default: Any = None  # already coerced to the type; None: required
    required: bool = True
    op: str | None = None  # '>' or '>=' with bound: the accepted range
    bound: float | None = None

    def type_text(self) -> str:
        """``DOUBLE > 0``: the type and the accepted range."""
        if self.op is None:
            return self.type
        return f"{self.type} {self.op} {_number(self.bound)}"

    def default_text(self) -> str | None:
        """The default as SQL would write it (``'legacy'``, ``true``); None if required."""
        return None if self.required else _show(self.default)

    def signature(self) -> str:
        """``bucket_ms DOUBLE > 0 = 10``: how --list shows it."""
        text = f"{self.name} {self.type_text()}"
        return text if self.required else f"{text} = {self.default_text()}"

    def coerce(self, value: Any) -> Any:
        """``value`` (a Python value, or the text of a --param) as this type.

        Raises ValueError with a message fit for the user.
        """
        want = f"{self.name} must be {PARAM_TYPES[self.type]}"
        if self.type == "VARCHAR":
            if not isinstance(value, str):
                raise ValueError(f"{want}, not {value!r}")
            return value
        if self.type == "BOOLEAN":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _BOOLS:
                return _BOOLS[value.lower()]
            raise ValueError(f"{want}, not {value!r}")
        # bool is an int in Python; True as a bucket width is a mistake.
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{want}, not {value!r}")
        if self.type == "BIGINT":
            number: float = _parse_int(value, want)
        else:
            number = _parse_float(value, want)
        if self.op is not None and self.bound is not None:
            ok = number > self.bound if self.op == ">" else number >= self.bound
            if not ok:
                raise ValueError(
                    f"{self.name} must be {self.op} {_number(self.bound)}, not {value}"
                )
        return number


_BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _parse_int(value: int | float | str, want: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError(f"{want}, not {value!r}")
    if re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    raise ValueError(f"{want}, not {value!r}")


def _parse_float(value: int | float | str, want: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{want}, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{want}, not {value!r}")
    return number


def _number(value: float | None) -> str:
    assert value is not None
    return str(int(value)) if float(value).is_integer() else str(value)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


@dataclass(frozen=True)
class Column:
    """One documented output column."""

    name: str
    description: str


@dataclass(frozen=True)
class Query:
    """A shipped query: its file, its header and its SQL text."""

    name: str
    area: str
    path: Path
    description: str  # the one-line summary on the title line
    notes: str  # the free text between the title and the sections
    params: tuple[Param, ...]
    columns: tuple[Column, ...]
    sql: str = field(repr=False)

    @property
    def tables(self) -> tuple[str, ...]:
        """The views this query reads, in VIEWS order."""
        found = {m.lower() for m in _READS.findall(self.sql)}
        return tuple(v for v in VIEWS if v in found)

    def param(self, name: str) -> Param | None:
        """The parameter called ``name``, if the query has one."""
        return next((p for p in self.params if p.name == name), None)


def parse(path: Path, area: str | None = None) -> Query:
    """Read one .sql file and its header; CatalogError names what is wrong."""
    text = path.read_text()
    lines = text.splitlines()
    header: list[str] = []
    for line in lines:
        if not line.startswith("--"):
            break
        header.append(line.rstrip())
    where = str(path)
    if not header or not (title := _TITLE.match(header[0])):
        raise CatalogError(f"{where}: the first line must be '-- NAME: what it answers.'")
    if title["name"] != path.stem:
        raise CatalogError(f"{where}: header names {title['name']!r}, file is {path.stem!r}")

    sections: dict[str, list[list[str]]] = {"notes": []}
    current = "notes"
    notes: list[str] = []
    for line in header[1:]:
        if line in ("-- Parameters:", "-- Parameters: none", "-- Columns:"):
            current = line[3:].split(":")[0].lower()
            if current in sections:
                raise CatalogError(f"{where}: two '{current}' sections")
            sections[current] = []
            if line.endswith("none"):
                current = "none"  # an entry after 'Parameters: none' is an error
            continue
        if current == "notes":
            notes.append(line[3:] if line.startswith("-- ") else line[2:])
            continue
        if line == "--":
            continue
        if current != "none" and (entry := _ENTRY.match(line)):
            sections[current].append([entry["name"], (entry["rest"] or "").strip()])
        elif current != "none" and (more := _MORE.match(line)) and sections[current]:
            sections[current][-1][1] += " " + more["text"]
        else:
            raise CatalogError(f"{where}: cannot read header line {line!r}")
    for needed in ("parameters", "columns"):
        if needed not in sections:
            raise CatalogError(f"{where}: the header has no '-- {needed.capitalize()}:' section")

    if not sections["columns"]:
        raise CatalogError(f"{where}: the header documents no column")
    params = tuple(_param(where, name, rest) for name, rest in sections["parameters"])
    columns = []
    for name, rest in sections["columns"]:
        if not rest:
            raise CatalogError(f"{where}: column {name!r} has no description")
        columns.append(Column(name, rest))
    sql = "\n".join(lines[len(header) :]).strip() + "\n"
    return Query(
        name=path.stem,
        area=area or path.parent.name,
        path=path,
        description=title["text"],
        notes="\n".join(notes).strip(),
        params=params,
        columns=tuple(columns),
        sql=sql,
    )


def _param(where: str, name: str, rest: str) -> Param:
    m = _PARAM.match(rest)
    if not m or m["type"] not in PARAM_TYPES:
        raise CatalogError(
            f"{where}: parameter {name!r} must read "
            "'NAME (TYPE[ > N][, default V])  description' with TYPE one of "
            + ", ".join(PARAM_TYPES)
        )
    bound = float(m["bound"]) if m["bound"] is not None else None
    param = Param(name, m["type"], m["text"], op=m["op"], bound=bound)
    if m["default"] is None:
        return param
    raw = m["default"].strip()
    if param.type == "VARCHAR":
        if not (len(raw) >= 2 and raw[0] == raw[-1] == "'"):
            raise CatalogError(f"{where}: VARCHAR default of {name!r} must be quoted: '...'")
        raw = raw[1:-1]
    try:
        default = param.coerce(raw)
    except ValueError as exc:
        raise CatalogError(f"{where}: default of {name!r}: {exc}") from None
    return Param(name, param.type, param.description, default, False, param.op, param.bound)


@cache
def catalog() -> dict[str, Query]:
    """Every shipped query by name, sorted by area then name."""
    found: dict[str, Query] = {}
    for path in sorted(ROOT.glob("*/*.sql"), key=lambda p: (p.parent.name, p.stem)):
        query = parse(path)
        if query.name in found:
            raise CatalogError(f"{path}: a query named {query.name!r} already exists")
        found[query.name] = query
    return found
