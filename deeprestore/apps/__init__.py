"""Programs built on the layers below: ``jobs`` (one input file restored end to end),
``reproduce`` (the paper's tables), ``degrade``, ``demo`` and ``summary``."""
