"""The degradations: H and its adjoint (``operators``), how the papers degrade clean images
(``degradations``: noise, blur, Lanczos downscaling, masks) and the noise-level estimate
(``noise``). Nothing here knows of networks or solvers."""
