"""How a run is distributed: the Lightning strategy and, per net, its sharding plan."""
