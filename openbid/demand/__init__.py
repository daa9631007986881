"""Demand partners: the registry of external DSPs and their per-partner call state."""

from openbid.demand.registry import DemandRegistry, DemandState, QpsLimiter

__all__ = ["DemandRegistry", "DemandState", "QpsLimiter"]
