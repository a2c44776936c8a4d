"""Ray job entrypoints, one module a job, each runnable as `python -m jobs.NAME --config FILE`."""
