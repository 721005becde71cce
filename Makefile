# Entry points (README Quick start and Tests). Each creates .venv and installs what it needs (idempotent).
# setup.py allows version ranges; requirements/tested.txt pins the tested torch / torchrl / tensordict as constraints.
# `make test` is what CI runs (.ci/run): the default suite, the slow stage, then the release check.
PY := .venv/bin/python
TESTED := requirements/tested.txt
HASH := $(shell cat setup.py $(TESTED) | md5sum | cut -c1-8)
CORE := .venv/.core-$(HASH)
TEST := .venv/.test-$(HASH)
SLOW := .venv/.slow-$(HASH)
PYTEST := $(PY) -m pytest -q --durations=15

.PHONY: demo test test-default test-slow release-check bench

$(CORE): setup.py $(TESTED)
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -c $(TESTED) -e .
	touch $@

$(TEST): $(CORE)
	$(PY) -m pip install -q -c $(TESTED) -e ".[test]"
	touch $@

$(SLOW): $(TEST)
	$(PY) -m pip install -q -c $(TESTED) -e ".[test,xland]"
	touch $@

demo: $(CORE)
	$(PY) examples/04_tmaze.py --horizon 10 --run_name demo_tmaze --buffer_dir runs --epochs 30

test: test-default test-slow release-check

# the default suite, on two pytest-xdist workers (one per core; a test file stays on one worker)
test-default: $(TEST)
	$(PYTEST) -n 2 --dist loadfile tests

# the @pytest.mark.slow tests: torchrun DDP (gloo, loopback), Ray collectors, XLand (jax and xminigrid, installed
# here), the soak, long learning runs; on two workers as the default suite
test-slow: $(SLOW)
	$(PYTEST) -n 2 --dist loadfile -m slow tests

# build the sdist and the wheel, install the wheel alone on torch 2.14.1, run an example and the extension tests
release-check: $(TEST)
	$(PY) .ci/release_check.py

bench: $(CORE)
	$(PY) benchmarks/encoder_step.py --quick
	$(PY) benchmarks/learner_update.py --quick
	$(PY) benchmarks/rollout.py --quick
