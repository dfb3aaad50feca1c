"""Programs built on the layers below: ``reproduce`` (the paper's tables), ``degrade``,
``demo`` and ``summary``."""
