"""Scale-out of the trainer: collection, threads, torchrun ranks, devices, CUDA graphs."""
