"""The experiment harness: a real local stack measured (profile, calibration, the load
generator's run, the iteration log) and compared with the simulator (``infercept-fidelity``)."""
