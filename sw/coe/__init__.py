"""Composition of Experts: an expert library in DDR, an HBM expert cache, and the controller that routes,
schedules, switches and decodes (docs/coe.md)."""
