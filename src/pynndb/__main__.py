"""`python -m pynndb` runs the `pynndb` command."""

from pynndb.cli.main import main

main()
