"""infercept-sim: the scheduler core on a virtual clock and a virtual executor (cost model)."""
