"""The roll process: started at low priority before it imports anything, never importing the
server's main module, and reporting its roll as one JSON line."""

import json
import os
import subprocess
import sys

import openbid.events.log as log_module
from openbid.events import BidEvent
from openbid.events.log import _encode_record

T0 = 1_795_000_000 * 1_000_000


def test_the_roll_process_is_niced_before_it_imports_anything():
    probe = (
        "import os, sys\n"
        "heavy = ('openbid', 'pyarrow', 'msgspec', 'fsspec', 'click')\n"
        "print(os.nice(0), sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", log_module._ROLL_CHILD_PRELUDE + probe],
        capture_output=True,
        text=True,
        check=True,
    )
    nice, loaded = done.stdout.split(" ", 1)
    assert int(nice) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
    assert loaded.strip() == "[]"


SERVER = """
import json, sys
import openbid.cli  # the server's main module, as under `python -m openbid.cli up`
import openbid.events.log as m
from openbid.events import BidEvent, EventLog

if __name__ == "__main__":
    probe = sys.argv[2]
    m._ROLL_CHILD_MAIN += (
        "import json, sys\\n"
        f"open({probe!r}, 'w').write(json.dumps(sorted(sys.modules)))\\n"
    )
    log = EventLog(sys.argv[1], flush_interval_s=0.05, roll_in_subprocess=True)
    log.emit(BidEvent(1_795_000_000_000_000, "a", "dsp-a"))
    log.close()
"""


def test_the_roll_process_does_not_import_the_servers_main_module(tmp_path):
    server = tmp_path / "server_main.py"
    server.write_text(SERVER)
    probe = tmp_path / "modules.json"
    subprocess.run(
        [sys.executable, str(server), str(tmp_path / "events"), str(probe)],
        check=True,
        timeout=120,
    )
    modules = set(json.loads(probe.read_text()))
    assert "openbid.events.rollproc" in modules
    assert not {"openbid.cli", "click", "openbid.config", "__mp_main__"} & modules
    assert list((tmp_path / "events" / "segments" / "bid").glob("*/*.parquet"))


def test_main_rolls_a_file_and_prints_one_json_line(tmp_path):
    wal = tmp_path / "wal"
    wal.mkdir()
    path = wal / "dead-000-abcdef-00000001.log"
    events = [BidEvent(T0 + i, f"a{i}", "dsp-a") for i in range(3)]
    path.write_bytes(_encode_record("bid", events) + b"OM torn")
    command = log_module._ROLL_CHILD_PRELUDE + log_module._ROLL_CHILD_MAIN
    args = [str(path), str(tmp_path / "segments"), "warning", "text", str(os.getpid())]
    done = subprocess.run(
        [sys.executable, "-c", command, *args], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == {"rows": 3, "bad_records": 1, "bad_events": 0}
    assert not path.exists()
    # A roll that fails is reported, not raised: the server retries it.
    path.write_bytes(_encode_record("bid", events))
    (tmp_path / "blocked").write_text("a file where the segments directory should be")
    args[1] = str(tmp_path / "blocked")
    done = subprocess.run(
        [sys.executable, "-c", command, *args], capture_output=True, text=True, check=True
    )
    assert "error" in json.loads(done.stdout) and path.exists()
