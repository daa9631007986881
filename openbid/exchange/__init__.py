"""The exchange (sell side): front door, orchestrator, fan-out to DSPs, auction, notices."""
