"""`server.workers = N`: N serving processes on one port (`docs/operations.md`).

`run_workers` is the supervisor (`supervisor.py`); each worker is `child.py` running one
`openbid.platform.Platform`; `metrics.py` gathers the workers' metrics for `/metrics`.
"""

from openbid.workers.supervisor import Supervisor, restart_delay_s, run_workers

__all__ = ["Supervisor", "restart_delay_s", "run_workers"]
