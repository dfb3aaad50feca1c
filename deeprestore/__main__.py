"""``python -m deeprestore`` runs the command line."""

from deeprestore.cli import main

if __name__ == "__main__":  # worker processes (several runs on a CPU) import this module too
    main()
