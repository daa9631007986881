"""Model directories round-trip exactly, and every kind of damage is refused by name."""

import json

import numpy as np
import pytest

from openbid.ml.artifacts import TrainingWindow, load_model, save_model
from openbid.ml.calibration import CalibrationTable
from openbid.ml.errors import ModelArtifactError
from openbid.ml.features import FeatureSpec, Featurizer
from openbid.ml.fm import FactorizationMachine
from openbid.ml.ftrl import FTRLLogisticRegression
from openbid.ml.rows import HashedRows
from openbid.ml.scoring import MultiModelScorer

SPEC = FeatureSpec(categorical=["site", "os"], crosses=[["site", "os"]], hash_bits=18)


def training_data(n=2_000, seed=0):
    rng = np.random.default_rng(seed)
    raw = {
        "site": rng.choice(["a.example", "b.example", "c.example"], n).tolist(),
        "os": rng.choice(["iOS", "Android"], n).tolist(),
    }
    y = (rng.random(n) < np.where(np.array(raw["os"]) == "iOS", 0.3, 0.1)).astype(float)
    return Featurizer(SPEC).transform_columns(raw), y


@pytest.fixture(params=["ftrl_lr", "fm"])
def trained(request):
    rows, y = training_data()
    if request.param == "fm":
        model = FactorizationMachine(n_features=SPEC.n_features, n_factors=4)
    else:
        model = FTRLLogisticRegression(n_features=SPEC.n_features)
    return model.fit(rows, y), rows, y


def test_round_trip_keeps_predictions_metadata_and_state(trained, tmp_path):
    model, rows, y = trained
    window = TrainingWindow(start_micros=1, end_micros=2, rows=len(rows))
    table = CalibrationTable("platt", [0.0, 0.5, 1.0], [0.0, 0.4, 1.0])
    save_model(
        model, tmp_path / "m", SPEC, name="pctr", training_window=window,
        metrics={"logloss": 0.4}, calibration=table,
    )  # fmt: skip
    loaded = load_model(tmp_path / "m", expected_spec_hash=Featurizer(SPEC).spec_hash)
    assert loaded.meta.kind == model.kind
    assert loaded.meta.training_window == window
    assert loaded.meta.metrics == {"logloss": 0.4}
    assert loaded.meta.hyper_parameters == model.get_params()
    assert isinstance(loaded.weights, np.memmap) and not loaded.weights.flags.writeable
    np.testing.assert_array_equal(loaded.weights, model.coef_)
    scorer = MultiModelScorer([loaded.scoring_model()])
    raw = model.predict_proba(rows)[:, 1]
    # the scorer interpolates the table on a grid of raw logits: within 2e-4 of its value
    np.testing.assert_allclose(scorer.score_batch(rows)[:, 0], table.apply(raw), rtol=2e-4)
    # continued training from the saved state equals continuing in memory
    resumed = loaded.learner().partial_fit(rows, y)
    np.testing.assert_array_equal(resumed.coef_, model.partial_fit(rows, y).coef_)


def test_saving_over_an_existing_model_needs_overwrite(trained, tmp_path):
    model, _, _ = trained
    save_model(model, tmp_path / "m", SPEC)
    with pytest.raises(ModelArtifactError, match="already exists"):
        save_model(model, tmp_path / "m", SPEC)
    save_model(model, tmp_path / "m", SPEC, overwrite=True, include_state=False)
    loaded = load_model(tmp_path / "m")
    assert "z" not in loaded.arrays
    with pytest.raises(ModelArtifactError, match="without training state"):
        loaded.learner()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging left behind


@pytest.fixture
def saved(tmp_path):
    rows, y = training_data()
    model = FTRLLogisticRegression(n_features=SPEC.n_features).fit(rows, y)
    return save_model(model, tmp_path / "m", SPEC)


def edit_meta(path, change):
    meta = json.loads((path / "model.json").read_text())
    change(meta)
    (path / "model.json").write_text(json.dumps(meta))


def test_truncated_weights_are_refused(saved):
    data = (saved / "weights.npy").read_bytes()
    (saved / "weights.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelArtifactError, match="weights.npy: checksum mismatch"):
        load_model(saved)
    with pytest.raises(ModelArtifactError, match="weights.npy: not a readable .npy"):
        load_model(saved, verify_checksums=False)


def test_flipped_byte_is_refused(saved):
    data = bytearray((saved / "z.npy").read_bytes())
    data[-3] ^= 0xFF
    (saved / "z.npy").write_bytes(bytes(data))
    with pytest.raises(ModelArtifactError, match="z.npy: checksum mismatch"):
        load_model(saved)


def test_missing_file_is_refused(saved):
    (saved / "n.npy").unlink()
    with pytest.raises(ModelArtifactError, match="n.npy: cannot read"):
        load_model(saved)


def test_missing_or_garbled_metadata_is_refused(saved, tmp_path):
    with pytest.raises(ModelArtifactError, match="model.json: cannot read"):
        load_model(tmp_path / "nowhere")
    (saved / "model.json").write_text('{"kind": "ftrl_lr", "format_ver')
    with pytest.raises(ModelArtifactError, match="model.json: invalid model metadata"):
        load_model(saved)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(kind="gbdt"), r"\$.kind"),
        (lambda m: m.update(format_version=99), "format_version 99"),
        (lambda m: m["spec"].update(hash_bits=19), "field spec_hash"),
        (lambda m: m["arrays"]["weights"].update(shape=[10]), r"field arrays.weights"),
        (lambda m: m["arrays"].pop("weights"), "lacks"),
        (lambda m: m.update(calibration={"method": "x", "x": [0.0], "y": [0.0]}), "calibration"),
    ],
)
def test_inconsistent_metadata_is_refused_naming_the_field(saved, change, message):
    edit_meta(saved, change)
    with pytest.raises(ModelArtifactError, match=message):
        load_model(saved)


def test_model_for_another_spec_is_refused(saved):
    other = Featurizer(FeatureSpec(categorical=["site"], hash_bits=18)).spec_hash
    with pytest.raises(ModelArtifactError, match="this server featurizes with"):
        load_model(saved, expected_spec_hash=other)


def test_a_model_not_matching_its_spec_cannot_be_saved(tmp_path):
    model = FTRLLogisticRegression(n_features=16).fit(
        HashedRows.from_matrix(np.array([[1]]), 16), [1]
    )
    with pytest.raises(ModelArtifactError, match="hash_bits=18"):
        save_model(model, tmp_path / "m", SPEC)


@pytest.mark.parametrize("kind", ["ftrl_lr", "fm"])
def test_saved_state_files_hold_z_and_n_as_format_1_defines_them(kind, tmp_path):
    # one row with only feature 0, label 1, from a zero state: the logit is 0, so the
    # gradient is 0.5 - 1 = -0.5, n = 0.25 and z = -0.5 (the weight was 0 before the step).
    # Artifacts written by earlier versions hold the same quantities and load the same way.
    rows = HashedRows.from_matrix(np.array([[0]]), SPEC.n_features)
    if kind == "fm":
        model = FactorizationMachine(n_features=SPEC.n_features, n_factors=2, init_std=0.0)
    else:
        model = FTRLLogisticRegression(n_features=SPEC.n_features)
    save_model(model.fit(rows, [1.0]), tmp_path / "m", SPEC)
    assert np.load(tmp_path / "m" / "n.npy")[0] == np.float32(0.25)
    assert np.load(tmp_path / "m" / "z.npy")[0] == np.float32(-0.5)
    # the weight the FTRL formula gives for them: -z / ((beta + sqrt(n)) / alpha + l2)
    restored = load_model(tmp_path / "m").learner()
    assert restored.coef_[0] == pytest.approx(0.5 / ((1.0 + 0.5) / 0.05 + 1.0), rel=1e-6)
    np.testing.assert_array_equal(restored.coef_, model.coef_)
