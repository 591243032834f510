"""`synth view`: a read-only web viewer for datasets (records, rejects, lineage, the funnel).

Importing this package loads the web stack and polars; the CLI imports it inside its command.
"""

from synth.viewer.app import create_app

__all__ = ["create_app"]
