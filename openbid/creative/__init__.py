"""Creatives: rendering banner HTML, VAST 4 and native; OpenRTB macros; signed trackers."""

from openbid.creative.macros import AuctionMacros, substitute_macros
from openbid.creative.render import RenderError, render_banner, render_native, render_video
from openbid.creative.trackers import InvalidTracker, TrackerSigner

__all__ = [
    "AuctionMacros",
    "InvalidTracker",
    "RenderError",
    "TrackerSigner",
    "render_banner",
    "render_native",
    "render_video",
    "substitute_macros",
]
