"""Prefect flows and the command line: the top of the pipeline, calling generators and shards."""
