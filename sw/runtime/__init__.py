"""The host runtime: memory allocation per tier, program loading, decoding."""
