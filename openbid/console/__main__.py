"""`python -m openbid.console`: the console's process (`openbid/console/serve.py`)."""

from openbid.console.serve import main

main()
