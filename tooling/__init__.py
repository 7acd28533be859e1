"""The tools around the services: the ``infercept`` command (serve, demo) and its launcher and
supervisor, the load generator (``infercept-loadgen``), the simulator's command
(``infercept-sim``), the paper's figure, and the experiment harness that measures the real stack
against the simulator (``infercept-fidelity``).
"""
