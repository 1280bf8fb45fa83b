"""Coverage-guided fuzzing of the trace input formats (see fuzz/README.md)."""
