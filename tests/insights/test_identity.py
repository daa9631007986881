"""Identity resolution: identifiers normalised then hashed with a salt (only hashes leave the
advertiser's side), Splink linkage of a small labelled CRM with precision and recall above a
bound, logged user ids attached to the right people, pairwise scoring by hand."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.insights.errors import InsightsError
from openbid.insights.identity import (
    hash_identifier,
    hash_records,
    link,
    load_salt,
    normalise_email,
    normalise_phone,
    pairwise_scores,
    prepare,
    synthetic_crm,
)

SALT = b"a-test-salt-of-32-bytes-exactly!"


def test_emails_and_phones_normalise_before_hashing():
    assert normalise_email(" J.Smith+promo@GMAIL.com") == "jsmith@gmail.com"
    assert normalise_email("j.smith@work.example") == "j.smith@work.example"  # dots kept off gmail
    assert normalise_email("not an email") is None
    assert normalise_phone("+44 20 7946 0958") == "+442079460958"
    assert normalise_phone("0044 (20) 7946-0958") == "+442079460958"
    assert normalise_phone("020 7946 0958", default_country_code="44") == "+442079460958"
    assert normalise_phone("12") is None
    same = [hash_identifier(e, salt=SALT) for e in ("JSmith@gmail.com", " j.smith@googlemail.com ")]
    assert same[0] == same[1] and len(same[0]) == 64


def test_the_salt_changes_every_hash_and_a_short_one_is_refused(monkeypatch):
    other = b"another-salt-of-32-bytes-exactly"
    assert hash_identifier("a@b.co", salt=SALT) != hash_identifier("a@b.co", salt=other)
    with pytest.raises(InsightsError, match="at least 16 bytes"):
        hash_identifier("a@b.co", salt=b"short")
    monkeypatch.setenv("OPENBID_IDENTITY_SALT", "too-short")
    with pytest.raises(InsightsError, match="OPENBID_IDENTITY_SALT"):
        load_salt()
    monkeypatch.setenv("OPENBID_IDENTITY_SALT", SALT.decode())
    assert load_salt() == SALT


def test_hashed_records_carry_no_raw_identifier():
    table = pa.table(
        {
            "record_id": ["1"],
            "email": ["Ann@Example.com"],
            "phone": ["+44 7700 900123"],
            "city": ["Leeds"],
        }
    )
    hashed = hash_records(table, salt=SALT)
    assert hashed.column_names == ["record_id", "email_hash", "phone_hash", "city"]
    text = str(hashed.to_pylist()).lower()
    assert "example" not in text and "ann" not in text and "7700" not in text
    assert hashed["email_hash"][0].as_py() == hash_identifier("ann@example.com", salt=SALT)


@given(st.text(max_size=40))
def test_normalisers_never_raise(text):
    normalise_email(text)
    normalise_phone(text, default_country_code="44")


def test_pairwise_scores_by_hand():
    s = pairwise_scores(list("abcde"), predicted=[1, 1, 1, 2, 3], truth=[1, 1, 2, 2, None])
    # predicted pairs among labelled: ab, ac, bc (d alone); true pairs: ab, cd; correct: ab
    assert (s.predicted_pairs, s.true_pairs, s.correct_pairs) == (3, 2, 1)
    assert s.precision == pytest.approx(1 / 3) and s.recall == pytest.approx(0.5)


def test_prepare_normalises_and_refuses_duplicate_ids():
    table = pa.table(
        {
            "record_id": ["1", "2"],
            "first_name": [" José ", ""],
            "postcode": ["ls1 4ap", None],
            "dob": ["1980-02-30x", "1990-01-02"],
            "other": [1, 2],
        }
    )
    prepared = prepare(table)
    assert prepared.column_names == ["record_id", "first_name", "dob", "postcode"]
    assert prepared["first_name"].to_pylist() == ["jose", None]
    assert prepared["postcode"].to_pylist() == ["LS14AP", None]
    assert prepared["dob"].to_pylist() == ["1980-02-30", "1990-01-02"]
    with pytest.raises(InsightsError, match="unique"):
        prepare(pa.table({"record_id": ["1", "1"], "city": ["a", "b"]}))


@pytest.fixture(scope="module")
def linked():
    crm, logged = synthetic_crm(250, seed=21)
    return crm, logged, link(crm, logged=logged, seed=3)


def test_linkage_of_a_labelled_crm_has_high_precision_and_recall(linked):
    crm, _, result = linked
    cluster = {
        r["record_id"]: r["cluster_id"] for r in result.clusters.to_pylist() if r["source"] == "crm"
    }
    ids = crm["record_id"].to_pylist()
    scores = pairwise_scores(
        ids, predicted=[cluster[i] for i in ids], truth=crm["cluster"].to_pylist()
    )
    assert scores.true_pairs > 200
    assert scores.precision >= 0.95 and scores.recall >= 0.9
    assert any("email_hash" in c for c in result.comparisons)
    assert "surname AND dob" in result.blocking_rules
    assert result.model["link_type"] == "dedupe_only"


def test_logged_user_ids_reach_their_own_people(linked):
    crm, logged, result = linked
    person = dict(zip(crm["record_id"].to_pylist(), crm["cluster"].to_pylist(), strict=True))
    owner = dict(zip(logged["user_id"].to_pylist(), logged["cluster"].to_pylist(), strict=True))
    pairs = [(u, r["record_id"]) for r in result.user_ids.to_pylist() for u in r["user_ids"]]
    assert len({u for u, _ in pairs}) >= 0.7 * logged.num_rows
    assert all(owner[u] == person[r] for u, r in pairs)


def test_linkage_needs_a_blocking_column():
    with pytest.raises(InsightsError, match="no blocking rule"):
        link(pa.table({"record_id": ["1", "2"], "city": ["a", "b"]}))
