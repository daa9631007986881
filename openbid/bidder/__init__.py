"""openbid as a DSP: `POST /bidder/openrtb` answers other exchanges' OpenRTB 2.6 bid
requests with the house campaigns' demand (`server.py`); its notice URLs, signed, and the
decoding of the prices they bring back (`notices.py`) (`docs/campaigns.md`)."""

from openbid.bidder.server import Bidder, offers_of

__all__ = ["Bidder", "offers_of"]
