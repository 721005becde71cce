# Two entry points (README Quick start). Both create .venv and install what they need (idempotent).
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell md5sum setup.py | cut -c1-8)

.PHONY: demo test test-slow bench

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/04_tmaze.py --horizon 10 --run_name demo_tmaze --buffer_dir runs --epochs 30

test: $(STAMP)
	$(PY) -m pytest -q tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

bench: $(STAMP)
	$(PY) benchmarks/encoder_step.py --quick
	$(PY) benchmarks/learner_update.py --quick
	$(PY) benchmarks/rollout.py --quick
