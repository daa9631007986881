"""Personalisation: a campaign's creative chosen per audience segment by Thompson sampling, every
choice logged with its propensity, and a new policy evaluated offline (IPS, doubly robust)
before it serves (`docs/insights.md`)."""
