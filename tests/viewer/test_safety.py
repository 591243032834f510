"""What the viewer guarantees whatever a dataset holds: damaged shards are named and left out while
the rest is served, every response forbids scripts, nothing is ever written to a dataset, and only
GET is answered (on loopback, only for loopback host names)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import polars as pl
import pytest
from starlette.testclient import TestClient

from synth.shards import read_manifest, scan
from synth.shards.layout import MANIFEST
from synth.viewer import create_app
from synth.viewer.app import CSP
from tests.viewer.conftest import fingerprint, listed_ids, text_of

EVERY_PAGE = [
    "/",
    "/d/0/records",
    "/d/0/records?kind=rejects",
    "/d/0/records?kind=rejects&stage=judge&q=joke",
    "/d/0/records?page=2",
    "/style.css",
]


def damage(path: Path) -> tuple[str, str]:
    """Alter one byte of the first kept shard (its size unchanged) and remove the first rejects
    shard; returns their manifest paths."""
    manifest = read_manifest(path)
    altered = next(s.path for s in manifest.shards if s.kind == "kept")
    removed = next(s.path for s in manifest.shards if s.kind == "rejects")
    file = path / altered
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    stat = file.stat()
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new state, whatever the clock
    (path / removed).unlink()
    return altered, removed


def test_damaged_shards_are_named_and_left_out_while_the_rest_is_served(shaped_dataset):
    path, ids = shaped_dataset
    manifest = read_manifest(path)
    good_kept = scan(path).collect()
    first_kept = next(s.path for s in manifest.shards if s.kind == "kept")
    in_altered = set(pl.read_parquet(path / first_kept)["id"])
    altered, removed = damage(path)
    lost = {s.path: s.rows for s in manifest.shards if s.path in (altered, removed)}
    viewer = TestClient(create_app([path]))

    index = viewer.get("/")
    assert index.status_code == 200
    rows = re.findall(r'<tr class="damaged-shard">(.*?)</tr>', index.text, re.S)
    assert [text_of(r) for r in rows] == [
        f"{altered} kept {lost[altered]} checksum mismatch (the file changed after it was written)",
        f"{removed} rejects {lost[removed]} missing",
    ]
    assert "2 damaged shards left out" in text_of(index.text)
    assert f"{manifest.rows('kept') - lost[altered]} kept" in text_of(index.text)

    listed = viewer.get("/d/0/records")
    assert listed.status_code == 200 and "2 damaged shards left out" in text_of(listed.text)
    assert set(listed_ids(listed.text)) == set(good_kept["id"]) - in_altered
    rejects = viewer.get("/d/0/records", params={"kind": "rejects"})
    assert rejects.status_code == 200 and removed in rejects.text

    a_lost_one = sorted(in_altered)[0]
    assert viewer.get("/d/0/record", params={"id": a_lost_one}).status_code == 404
    served = viewer.get("/d/0/record", params={"id": ids["pair"]})
    assert served.status_code == 200 and altered in served.text  # the record page says so too


def test_a_manifest_gone_while_serving_is_an_error_page_not_a_crash(shaped_dataset):
    path, _ = shaped_dataset
    viewer = TestClient(create_app([path]))
    (path / MANIFEST).rename(path / "manifest.moved")
    assert "not a dataset folder any more" in text_of(viewer.get("/").text)
    answer = viewer.get("/d/0/records")
    assert answer.status_code == 503 and "not a dataset folder any more" in text_of(answer.text)


@pytest.mark.parametrize("url", [*EVERY_PAGE, "/d/0/record?id=nope", "/d/9/records", "/nowhere", "/d/0/records?page=0"])
def test_every_response_carries_the_content_security_policy(shaped_readonly, url):
    path, _ = shaped_readonly
    answer = TestClient(create_app([path])).get(url)
    assert answer.headers["content-security-policy"] == CSP
    assert "script-src" not in CSP and "default-src 'none'" in CSP  # no script from anywhere
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_pages_hold_no_script_and_no_inline_style(shaped_readonly):
    path, ids = shaped_readonly
    viewer = TestClient(create_app([path]))
    for url in [*EVERY_PAGE[:-1], *(f"/d/0/record?id={i}" for i in ids.values())]:
        html = viewer.get(url).text
        assert "<script" not in html.lower() and " style=" not in html
        assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", html, re.I)  # no tag with an event handler


def test_serving_every_page_writes_nothing_to_the_dataset(shaped_dataset):
    path, ids = shaped_dataset
    before = fingerprint(path)
    viewer = TestClient(create_app([path]))
    for url in [*EVERY_PAGE, *(f"/d/0/record?id={i}" for i in ids.values()), "/d/0/record?id=nope"]:
        viewer.get(url)
    assert fingerprint(path) == before
    _, removed = damage(path)
    damaged = fingerprint(path)
    for url in EVERY_PAGE:
        viewer.get(url)
    assert fingerprint(path) == damaged  # a damaged dataset is shown, never repaired
    assert set(before) - set(damaged) == {removed} and set(damaged) <= set(before)


def test_only_get_is_answered(shaped_readonly):
    path, _ = shaped_readonly
    viewer = TestClient(create_app([path]))
    for method in ("POST", "PUT", "DELETE"):
        assert viewer.request(method, "/d/0/records").status_code == 405
    assert viewer.head("/").status_code == 200


def test_a_loopback_viewer_refuses_other_host_names(shaped_readonly):
    path, _ = shaped_readonly
    viewer = TestClient(create_app([path], allowed_hosts=["127.0.0.1", "localhost"]), base_url="http://127.0.0.1:8000")
    assert viewer.get("/").status_code == 200
    rebound = viewer.get("/", headers={"host": "attacker.example:8000"})
    assert rebound.status_code == 400
    assert rebound.headers["content-security-policy"] == CSP
