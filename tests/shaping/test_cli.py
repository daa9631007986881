"""`openbid train shaping` on an event log written by the real writer."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from openbid.events import AuctionEvent, BidEvent, EventLog
from openbid.shaping import ModelShaper, load_shaping_model
from openbid.shaping.cli import train_shaping_command

from .conftest import HOUR_MICROS, START_MICROS


def _write_log(directory, n: int = 4000) -> None:
    rng = np.random.default_rng(0)
    with EventLog(directory) as log:
        for i in range(n):
            ts = START_MICROS + i * (48 * HOUR_MICROS // n)
            auction = f"auc{i}"
            media = "video" if rng.random() < 0.3 else "banner"
            log.emit(AuctionEvent(ts, auction, auction, features={"media": media, "hour": "3"}))
            rate = {"video": 0.6, "banner": 0.002}[media]
            log.emit(BidEvent(ts, auction, "vidco", bid=bool(rng.random() < rate)))
            log.emit(BidEvent(ts, auction, "anyco", bid=bool(rng.random() < 0.1)))


def test_train_shaping_prints_the_frontier_and_writes_a_model(tmp_path):
    _write_log(tmp_path / "events")
    out = tmp_path / "model"
    result = CliRunner().invoke(
        train_shaping_command,
        [
            "--events-dir",
            str(tmp_path / "events"),
            "--out",
            str(out),
            "--hash-bits",
            "18",
            "--exploration-share",
            "0.02",
            "--target",
            "0.95",
        ],
        env={"OPENBID_CONFIG": ""},
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.startswith("dsp"))
    assert "saved@0.95" in header and "saved@0.995" in header
    vidco = next(line for line in lines if line.startswith("vidco"))
    # 99% of vidco's bids are on video: at 95% recall it skips the banners (70% of traffic)
    assert float(vidco.split()[1].rstrip("%")) > 50.0
    model = load_shaping_model(out)
    assert set(model.meta.thresholds) == {"vidco", "anyco"}
    assert model.meta.exploration_share == 0.02
    shaper = ModelShaper(out, exploration_share=0.0)
    video, banner = (
        shaper.decide({"media": media, "hour": "3"}, ["vidco"])[0].send
        for media in ("video", "banner")
    )
    assert video and not banner


def test_train_shaping_explains_an_empty_window(tmp_path):
    _write_log(tmp_path / "events", n=50)
    result = CliRunner().invoke(
        train_shaping_command,
        ["--events-dir", str(tmp_path / "events"), "--since", "2030-01-01"],
        env={"OPENBID_CONFIG": ""},
    )
    assert result.exit_code != 0
    assert "no auctions or no bid events" in result.output


def test_passes_fixes_the_former_settings_and_without_it_they_are_chosen(tmp_path):
    _write_log(tmp_path / "events")
    chosen = {}
    for name, extra in (("auto", []), ("fixed", ["--passes", "1"])):
        out = tmp_path / name
        result = CliRunner().invoke(
            train_shaping_command,
            ["--events-dir", str(tmp_path / "events"), "--out", str(out), "--hash-bits", "18"]
            + extra,
            env={"OPENBID_CONFIG": ""},
        )
        assert result.exit_code == 0, result.output
        chosen[name] = load_shaping_model(out).artifacts["vidco"].meta.hyper_parameters
    assert (chosen["fixed"]["alpha"], chosen["fixed"]["l1"], chosen["fixed"]["n_passes"]) == (
        0.1,
        0.5,
        1,
    )
    assert chosen["auto"] != chosen["fixed"]
