"""Insights over the event log and partners' data: attribution (`attribution/`), identity
resolution (`identity/`), clean-room aggregates (`cleanroom/`) (`docs/insights.md`). Each
analysis is its own subpackage; nothing here is imported by serving code."""
