"""Prefect flows: the top of the pipeline, calling generators, filters and shards (the command line,
`synth.cli`, calls these)."""
