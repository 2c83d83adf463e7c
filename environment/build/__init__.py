"""Economies built by the shards that hold them: counter-based draws, graph rows, assembly."""
