"""The reconfigurable tile array: PCUs, PMUs, switches, configuration; see docs/tile-array.md."""
