"""From a page's form to the API's bodies and back: dates and dollars as people type them,
lists as comma-separated text, and validation errors keyed by the form's field names (a form
shows each next to its input)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError

from openbid.console.errors import ApiError, field_path


class FormError(Exception):
    """A form that cannot become the API's body: {field: message}."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def text(form: Any, name: str, max_length: int = 2000) -> str:
    value = form.get(name, "")
    return value.strip()[:max_length] if isinstance(value, str) else ""


def items(form: Any, name: str) -> list[str]:
    """A comma-separated field (`USA, CAN`) or repeated checkboxes, as a list.

    >>> items({"c": " USA, CAN ,,GBR"}, "c")
    ['USA', 'CAN', 'GBR']
    """
    values = form.getlist(name) if hasattr(form, "getlist") else [form.get(name, "")]
    found: list[str] = []
    for value in values:
        if isinstance(value, str):
            found += [part.strip() for part in value.split(",") if part.strip()]
    return found


def day_micros(form: Any, name: str, errors: dict[str, str], *, end: bool = False) -> int:
    """A `YYYY-MM-DD` field as microseconds (midnight UTC; the end of the day for `end`).

    >>> day_micros({"d": "2027-01-15"}, "d", {})
    1799971200000000
    >>> problems = {}; day_micros({"d": "15/01"}, "d", problems); problems
    0
    {'d': 'a date as YYYY-MM-DD'}
    """
    value = text(form, name, 10)
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        errors[name] = "a date as YYYY-MM-DD"
        return 0
    start = datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)
    micros = int(start.timestamp()) * 1_000_000
    return micros + 86_400_000_000 - 1 if end else micros


def usd_micros(form: Any, name: str, errors: dict[str, str], *, required: bool = False) -> int:
    """A dollar amount (`1,500.25`, `$20`) as micros; empty is 0 unless required.

    >>> usd_micros({"b": "$1,500.25"}, "b", {})
    1500250000
    >>> problems = {}; usd_micros({"b": "-3"}, "b", problems); problems
    0
    {'b': 'an amount in USD, 0 or more (1500.00)'}
    """
    value = text(form, name, 32).replace(",", "").removeprefix("$").strip()
    if not value:
        if required:
            errors[name] = "required"
        return 0
    try:
        amount = float(value)
    except ValueError:
        amount = -1.0
    if not 0 <= amount <= 1e9 or amount != amount:
        errors[name] = "an amount in USD, 0 or more (1500.00)"
        return 0
    return round(amount * 1_000_000)


def build(schema: type, doc: dict[str, Any], prefix: str = "") -> Any:
    """`schema(**doc)`, its validation errors as a `FormError` keyed by field names (with
    `prefix` for nested forms)."""
    try:
        return schema(**doc)
    except ValidationError as exc:
        errors = {}
        for error in exc.errors():
            name = prefix + field_path(error.get("loc", ())).split("[")[0]
            message = "required" if error.get("type") == "missing" else str(error.get("msg"))
            errors.setdefault(name, message)
        raise FormError(errors) from None


def form_field(field: str, known: set[str]) -> str:
    """The form's name of an API or catalog field (`targeting.countries[0]`: `countries`,
    `goal_amount_micros`: `goal_amount`, `start_micros`: `start`); empty when the form has
    no such field.

    >>> form_field("targeting.countries[0]", {"countries"}), form_field("x", {"y"})
    ('countries', '')
    >>> form_field("goal_amount_micros", {"goal_amount"})
    'goal_amount'
    """
    name = field.split("[")[0].split(".")[-1] if field else ""
    name = name.removesuffix("_micros")
    return name if name in known else ""


def from_api(exc: ApiError, known: set[str]) -> FormError:
    """An API error as a form's: on its field when the form has it, else on the form."""
    return FormError({form_field(exc.field, known): exc.message})


def from_invalid(exc: Any, known: set[str]) -> FormError:
    """The catalog's `InvalidRecord` (every field's problem) as a form's."""
    errors: dict[str, str] = {}
    for problem in exc.errors:
        errors.setdefault(form_field(problem.field, known), problem.reason)
    return FormError(errors or {"": str(exc)})
