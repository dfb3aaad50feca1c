"""The degradations: H and its adjoint (``operators``), the blur and downsampling kernels and
the super-resolution factors (``kernels``), how the papers degrade clean images
(``degradations``: noise, blur, Lanczos downscaling, masks) and the noise-level estimate
(``noise``). Nothing here knows of networks or solvers."""
