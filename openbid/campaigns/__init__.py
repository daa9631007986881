"""The buy side: campaigns, their budgets and pacing (house demand and openbid as a DSP)."""
