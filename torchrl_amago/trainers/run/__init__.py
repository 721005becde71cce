"""Run safety: checkpoints and the replay's generation folders committed together (``checkpoint.py``), which settings
may change on resume (``resume_config.py``), NaN/inf guards (``guards.py``) and the best periodic eval's weights
(``best_eval.py``, a ``post_eval`` hook of the trainer).
"""
