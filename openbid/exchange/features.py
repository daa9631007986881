"""The raw features of an auction (`openbid.enrich.features`, where the bidder endpoint
reads them too): re-exported for the exchange's modules and tests."""

from openbid.enrich.features import auction_features, floor_bucket

__all__ = ["auction_features", "floor_bucket"]
