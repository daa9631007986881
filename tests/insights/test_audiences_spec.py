"""Audience specs: YAML and JSON files load, every error names the field, and any decoded
document gives a spec or an InsightsError (never another exception)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.insights.audiences.spec import AudienceSpec, load_spec, parse_spec
from openbid.insights.errors import InsightsError

YAML = """
segments:
  - id: sport-fans
    description: Saw sport pages three times in two weeks
    include:
      - {behaviour: visited, categories: [IAB17], min_count: 3, within_days: 14}
    exclude:
      - {behaviour: converted, advertisers: [shop.example]}
"""


def test_yaml_and_json_give_the_same_spec(tmp_path):
    (tmp_path / "a.yaml").write_text(YAML)
    spec = load_spec(tmp_path / "a.yaml")
    (tmp_path / "a.json").write_text(json.dumps({"segments": [
        {"id": "sport-fans", "description": "Saw sport pages three times in two weeks",
         "include": [{"behaviour": "visited", "categories": ["IAB17"], "min_count": 3,
                      "within_days": 14}],
         "exclude": [{"behaviour": "converted", "advertisers": ["shop.example"]}]}]}))  # fmt: skip
    assert load_spec(tmp_path / "a.json") == spec
    segment = spec.segment("sport-fans")
    assert segment.include[0].window_hours == 14 * 24
    assert segment.exclude[0].within_days == 30.0  # the default window
    assert segment.max_window_hours == 30 * 24


def test_the_digest_ignores_descriptions_but_not_rules():
    base = {"segments": [{"id": "s", "description": "a", "include": [{"behaviour": "clicked"}]}]}
    renamed = json.loads(json.dumps(base))
    renamed["segments"][0]["description"] = "b"
    changed = json.loads(json.dumps(base))
    changed["segments"][0]["include"][0]["min_count"] = 2
    assert parse_spec(base).digest() == parse_spec(renamed).digest()
    assert parse_spec(base).digest() != parse_spec(changed).digest()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"segments": []}, "segments: Expected `array` of length >= 1"),
        ({"segmnts": []}, "unknown field `segmnts`"),
        (
            {"segments": [{"id": "Bad Id", "include": [{"behaviour": "visited"}]}]},
            "segments[0].id: Expected `str` matching regex",
        ),
        (
            {"segments": [{"id": "s", "include": [{"behaviour": "viewed"}]}]},
            "segments[0].include[0].behaviour: Invalid enum value 'viewed'",
        ),
        (
            {"segments": [{"id": "s", "include": [{"behaviour": "visited", "within_days": 0}]}]},
            "segments[0].include[0].within_days: Expected `float` > 0",
        ),
        (
            {"segments": [{"id": "s", "include": [{"behaviour": "visited", "min_count": "3"}]}]},
            "segments[0].include[0].min_count: Expected `int`, got `str`",
        ),
        (
            {"segments": [{"id": "s", "include": [{"behaviour": "visited", "site": ["x"]}]}]},
            "segments[0].include[0]: Object contains unknown field `site`",
        ),
        (
            {"segments": [{"id": "s", "include": []}]},
            "segments[0].include: Expected `array` of length >= 1",
        ),
        (
            {"segments": [{"id": "s", "include": [{"behaviour": "visited"}]}] * 2},
            "segments[1].id: 's' is used twice",
        ),
        (
            {
                "segments": [
                    {"id": "s", "include": [{"behaviour": "converted", "creatives": ["c"]}]}
                ]
            },
            "segments[0].include[0].creatives: a conversion names no creative",
        ),
        (
            {
                "segments": [
                    {"id": "s", "include": [{"behaviour": "visited", "categories": ["a,b"]}]}
                ]
            },
            "segments[0].include[0].categories[0]: one category per item",
        ),
        (
            {"segments": [{"id": "s", "include": [{"behaviour": "visited", "sites": [""]}]}]},
            "segments[0].include[0].sites[0]: Expected `str` of length >= 1",
        ),
    ],
)
def test_errors_name_the_field(document, message):
    with pytest.raises(InsightsError) as caught:
        parse_spec(document, source="aud.yaml")
    assert str(caught.value).startswith("aud.yaml: ")
    assert message in str(caught.value)


def test_a_file_that_is_not_yaml_is_refused_by_name(tmp_path):
    (tmp_path / "bad.yaml").write_text("segments: [unclosed")
    with pytest.raises(InsightsError, match="bad.yaml: not YAML or JSON"):
        load_spec(tmp_path / "bad.yaml")
    with pytest.raises(InsightsError, match="cannot read the audience spec"):
        load_spec(tmp_path / "missing.yaml")


def test_an_unknown_segment_is_named():
    spec = parse_spec({"segments": [{"id": "s", "include": [{"behaviour": "clicked"}]}]})
    with pytest.raises(InsightsError, match="no segment 'x' in the spec"):
        spec.segment("x")


documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "segments",
                    "id",
                    "include",
                    "exclude",
                    "behaviour",
                    "sites",
                    "categories",
                    "min_count",
                    "within_days",
                    "match",
                    "creatives",
                    "x",
                ]
            ),  # fmt: skip
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(documents)
def test_any_document_gives_a_spec_or_an_insights_error(document):
    with contextlib.suppress(InsightsError):
        assert isinstance(parse_spec(document), AudienceSpec)
