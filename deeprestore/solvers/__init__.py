"""Every method as an :class:`~deeprestore.solvers.base.Algorithm` (one ``update()`` per
iteration, ``done()``) and the :class:`~deeprestore.solvers.runner.Runner` that drives it.

``base`` (Problem, Result, LogRow, Algorithm), ``updates`` (the paper's equations as pure
functions), ``network`` (DIP, DIP-TV and DeepRED: the Θ-step and ADMM) with ``network_run``
(one run's state and checkpoint) and ``side_by_side`` (runs on worker threads), ``red`` (RED
without a network), ``baselines`` (one-shot classical methods), ``factory`` (method name →
algorithm), ``runner`` (the loop) with ``hooks`` (its jobs: log, NaN rollback, checkpoints,
automatic stop, signals), ``grouping`` (many problems per step), ``stopping`` (the automatic
stop), ``adam`` (torch's Adam kernel driven from tensors), ``captured`` (a step as a CUDA
graph), ``control`` (checkpoints, signals, deadlines), ``cost`` (the estimate before a run and
its refusals) with ``memory`` (the memory model) and ``timing`` (step and denoiser times,
``auto``'s precision), ``precision`` (``auto``'s rule).
"""
