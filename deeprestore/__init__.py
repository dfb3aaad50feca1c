"""deeprestore: image restoration with Deep Image Prior, DIP-TV and DeepRED."""

from deeprestore.huge_pages import request_huge_pages

request_huge_pages()  # before torch's first CPU allocation (deeprestore.huge_pages)

__version__ = "0.1.0"
