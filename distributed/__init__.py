"""How a run spreads over workers and machines: partition, shards, the engine, Ray, the run loop."""
