"""Scale-out of the trainer: collection modes (``collection.py``: sync, or workers beside the learner through
``feed.py`` and Ray's ``remote_collection.py``), the learner's threads beside local workers (``threads.py``), torchrun
ranks with DDP (``distributed.py``), the learner's device, precision and compiled loss (``device.py``) and the update
captured as CUDA graphs (``graphed_update.py``). A run on one process with ``--collect sync`` uses only
``collection.SyncCollection``, ``device.py`` and a single-process ``distributed.DistContext``.
"""
