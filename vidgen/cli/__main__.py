"""`python -m vidgen.cli` is `vidgen`."""

from vidgen.cli import main

main()
