"""The roll process: started at low priority before it imports anything, never importing the
server's main module, and reporting its roll as one JSON line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import openbid.events.roller as roller_module
from openbid.events import BidEvent, EventLog
from openbid.events.framing import encode_record

T0 = 1_795_000_000 * 1_000_000


def test_the_roll_process_is_niced_before_it_imports_anything():
    probe = (
        "import os, signal, sys\n"
        "heavy = ('openbid', 'pyarrow', 'msgspec', 'fsspec', 'click')\n"
        "ttou, ttin = signal.getsignal(signal.SIGTTOU), signal.getsignal(signal.SIGTTIN)\n"
        "quiet = ttou == ttin == signal.SIG_IGN\n"
        "print(os.nice(0), quiet,"
        " sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", roller_module._ROLL_CHILD_PRELUDE + probe],
        capture_output=True,
        text=True,
        check=True,
    )
    nice, quiet, loaded = done.stdout.split(" ", 2)
    assert int(nice) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
    assert quiet == "True"  # SIGTTOU/SIGTTIN (it runs in a background group) ignored
    assert loaded.strip() == "[]"


SERVER = """
import json, sys
import openbid.cli  # the server's main module, as under `python -m openbid.cli up`
import openbid.events.roller as m
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


def test_main_rolls_a_file_and_prints_one_result_line(tmp_path):
    wal = tmp_path / "wal"
    wal.mkdir()
    path = wal / "dead-000-abcdef-00000001.log"
    events = [BidEvent(T0 + i, f"a{i}", "dsp-a") for i in range(3)]
    path.write_bytes(encode_record("bid", events) + b"OM torn")
    command = roller_module._ROLL_CHILD_PRELUDE + roller_module._ROLL_CHILD_MAIN
    args = {
        "path": str(path),
        "segments_url": str(tmp_path / "segments"),
        "log_level": "warning",
        "log_format": "text",
        "server_pid": os.getpid(),
    }

    def run(args):
        done = subprocess.run(
            [sys.executable, "-P", "-c", command],
            input=json.dumps(args),
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout.startswith(roller_module.ROLL_RESULT_MARKER)
        return json.loads(done.stdout.removeprefix(roller_module.ROLL_RESULT_MARKER))

    assert run(args) == {"rows": 3, "bad_records": 1, "bad_events": 0}
    assert not path.exists()
    # A roll that fails is reported, not raised: the server retries it.
    path.write_bytes(encode_record("bid", events))
    (tmp_path / "blocked").write_text("a file where the segments directory should be")
    args["segments_url"] = str(tmp_path / "blocked")
    result = run(args)
    assert "error" in result and path.exists()


SHADOWED_SERVER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])  # the real openbid, as an installed package would be
import openbid.events.roller as m
from openbid.events import BidEvent, EventLog
assert m.__file__.startswith(sys.argv[2]), m.__file__
m.ROLL_CHILD_MAX_FAILURES = 1_000  # never fall back to rolling in this process
log = EventLog(sys.argv[1], flush_interval_s=0.05, roll_in_subprocess=True)
log.emit(BidEvent(1, "a1", "dsp-a"))
log.close()
print(log.logs_waiting)
"""


def test_the_roll_process_imports_the_servers_openbid_not_one_in_its_working_directory(
    tmp_path,
):
    stray = tmp_path / "cwd" / "openbid"
    stray.mkdir(parents=True)
    (stray / "__init__.py").write_text("raise SystemExit('imported the stray openbid')\n")
    script = tmp_path / "server.py"
    script.write_text(SHADOWED_SERVER)
    repo = str(Path(roller_module.__file__).parents[2])
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "events"), repo],
        cwd=tmp_path / "cwd",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "0"
    assert list((tmp_path / "events" / "segments" / "bid").glob("*/*.parquet"))


def test_the_roll_process_gets_no_secret_on_its_command_line_and_ignores_other_output(
    tmp_path, monkeypatch
):
    seen = []
    real_popen = subprocess.Popen

    def popen(command, *args, **kwargs):
        seen.append(command)
        return real_popen(command, *args, **kwargs)

    monkeypatch.setattr(roller_module.subprocess, "Popen", popen)
    # A library printing after the result line must not turn the roll into a failure.
    monkeypatch.setattr(
        roller_module, "_ROLL_CHILD_MAIN", roller_module._ROLL_CHILD_MAIN + "print('bye')\n"
    )
    monkeypatch.setattr(roller_module, "ROLL_CHILD_MAX_FAILURES", 1)  # a failure would fall back
    segments = f"file://{tmp_path}/segments?token=s3cr3t"
    logging_root = __import__("logging").getLogger()
    monkeypatch.setattr(logging_root, "level", 15)  # a custom level: "Level 15" is no name
    log = EventLog(
        tmp_path / "events", segments_url=segments, flush_interval_s=0.05, roll_in_subprocess=True
    )
    log.emit(BidEvent(T0, "a1", "dsp-a"))
    log.close()
    assert seen and not any("s3cr3t" in part for part in seen[0])
    assert not log.roller.child_given_up and log.logs_waiting == 0
