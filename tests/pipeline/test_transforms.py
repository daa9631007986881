"""The transformations' SQL: written once, rendered for each engine, parameters bound."""

import pytest

from openbid.exchange.orchestrator import NOT_SENT
from openbid.pipeline.transforms import (
    DIALECTS,
    NOT_SENT_ERRORS,
    OUTPUT_SCHEMAS,
    PARAMETERS,
    SETS,
    SQL,
    render,
)


def _parameters(set_name: str) -> dict[str, int]:
    return {name: 1_800_000_000_000_000 + i for i, name in enumerate(PARAMETERS[set_name])}


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("set_name", SETS)
def test_every_output_renders_for_every_dialect_with_its_parameters_bound(set_name, dialect):
    for output in SQL[set_name]:
        sql = render(set_name, dialect, _parameters(set_name), output)
        for name, value in _parameters(set_name).items():
            assert f":{name}" not in sql
            if f":{name}" in SQL[set_name][output]:
                assert str(value) in sql


def test_spark_sql_keeps_duckdb_null_ordering_and_integer_types():
    sql = render("click", "spark", _parameters("click"))
    # DuckDB sorts NULLs last by default, Spark first: the transpiled SQL says it
    assert "NULLS LAST" in sql
    assert "CAST(COALESCE(k.clicks, 0) > 0 AS INT)" in sql


def test_outputs_and_schemas_name_the_same_tables():
    assert set(SQL) == set(OUTPUT_SCHEMAS) == set(SETS)
    for set_name in SETS:
        assert set(SQL[set_name]) == set(OUTPUT_SCHEMAS[set_name])
        assert "label" in OUTPUT_SCHEMAS[set_name]["rows"].names


def test_not_sent_errors_are_the_exchanges_not_sent_outcomes():
    assert set(NOT_SENT_ERRORS) == set(NOT_SENT) - {"filtered"}


def test_render_refuses_unknown_sets_dialects_and_missing_parameters():
    with pytest.raises(ValueError, match="unknown training set 'ctr'"):
        render("ctr", "duckdb", {})
    with pytest.raises(ValueError, match="unknown SQL dialect 'postgres'"):
        render("click", "postgres", _parameters("click"))
    with pytest.raises(ValueError, match="click_window_micros"):
        render("click", "duckdb", {"since_micros": 0, "closed_until_micros": 1})
    with pytest.raises(ValueError, match="no output 'auctions'"):
        render("click", "duckdb", _parameters("click"), "auctions")
