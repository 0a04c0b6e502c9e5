"""Pure rules of the read API: list ordering and cursors, who may see what."""
