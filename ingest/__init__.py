"""Trace ingest: tracefs, trace-cmd and perf script text into a typed Parquet dataset."""

from ingest.errors import InputError
from ingest.load import ingest_traces, parse_file
from ingest.parse import parse_text

__all__ = ["InputError", "ingest_traces", "parse_file", "parse_text"]
