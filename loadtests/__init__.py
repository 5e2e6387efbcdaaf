"""Load tests of the HTTP service: locust scenarios (`locustfile.py`), the driver that starts
the stacks and runs them (`python -m loadtests.run`, `make loadtest`), the engine-only baseline
(`engine_bench.py`), the plot (`plot.py`) and the soak test (`soak.py`)."""
