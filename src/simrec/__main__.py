"""`python -m simrec ...`: the simrec command with a given interpreter (how processes are started in an
environment without relying on its console script)."""

from simrec.cli import main

main()
