"""Off-chip memory tiers, the TLN, AGCUs, the copy engine and the host port; see docs/memory.md."""
