"""Run safety: the run folder (``run_dir.py``), checkpoints and resume (``checkpoint.py``, ``resume_config.py``),
NaN/inf guards (``guards.py``) and the best eval's weights (``best_eval.py``)."""
