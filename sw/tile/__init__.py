"""Software descriptions of tile-array unit configurations."""
