"""Run safety: the run folder, checkpoints and resume, NaN/inf guards, the best eval's weights."""
