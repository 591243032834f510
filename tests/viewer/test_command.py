"""`synth view` on the command line: folders that are not datasets are refused before anything is
served, the address comes on one line, Ctrl-C ends it cleanly, a browser opens only where one can."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from synth.cli.view import has_browser
from tests.conftest import build_small_dataset

REPO = Path(__file__).resolve().parents[2]


def synth(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synth.cli", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_a_folder_that_is_not_a_readable_dataset_is_refused_by_name_with_exit_2(tmp_path):
    dataset = tmp_path / "ds"
    build_small_dataset(dataset, batches=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{")
    for args in ([empty], [dataset, empty], [tmp_path / "missing"], [dataset, broken]):
        result = synth("view", *args, "--no-browser")
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith("error: ") and str(args[-1]) in result.stderr
        assert "Traceback" not in result.stderr and "serving" not in result.stdout


def test_a_port_in_use_is_refused_with_exit_2(tmp_path):
    dataset = tmp_path / "ds"
    build_small_dataset(dataset, batches=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = synth("view", dataset, "--no-browser", "--port", port)
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_the_address_comes_on_one_line_and_ctrl_c_ends_the_viewer_cleanly(tmp_path):
    dataset = tmp_path / "ds"
    build_small_dataset(dataset, batches=1)
    viewer = subprocess.Popen(
        [sys.executable, "-m", "synth.cli", "view", str(dataset), "--no-browser"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = viewer.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:") and line.endswith("/ (Ctrl-C to stop)\n"), line
        url = line.split()[1]
        with urllib.request.urlopen(url + "d/0/records?kind=rejects", timeout=30) as page:
            assert page.status == 200 and b"non-text modality" in page.read()
        viewer.send_signal(signal.SIGINT)
        assert viewer.wait(timeout=10) in (0, 130)
        assert "Traceback" not in viewer.stderr.read()
    finally:
        if viewer.poll() is None:
            viewer.kill()
            viewer.wait()


@pytest.mark.parametrize(
    ("environ", "platform", "expected"),
    [
        ({}, "linux", False),  # a server or a container: Python would start a text browser here
        ({"DISPLAY": ":0"}, "linux", True),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
        ({"BROWSER": "firefox"}, "linux", True),
        ({}, "darwin", True),
        ({}, "win32", True),
    ],
)
def test_a_browser_opens_only_where_there_is_one(environ, platform, expected):
    assert has_browser(environ, platform) is expected
