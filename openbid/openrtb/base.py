"""The base of every OpenRTB object: struct options, constrained field types, unknown fields.

Every object is a `msgspec.Struct` with `omit_defaults=True` (an absent optional field is
`None` and is not written back) and `forbid_unknown_fields=True`. The last option is what
makes the hot path fast: a request whose keys are all known decodes in one typed pass, and a
request with a key we do not model makes that pass fail at once, so the decoder takes the
slower path that captures the unknown keys (see `openbid.openrtb.codec`).

Captured unknown keys live in the `_unknown` field of the object that had them, as the raw
JSON text of its members (`"k1":v1,"k2":v2`, no braces). On the wire that field is written as
`"__openbid_unknown__":"k1":v1,...` and `codec.encode` deletes the marker key, which splices
the members back into their object: one bytes replace, no dict round trip. Because the
unknown keys travel with the object that owned them, they survive filtering imps, replacing
fields with `msgspec.structs.replace` and every other modification we make.

`ext` fields are `msgspec.Raw`: the bytes as received, re-emitted untouched; an absent `ext`
is an empty `Raw` (falsy). Constrained types (`NonNegInt`, `Flag`, ...) are checked by msgspec
in C while decoding; `validate` turns its messages into ours.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

UNKNOWN_KEY = "__openbid_unknown__"
"""Wire name of the field holding an object's unknown members; refused in any input."""

UNKNOWN_MARKER = b'"' + UNKNOWN_KEY.encode() + b'":'

NO_EXT = msgspec.Raw()
"""The value of an absent `ext`."""


class OpenRTBObject(
    msgspec.Struct,
    omit_defaults=True,
    forbid_unknown_fields=True,
    kw_only=True,
    repr_omit_defaults=True,
    gc=False,
):
    """Base of every OpenRTB, Native and AdCOM object.

    `_unknown` is typed `None` so that no input can fill it (`"__openbid_unknown__": null` is
    the only value that decodes, and it means nothing); the decoder stores a `msgspec.Raw`
    there after the typed pass. `gc=False`: these objects form trees, never cycles, so the
    garbage collector need not track the many small instances a request decodes into.
    """

    _unknown: None = msgspec.field(default=None, name=UNKNOWN_KEY)


# Constrained scalars: msgspec checks these while decoding. Integers are bounded to int32, as
# in the spec's protobuf definition: nothing in OpenRTB needs more, and a 20-digit "width"
# would only break whatever consumes it downstream.
# Numbers (prices, multipliers, ratios) are capped at 1e9 for the same reason: a CPM of 1e9
# is still an exact int64 in micros (1e15), a CPM of 1e300 would not be.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
NUMBER_MAX = 1e9
Int32 = Annotated[int, Meta(ge=INT32_MIN, le=INT32_MAX)]
NonNegInt = Annotated[int, Meta(ge=0, le=INT32_MAX)]
NonNegFloat = Annotated[float, Meta(ge=0, le=NUMBER_MAX)]
TimestampMs = Annotated[float, Meta(ge=0)]
Flag = Annotated[int, Meta(ge=0, le=1)]
Latitude = Annotated[float, Meta(ge=-90, le=90)]
Longitude = Annotated[float, Meta(ge=-180, le=180)]
Currency = Annotated[str, Meta(pattern="^[A-Z]{3}$")]
RequiredStr = Annotated[str, Meta(min_length=1)]
StartDelaySeconds = Annotated[int, Meta(ge=-2, le=INT32_MAX)]
MaxExtendedSeconds = Annotated[int, Meta(ge=-1, le=INT32_MAX)]
PodSeq = Annotated[int, Meta(ge=-1, le=1)]
SlotInPod = Annotated[int, Meta(ge=-1, le=2)]
UtcOffsetMinutes = Annotated[int, Meta(ge=-720, le=840)]
SellerId = Annotated[str, Meta(min_length=1, max_length=64)]
