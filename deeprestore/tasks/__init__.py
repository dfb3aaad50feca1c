"""The restoration tasks (denoise, deblur, superres, inpaint).

- :mod:`~deeprestore.tasks.registry`: one :class:`~deeprestore.tasks.registry.Task` per task
  (its H, PSNR protocol, default σ, options, baselines, preset, help);
- :mod:`~deeprestore.tasks.options`: :class:`~deeprestore.tasks.options.TaskOptions`, what the
  observed image went through, and their checks;
- :mod:`~deeprestore.tasks.problem`: the engine's problem built from an image and its options.

The first two import neither torch nor the engine (settings and presets read them); this file
imports nothing.
"""
