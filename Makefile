# Two entry points (README Quick start). Both create .venv and install what they need (idempotent).
# setup.py allows version ranges; requirements/tested.txt pins the tested torch / torchrl / tensordict as constraints.
PY := .venv/bin/python
TESTED := requirements/tested.txt
STAMP := .venv/.installed-$(shell cat setup.py $(TESTED) | md5sum | cut -c1-8)

.PHONY: demo test test-slow bench

$(STAMP): setup.py $(TESTED)
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -c $(TESTED) -e ".[test]"
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
