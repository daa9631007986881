"""The console: the REST API (`api/`) for advertisers, publishers and admins, its users,
sessions and tokens (`auth/`), reports from rollups of the event log (`reports/`), and the
web pages (`web/`); served by `openbid up` in a process of its own (`serve.py`)."""
