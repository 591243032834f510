"""Library noise stays out of the terminal unless asked for (-v / SYNTH_DEBUG)."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
import logging, warnings
from synth.flows.api import prepare_process
prepare_process()
warnings.warn_explicit("internal notice", DeprecationWarning, "x.py", 1, module="torch.jit._script")
warnings.warn_explicit("our own warning", UserWarning, "y.py", 1, module="synth.flows.run")
logging.basicConfig()
logging.getLogger("prefect").info("Starting temporary server")
logging.getLogger("prefect.task_runs").warning("batch 0 failed")
import os; print(os.environ["VLLM_LOGGING_LEVEL"])
"""


def run(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("SYNTH_VERBOSE", "SYNTH_DEBUG", "VLLM_LOGGING_LEVEL")}
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", CODE], capture_output=True, text=True, env={**clean, **env}, timeout=120
    )


def test_libraries_are_quiet_by_default_and_speak_with_verbose():
    quiet = run()
    assert quiet.returncode == 0, quiet.stderr
    assert "internal notice" not in quiet.stderr and "our own warning" in quiet.stderr
    assert "batch 0 failed" in quiet.stderr and quiet.stdout.strip() == "ERROR"
    loud = run(SYNTH_VERBOSE="1")
    assert "internal notice" in loud.stderr and loud.stdout.strip() == "INFO"
