"""`python -m microvar`: the same as the `microvar` command."""

from .cli import main

main()
