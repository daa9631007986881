"""Audiences: segments of users defined by their logged behaviour (a declarative spec),
computed incrementally from the event log, with sizes estimated by Theta sketches,
published to the set store the exchange's targeting reads; and lookalikes of a seed segment
(`docs/insights.md`)."""
