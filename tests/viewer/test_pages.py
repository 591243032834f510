"""The viewer's pages through starlette's TestClient: the overview and its funnel, lists of records
and rejects with filters, search and pagination, a record's page with its sections."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import polars as pl
import pytest
from starlette.testclient import TestClient

from synth.shards import read_manifest, scan
from synth.shards.card import CALIBRATION_FILE
from synth.shards.summary import leading_verbs, length_stats
from synth.viewer import create_app
from synth.viewer.overview import lengths
from tests.viewer.conftest import TOKENS, add_shaped_records, build_numbered_dataset, listed_ids, text_of


def client(*paths: Path) -> TestClient:
    return TestClient(create_app(list(paths)))


def test_the_overview_shows_counts_and_a_funnel_from_generated_to_kept(shaped_readonly):
    path, _ = shaped_readonly
    manifest = read_manifest(path)
    kept, rejected = manifest.rows("kept"), manifest.rows("rejects")
    page = client(path).get("/")
    assert page.status_code == 200
    funnel = page.text[page.text.index('<table class="funnel">') :]
    funnel = funnel[: funnel.index("</table>")]
    rows = [text_of(row) for row in re.findall(r"<tr class=\"(?:generated|stage|kept)\">(.*?)</tr>", funnel, re.S)]
    assert rows[0] == f"generated (kept + rejects) {kept + rejected}"
    # Generation's stages come before curation's, each in pipeline order, and what remains after
    # the last one is what was kept.
    stages = [row.split(" -")[0] for row in rows[1:-1]]
    assert stages == ["generation / heuristic", "generation / evolution", "curation / judge", "curation / dedup"]
    remaining = kept + rejected
    for row in rows[1:-1]:
        dropped, left = re.search(r" -(\d+) (\d+)", row).groups()
        remaining -= int(dropped)
        assert int(left) == remaining
    assert remaining == kept and rows[-1] == f"kept {kept}"
    assert "non-text modality (draw): 6" in text_of(funnel)


def test_the_overview_shows_lengths_mix_verbs_tokens_and_stored_reports(shaped_dataset):
    path, _ = shaped_dataset
    calibration = {
        "auc": 0.875,
        "agreement": 0.8,
        "threshold": 4,
        "responses": 20,
        "source": "labelled.jsonl",
        "judge_model": "judge-model",
        "judge_rubric": "abc123",
        "unparseable": 1,
        "by_label": {"good": {"n": 10, "dropped": 2}, "bad": {"n": 10, "dropped": 8}},
    }
    (path / CALIBRATION_FILE).write_text(json.dumps(calibration))
    text = text_of(client(path).get("/").text)
    kept = read_manifest(path).rows("kept")
    per_kept = sum(t["prompt"] + t["completion"] for t in TOKENS.values()) / kept
    assert f"900 prompt + 300 completion tokens : {per_kept:,.1f} per kept record" in text
    assert "Judge calibration" in text and "ROC AUC 0.875" in text
    assert "Languages language count de 1" in text
    assert "Abilities ability count math 1" in text
    verbs = leading_verbs(scan(path))
    assert f"Leading verbs verb count {verbs['verb'][0]} {verbs['count'][0]}" in text


def test_the_overview_counts_words_as_synth_inspect_does(shaped_readonly):
    path, _ = shaped_readonly
    figures = lengths(scan(path))
    assert figures["stats"] == length_stats(scan(path)).to_dicts()
    kept = scan(path).collect()
    for field in ("instruction", "input", "output"):
        assert sum(row[field] for row in figures["histogram"]) == kept.height
        assert figures["histogram"][0][field] == (kept[field] == "").sum()  # the empty ones have a row


def test_lists_show_kept_records_and_rejects_with_their_reasons(shaped_readonly):
    path, _ = shaped_readonly
    viewer = client(path)
    kept = viewer.get("/d/0/records")
    assert set(listed_ids(kept.text)) == set(scan(path).select("id").collect()["id"])
    rejects = viewer.get("/d/0/records", params={"kind": "rejects"})
    assert set(listed_ids(rejects.text)) == set(scan(path, "rejects").select("id").collect()["id"])
    assert "curation / judge" in text_of(rejects.text) and "score below 4" in text_of(rejects.text)


@pytest.mark.parametrize(
    ("params", "column", "value"),
    [
        ({"kind": "rejects", "stage": "judge"}, "stage", "judge"),
        ({"kind": "rejects", "phase": "curation"}, "phase", "curation"),
        ({"kind": "rejects", "reason": "refusal"}, "reason", "refusal"),
        ({"kind": "kept", "run": "shapes"}, "run_id", "shapes"),
        ({"kind": "kept", "generator": "preferences"}, "generator", "preferences"),
        ({"kind": "kept", "language": "de"}, "language", "de"),
        ({"kind": "kept", "ability": "math"}, "ability", "math"),
    ],
)
def test_a_filter_lists_exactly_the_rows_with_that_value(shaped_readonly, params, column, value):
    path, _ = shaped_readonly
    frame = scan(path, params["kind"]).collect()
    expected = set(frame.filter(pl.col(column) == value)["id"])
    assert expected and len(expected) < frame.height  # the filter has something to leave out
    page = client(path).get("/d/0/records", params=params)
    assert set(listed_ids(page.text)) == expected
    assert f'<option value="{value}" selected>' in page.text


def test_filters_combine_with_each_other_and_with_search(shaped_readonly):
    path, _ = shaped_readonly
    page = client(path).get("/d/0/records", params={"kind": "rejects", "phase": "curation", "q": "JOKE"})
    rejects = scan(path, "rejects").collect()
    joke = rejects.filter(pl.col("instruction") == "Tell a joke.")["id"].to_list()
    assert listed_ids(page.text) == joke


def test_search_is_a_case_insensitive_literal_substring_of_instruction_input_or_output(shaped_readonly):
    path, ids = shaped_readonly
    viewer = client(path)

    def found(text: str) -> set[str]:
        return set(listed_ids(viewer.get("/d/0/records", params={"q": text}).text))

    assert found("PHOTOSYNTHESIS") == {ids["recycled"]}  # instruction
    assert found("GULLS CIRCLE") == {ids["segment"]}  # output
    assert found("onerror=") == {ids["hostile"]}  # input
    assert found("<script>window") == {ids["hostile"]}
    assert found("3 1 2.") == {ids["selected"]}  # the dot is a dot, not any character
    assert found("3 1 2?") == set()
    assert found("(") == {ids["hostile"]}  # a pattern that would not compile is text too
    assert found("no such text anywhere") == set()


def test_pages_of_fifty_link_to_each_other_and_cover_every_record_once(tmp_path):
    path = tmp_path / "numbered"
    build_numbered_dataset(path, kept=120)
    viewer = client(path)
    seen: list[str] = []
    url = "/d/0/records?kind=kept"
    pages = []
    while url:
        page = viewer.get(url)
        pages.append(page)
        seen += listed_ids(page.text)
        following = re.search(r'<a href="([^"]+)" id="next"', page.text)
        url = unescape(following.group(1)) if following else None
    assert [len(listed_ids(p.text)) for p in pages] == [50, 50, 20]
    assert seen == scan(path).select("id").collect()["id"].to_list()  # shard order, no row twice
    assert 'id="prev"' not in pages[0].text and 'id="prev"' in pages[2].text
    assert "101-120, page 3 of 3" in text_of(pages[2].text)
    previous = re.search(r'<a href="([^"]+)" id="prev"', pages[2].text).group(1)
    assert listed_ids(viewer.get(unescape(previous)).text) == listed_ids(pages[1].text)


def test_pages_of_a_filtered_list_hold_the_matches_in_order(tmp_path):
    path = tmp_path / "numbered"
    build_numbered_dataset(path, kept=200)
    viewer = client(path)
    # "number 1" matches 1, 10-19 and 100-199: 111 records over shards of 40.
    expected = [r for r in scan(path).collect().to_dicts() if "number 1" in r["instruction"]]
    pages = [viewer.get("/d/0/records", params={"q": "Number 1", "page": n}) for n in (1, 2, 3)]
    assert [i for p in pages for i in listed_ids(p.text)] == [r["id"] for r in expected]
    assert "111 records match" in text_of(pages[0].text)
    beyond = viewer.get("/d/0/records", params={"q": "Number 1", "page": 4})
    assert beyond.status_code == 200 and listed_ids(beyond.text) == [] and 'id="next"' not in beyond.text


def test_an_evolved_record_shows_its_ancestors_and_its_children_kept_and_failed(shaped_readonly):
    path, ids = shaped_readonly
    chain = scan(path).filter(pl.col("generator") == "evol_instruct").collect().sort("round")
    root, middle = chain["id"][0], chain["id"][1]
    page = client(path).get("/d/0/record", params={"id": middle})
    lineage = page.text[page.text.index('<section class="lineage">') :]
    ancestors = lineage[lineage.index('<ol class="ancestors">') : lineage.index("</ol>")]
    assert re.findall(r"record\?id=(\w+)", ancestors) == [root]
    assert f"record?id={ids['evolved']}" in lineage  # its child, kept
    last = client(path).get("/d/0/record", params={"id": ids["evolved"]})
    assert re.findall(
        r"record\?id=(\w+)", last.text[last.text.index('<ol class="ancestors">') :].split("</ol>")[0]
    ) == [
        middle,
        root,
    ]
    assert "Rejected children (1)" in text_of(last.text) and "rejected: evolution / refusal" in text_of(last.text)


def test_a_record_page_shows_each_section_its_record_has(shaped_readonly):
    path, ids = shaped_readonly
    viewer = client(path)

    def section(name: str, title: str) -> str:
        html = viewer.get("/d/0/record", params={"id": ids[name]}).text
        assert f"<h2>{title}</h2>" in html, title
        return text_of(html[html.index(f"<h2>{title}</h2>") :].split("</section>")[0])

    pair = section("pair", "Preference pair")
    assert "chosen Blue. chosen_score 4.5" in pair and "rejected Colour is a word. rejected_score 1.5" in pair
    assert "Does not name one." in pair
    assert "original_instruction Please explain" in section("recycled", "Recycled from")
    assert "source_doc harbour.txt source_start 120 source_end 166 grades 4 5" in section("segment", "Backtranslation")
    assert "judge_rationale Correct and complete; the numbers are sorted." in section("selected", "Judge")
    assert "selection_method deita selection_rank 0" in section("selected", "Selection")
    assert "complexity_score 2.25 quality_score 4.75" in section("selected", "Selection")
    assert "run_id shapes" in section("selected", "Provenance")
    reject = viewer.get("/d/0/record", params={"id": ids["failed_evolution"], "kind": "rejects"}).text
    assert "stage evolution reason refusal" in text_of(reject)
    assert "<h2>Preference pair</h2>" not in viewer.get("/d/0/record", params={"id": ids["segment"]}).text


def test_record_text_is_escaped_never_markup(shaped_readonly):
    path, ids = shaped_readonly
    viewer = client(path)
    for url, params in [
        ("/d/0/record", {"id": ids["hostile"]}),
        ("/d/0/records", {"q": "window"}),
    ]:
        html = viewer.get(url, params=params).text
        assert "<script" not in html and "<img" not in html and 'href="javascript' not in html
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    html = viewer.get("/d/0/record", params={"id": ids["hostile"]}).text
    assert '<pre class="record-text" id="text-output">[click](javascript:window.__pwned=3)</pre>' in html


def test_an_unknown_record_a_bad_parameter_and_an_unknown_dataset_are_answered_plainly(shaped_readonly):
    path, _ = shaped_readonly
    viewer = client(path)
    assert viewer.get("/d/0/record", params={"id": "nope"}).status_code == 404
    assert viewer.get("/d/1/records").status_code == 404
    for params in ({"page": "0"}, {"page": "two"}, {"kind": "everything"}, {"q": "x" * 1001}):
        answer = viewer.get("/d/0/records", params=params)
        assert answer.status_code == 400, params
        assert "<h1>Error 400</h1>" in answer.text


def test_several_datasets_are_served_side_by_side(shaped_readonly, tmp_path):
    path, _ = shaped_readonly
    other = tmp_path / "numbered"
    build_numbered_dataset(other, kept=3)
    viewer = client(path, other)
    assert '<section class="dataset" id="dataset-1">' in viewer.get("/").text
    assert len(listed_ids(viewer.get("/d/1/records").text)) == 0  # links of dataset 1 name it
    assert viewer.get("/d/1/records").text.count('href="/d/1/record?id=') == 3


def test_warming_computes_the_overview_once_ahead_of_the_first_visit(shaped_dataset, monkeypatch):
    import synth.viewer.app as viewer_app

    path, _ = shaped_dataset
    computed = []
    real = viewer_app.overview
    monkeypatch.setattr(viewer_app, "overview", lambda snapshot: computed.append(1) or real(snapshot))
    app = create_app([path])
    app.state.warm()
    assert computed == [1]
    page = TestClient(app).get("/")
    assert page.status_code == 200 and computed == [1]
    (path / "manifest.json").unlink()
    app.state.warm()  # a dataset that went away is left for its page to report


def test_a_commit_while_serving_shows_on_the_next_request(small_dataset):
    viewer = client(small_dataset)
    before = read_manifest(small_dataset).rows("kept")
    assert f'<strong class="kept-count">{before}</strong>' in viewer.get("/").text
    add_shaped_records(small_dataset)
    after = read_manifest(small_dataset).rows("kept")
    assert after > before
    assert f'<strong class="kept-count">{after}</strong>' in viewer.get("/").text
    assert f"kept ({after})" in viewer.get("/d/0/records").text


def test_a_run_that_finishes_while_serving_shows_as_finished(small_dataset):
    from synth.schemas import RunInfo
    from synth.shards import DatasetWriter

    viewer = client(small_dataset)
    with DatasetWriter(small_dataset) as writer:
        writer.start_run(RunInfo(run_id="late", generator="self_instruct", config={}, engine={}, model="scripted"))
    assert "late self_instruct scripted running" in text_of(viewer.get("/").text)
    with DatasetWriter(small_dataset) as writer:
        writer.finish_run("late")
    assert "late self_instruct scripted finished" in text_of(viewer.get("/").text)


def test_a_dataset_with_no_shards_yet_shows_zeros(tmp_path):
    from synth.schemas import RunInfo
    from synth.shards import DatasetWriter

    path = tmp_path / "new"
    with DatasetWriter(path) as writer:
        writer.start_run(RunInfo(run_id="r", generator="self_instruct", config={}, engine={}))
    viewer = client(path)
    index = viewer.get("/").text
    assert '<strong class="kept-count">0</strong>' in index and '<strong class="reject-count">0</strong>' in index
    assert "generated (kept + rejects) 0 kept 0" in text_of(index)
    for params in ({}, {"kind": "rejects", "q": "x"}):
        page = viewer.get("/d/0/records", params=params)
        assert page.status_code == 200 and "Nothing matches." in text_of(page.text)
