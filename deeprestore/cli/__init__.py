"""The ``deeprestore`` command line (Typer).

It only parses arguments, loads presets, builds jobs and hands them to the solvers through
:mod:`deeprestore.apps.jobs`; progress is drawn from the solver's callback. Every user error is
one line on stderr and a non-zero exit code (2: usage, 1: an image failed), never a traceback
(unless ``--debug``). Modules: ``app`` (the Typer app, errors), ``options`` (shared option
declarations), ``restore`` (the four restore commands), ``tools`` (the other commands),
``progress`` (what the commands show on stderr: one-line messages, the progress bar, the
lines of ``reproduce``), ``failures`` (a batch's failed inputs and its exit code), ``main``
(the entry point).
"""
