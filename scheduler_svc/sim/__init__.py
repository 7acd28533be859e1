"""The simulator: the scheduler core on a virtual clock and a virtual executor whose iteration
times come from a cost profile. Its commands (`infercept-sim`, the fidelity check) are in tooling/."""
