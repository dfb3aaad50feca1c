"""``python -m deeprestore`` runs the command line."""

from deeprestore.cli import main

main()
