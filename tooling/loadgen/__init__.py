"""The load generator: the paper's augmentation workloads, their metrics, and runners.

Modules, one concept each (RequestPlan and RequestRecord, planned requests in and per-request
records out, are the simulator's: scheduler_svc/sim/request_plan.py):
    workload_spec  WorkloadSpec: a run's workload, its flags (shared by every tool) and its plans
    workloads      the six augmentations and `mixed` as seeded Poisson RequestPlans
    trace_replay   the authors' trace replayed as their harness does (truncation, trace_shapes)
    metrics        normalized latency, TTFT, throughput, server counters: a RunRecord's parts
    runner         RequestPlans against a live deployment in real time, measured over a window
    load_run       one run against a deployment (Target), as a RunRecord
    sweep          several rates, and policies on fresh stacks
    report         the sweep table, max sustainable rates, the plot
    main           the `infercept-loadgen` command
"""
