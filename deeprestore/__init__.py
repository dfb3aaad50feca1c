"""deeprestore: image restoration with Deep Image Prior, DIP-TV and DeepRED."""

__version__ = "0.1.0"
