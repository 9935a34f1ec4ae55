"""``python -m pixguard`` runs the command line."""

from .cli import main

main()
