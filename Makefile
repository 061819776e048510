# OpenRDU: every target depends on `setup`, so a fresh clone needs nothing else.
PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
# Quiet pip: errors only (-qq; a pip.conf naming index folders that do not exist made -q print a warning per
# package, and setuptools' editable-install notice is a warning too), no progress bars, no version nag, no
# root-user notice.
PIP_INSTALL := PIP_ROOT_USER_ACTION=ignore $(PY) -m pip install -qq --disable-pip-version-check --no-input --progress-bar off
UNITS      := $(shell $(PY) -m cosim list 2>/dev/null)

.PHONY: setup test bench demo decode coe experts clean sim-%

setup: $(STAMP)

$(STAMP): pyproject.toml
	@# Debian packages, not PyPI ones: lz4.h for Verilator's FST wave writer, and Clang, which compiles the
	@# Verilator models with about a third less CPU than GCC, into faster code (cosim/harness.py). Each is installed
	@# on its own, apt's output kept out of the log unless it fails.
	@updated=; for pkg in liblz4-dev clang; do \
	  case $$pkg in \
	    liblz4-dev) echo '#include <lz4.h>' | cc -E -x c - -o /dev/null 2>/dev/null && continue; why="for WAVES=1";; \
	    clang) command -v clang++ >/dev/null && continue; why="for faster Verilator builds and models; c++ otherwise";; \
	  esac; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "setup: installing $$pkg (apt)"; log=$$(mktemp); \
	    if { [ -n "$$updated" ] || { apt-get update -qq && updated=1; }; } >"$$log" 2>&1 && \
	       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >>"$$log" 2>&1; then :; else \
	      tail -n 5 "$$log"; echo "warning: apt-get did not install $$pkg ($$why); going on without"; \
	    fi; rm -f "$$log"; \
	  else echo "warning: $$pkg is not installed ($$why): install the Debian package"; fi; \
	done
	@echo "setup: creating $(VENV) with $(PYTHON_SYS)"
	@$(PYTHON_SYS) -m venv $(VENV)
	@echo "setup: installing OpenRDU and its dependencies (pip, quiet; a minute or two)"
	@$(PIP_INSTALL) --upgrade pip
	@$(PIP_INSTALL) -e .
	@touch $(STAMP)
	@echo "setup: done"

test: setup
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

sim-%: setup
	$(PY) -m cosim run $* $(if $(WAVES),--waves)

bench: setup
	$(PY) -m bench

demo: setup
	$(VENV)/bin/openrdu demo

# The main job: compile the default model and decode on the co-simulated chip, fused beside op-by-op.
BACKEND ?= rtl
TOKENS  ?= 16
PROMPT  ?= def __init__(self
decode: setup
	$(VENV)/bin/openrdu decode --checkpoint models/pystdlib-tiny --prompt '$(PROMPT)' --max-new-tokens $(TOKENS) \
	  --backend $(BACKEND) --compare

# Composition of Experts: a short trace (tools/coe-trace.jsonl) on the co-simulated chip, beside the host-link
# baseline; the trained library of tools/train_experts.py when built, else an untrained one.
EXPERTS ?= $(if $(wildcard build/experts/manifest.json),build/experts,build/coe-untrained)
COE_BACKEND ?= rtl
build/coe-untrained/manifest.json: | setup
	$(PY) -c "from sw.coe.library import write_untrained as w; w('build/coe-untrained', 'models/pystdlib-tiny', experts=8)"

coe: setup $(if $(filter build/coe-untrained,$(EXPERTS)),build/coe-untrained/manifest.json)
	$(VENV)/bin/openrdu coe --experts $(EXPERTS) --requests tools/coe-trace.jsonl --backend $(COE_BACKEND) \
	  --cache-slots 2 --baseline host

# CoE experts and their router (tools/train_experts.py, about 25 minutes of one core), retrained only when the script or the
# base model changes.
EXPERTS_OUT := build/experts
experts: $(EXPERTS_OUT)/.stamp
$(EXPERTS_OUT)/.stamp: tools/train_experts.py tools/train_default_model.py models/pystdlib-tiny/model.safetensors \
  models/pystdlib-tiny/tokenizer.json | $(STAMP)
	nice -n 10 $(PY) tools/train_experts.py --out $(EXPERTS_OUT)
	@touch $@

clean:
	rm -rf build .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
