"""`python -m romi` = the `romi` command."""

from romi.cli import main

main()
