"""OpenRTB decode + validate: µs per bid request, ours against json.loads (to dicts, no checks)
and pydantic v2 (the same types and constraints), on the same bytes in the same run.

Inputs: the five bid request examples of the OpenRTB 2.6 spec (as published, pretty-printed),
a realistic 2.6 KB header-bidding request (tests/openrtb/fixtures/valid) and a 15 KB one built
from it (12 imps, 300 blocked advertisers). Also measured:
the cost of unknown fields (decode path and forwarding) and of encoding for forwarding.

    python bench/openrtb.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pydantic
from msgspec import inspect as mi

from openbid.openrtb import BidRequest, decode_bid_request, encode
from openbid.openrtb.dupkeys import has_duplicate_key
from openbid.openrtb.repair import decode_bid_request_lenient

ROOT = Path(__file__).resolve().parents[1]
SPEC_EXAMPLES = sorted((ROOT.parent / "shared/data/openrtb/2.6/bid-request").glob("*.json"))
REALISTIC = ROOT / "tests/openrtb/fixtures/valid/web-banner-prebid.json"


def pydantic_model(struct: type) -> type[pydantic.BaseModel]:
    """A pydantic v2 model with the same fields, types and constraints as one of our structs."""
    cache: dict[type, type[pydantic.BaseModel]] = {}

    def convert(t: mi.Type) -> Any:
        if isinstance(t, mi.UnionType):
            kinds = [convert(k) for k in t.types if not isinstance(k, mi.NoneType)]
            return kinds[0] | None
        if isinstance(t, mi.IntType):
            return Annotated[int, pydantic.Field(ge=t.ge, le=t.le, strict=True)]
        if isinstance(t, mi.FloatType):
            return Annotated[float, pydantic.Field(ge=t.ge, le=t.le)]
        if isinstance(t, mi.StrType):
            return Annotated[
                str,
                pydantic.Field(min_length=t.min_length, max_length=t.max_length, pattern=t.pattern),
            ]
        if isinstance(t, mi.ListType):
            return Annotated[list[convert(t.item_type)], pydantic.Field(min_length=t.min_length)]
        if isinstance(t, mi.StructType):
            return model(t.cls)
        if isinstance(t, mi.RawType | mi.NoneType):
            return Any
        raise TypeError(t)

    def model(cls: type) -> type[pydantic.BaseModel]:
        if cls not in cache:
            fields = {}
            for field in mi.type_info(cls).fields:
                if field.name == "_unknown":
                    continue
                default = ... if field.required else None
                fields[field.encode_name] = (convert(field.type), default)
            cache[cls] = pydantic.create_model(f"P{cls.__name__}", **fields)
        return cache[cls]

    return model(struct)


def per_call_us(
    fns: dict[str, Callable[[bytes], object]], data: bytes, number: int, repeats: int
) -> dict[str, float]:
    """µs per call of each function: the best of `repeats` batches, the functions' batches
    interleaved so that a burst of other work on this shared machine hits them all alike."""
    best = dict.fromkeys(fns, float("inf"))
    gc.collect()
    for _ in range(repeats):
        for label, fn in fns.items():
            start = time.perf_counter()
            for _ in range(number):
                fn(data)
            best[label] = min(best[label], (time.perf_counter() - start) / number)
    return {label: seconds * 1e6 for label, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (same output shape)")
    args = parser.parse_args()
    number, repeats = (200, 7) if args.quick else (1000, 25)

    p_request = pydantic_model(BidRequest)
    realistic = json.dumps(json.loads(REALISTIC.read_bytes())["request"], separators=(",", ":"))
    inputs = [(p.stem, p.read_bytes()) for p in SPEC_EXAMPLES]
    # A large request: past max_string_chars (8 KiB), so the string-length scan runs too.
    large = json.loads(realistic)
    large["imp"] = [dict(large["imp"][0], id=str(i)) for i in range(12)]
    large["badv"] = [f"advertiser{i}.example" for i in range(300)]
    inputs.append(("realistic 2.6 KB (compact)", realistic.encode()))
    inputs.append(("large 15 KB (12 imps)", json.dumps(large, separators=(",", ":")).encode()))

    ours = {"decode+validate": decode_bid_request}
    baselines = {"json.loads": json.loads, "pydantic v2": p_request.model_validate_json}
    rows = []
    for name, data in inputs:
        decode_bid_request(data)  # must be valid: a benchmark of errors would be meaningless
        p_request.model_validate_json(data)
        row = {"input": name, "bytes": len(data)}
        row.update(per_call_us({**baselines, **ours}, data, number, repeats))
        rows.append(row)

    # The costs of the design: an unknown key (capturing path) and encoding for forwarding.
    with_unknown = realistic[:-1] + ',"futurefield":{"a":[1,2]}}'
    request = decode_bid_request(realistic.encode())
    request_unknown = decode_bid_request(with_unknown.encode())
    # Lenient decoding: a clean request must cost what the strict one does; one fault (a
    # malformed device.ip) takes the repair path.
    one_fault = realistic.replace(f'"ip":"{request.device.ip}"', '"ip":"111.222.333.444"', 1)
    assert decode_bid_request_lenient(one_fault.encode())[1], "the fault must be repaired"
    extra = per_call_us(
        {
            "decode+validate": lambda _: decode_bid_request(realistic.encode()),
            "lenient decode, clean": lambda _: decode_bid_request_lenient(realistic.encode()),
            "lenient decode, 1 repair": lambda _: decode_bid_request_lenient(one_fault.encode()),
            "duplicate-key scan (inside decode)": lambda _: has_duplicate_key(realistic.encode()),
            "decode+validate, 1 unknown key": lambda _: decode_bid_request(with_unknown.encode()),
            "encode for forwarding": lambda _: encode(request),
            "encode, with unknown keys": lambda _: encode(request_unknown),
            "msgspec.json.encode (floor)": lambda _: msgspec.json.encode(request),
        },
        b"",
        number,
        repeats,
    )

    print(
        f"{'input':<30}{'bytes':>7}{'json.loads':>12}{'pydantic v2':>13}{'ours':>9}{'vs json':>9}"
    )
    for row in rows:
        ratio = row["json.loads"] / row["decode+validate"]
        print(
            f"{row['input']:<30}{row['bytes']:>7}{row['json.loads']:>10.1f}us"
            f"{row['pydantic v2']:>11.1f}us{row['decode+validate']:>7.1f}us{ratio:>8.2f}x"
        )
    spec_rows = rows[: len(SPEC_EXAMPLES)]
    mean = {k: statistics.fmean(r[k] for r in spec_rows) for k in ("json.loads", "pydantic v2")}
    mean_ours = statistics.fmean(r["decode+validate"] for r in spec_rows)
    print(
        f"{'mean of the spec examples':<37}{mean['json.loads']:>10.1f}us"
        f"{mean['pydantic v2']:>11.1f}us{mean_ours:>7.1f}us{mean['json.loads'] / mean_ours:>8.2f}x"
    )
    print()
    for label, value in extra.items():
        print(f"{label:<37}{value:>10.1f}us   (realistic request)")
    realistic_row, large_row = rows[len(SPEC_EXAMPLES) :]
    print(
        json.dumps(
            {
                "bench": "openrtb",
                "decode_validate_us": round(mean_ours, 2),
                "json_loads_us": round(mean["json.loads"], 2),
                "pydantic_us": round(mean["pydantic v2"], 2),
                "ratio_vs_json": round(mean["json.loads"] / mean_ours, 2),
                "realistic_decode_validate_us": round(realistic_row["decode+validate"], 2),
                "realistic_json_loads_us": round(realistic_row["json.loads"], 2),
                "realistic_pydantic_us": round(realistic_row["pydantic v2"], 2),
                "large_decode_validate_us": round(large_row["decode+validate"], 2),
                "large_json_loads_us": round(large_row["json.loads"], 2),
                "unknown_key_decode_us": round(extra["decode+validate, 1 unknown key"], 2),
                "encode_us": round(extra["encode for forwarding"], 2),
                "encode_unknown_us": round(extra["encode, with unknown keys"], 2),
                "lenient_clean_us": round(extra["lenient decode, clean"], 2),
                "lenient_one_repair_us": round(extra["lenient decode, 1 repair"], 2),
                "dupkey_scan_us": round(extra["duplicate-key scan (inside decode)"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
