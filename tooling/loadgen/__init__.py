"""The load generator: the paper's augmentation workloads, their metrics, and runners.

Modules, one concept each:
    spec        Segment, RequestPlan, RequestRecord: planned requests in, per-request records out
    workloads   the six augmentations and `mixed` as seeded Poisson RequestPlans; trace replay
    metrics     normalized latency, TTFT, throughput, server counters; the results record
    runner      RequestPlans against a live deployment in real time, measured over a window
    main        the `infercept-loadgen` command
"""
