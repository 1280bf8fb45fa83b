# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo lint install system-deps bench clean fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dask]'
	touch $(STAMP)

install: $(STAMP)

# trace-cmd turns .dat captures into text; tests of that path skip without it.
# chromium + chromium-driver (Debian's, never a downloaded browser) run the
# dashboard's browser tests; they skip, saying why, without them.
system-deps:
	@command -v trace-cmd >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq trace-cmd) >/dev/null 2>&1 \
	      || echo "note: could not install trace-cmd; .dat tests will skip" >&2; \
	  else echo "note: trace-cmd not installed; .dat tests will skip" >&2; fi; }
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
	      || echo "note: could not install chromium; browser tests will skip" >&2; \
	  else echo "note: chromium/chromedriver not installed; browser tests will skip" >&2; fi; }

lint: install
	$(BIN)/ruff check .

test: install system-deps lint
	$(BIN)/python -m pytest

demo: install
	$(BIN)/fpureplay demo -o demo-out

bench: install
	$(BIN)/python bench/ingest_bench.py

# Coverage-guided fuzzing of the input formats (fuzz/README.md), FUZZ_SECONDS
# per target; not part of `test`.  Crashers land in build/fuzz/TARGET/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= tracefs trace-cmd perf-script auto

fuzz: install
	$(BIN)/pip install --quiet -e '.[fuzz]'
	@status=0; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t: $(FUZZ_SECONDS) s"; \
	  $(BIN)/python -m fuzz.run $$t --seconds $(FUZZ_SECONDS) || status=1; \
	done; exit $$status

clean:
	rm -rf $(VENV) demo-out .pytest_cache
