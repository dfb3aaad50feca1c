"""Every method as an :class:`~deeprestore.solvers.base.Algorithm` (one ``update()`` per
iteration, ``done()``) and the :class:`~deeprestore.solvers.runner.Runner` that drives it.

``base`` (Problem, Result, LogRow, Algorithm), ``updates`` (the paper's equations as pure
functions), ``network`` (DIP, DIP-TV and DeepRED: the Θ-step and ADMM), ``red`` (RED without a
network), ``baselines`` (one-shot classical methods), ``factory`` (method name → algorithm),
``runner`` (the loop: logging, NaN rollback, checkpoints, automatic stop), ``grouping`` (many
problems per step), ``stopping`` (the automatic stop), ``control`` (checkpoints, signals,
deadlines), ``cost`` (time and memory before a run).
"""
