"""Reading and segmenting documents: Markdown, HTML, plain text, boilerplate, hostile files."""

from __future__ import annotations

import json

import polars as pl
import pytest

from synth.generators.documents import Block, DocumentError, Segment, Skipped, read_documents
from synth.generators.segments import clean_lines, segment, segment_problem
from synth.schemas import BacktranslationConfig

PARA = "Rain forms when water vapour in rising air cools, condenses on dust into droplets, and the droplets merge until they are heavy enough to fall."
CONFIG = BacktranslationConfig(docs="unused", min_chars=100, max_chars=600)


def segments_of(folder, config=CONFIG):
    out = {}
    for item in read_documents(folder):
        if isinstance(item, Skipped):
            out[item.doc] = item.reason
        else:
            name, _, blocks = item
            try:
                out[name] = list(segment(name, blocks, config))
            except UnicodeDecodeError:
                out[name] = "not UTF-8"
    return out


def test_markdown_sections_follow_headings_and_offsets_point_into_the_file(tmp_path):
    text = f"# Weather\n\n{PARA}\n\n## Snow\n\n{PARA.replace('Rain', 'Snow')}\n\nMore about snow and ice crystals forming in very cold clouds high above.\n"
    (tmp_path / "w.md").write_text(text)
    segs = segments_of(tmp_path)["w.md"]
    assert [s.heading for s in segs] == ["Weather", "Snow"]
    for s in segs:
        assert text[s.start : s.end].startswith(s.text[:40])
    assert "ice crystals" in segs[1].text


def test_html_keeps_headings_and_prose_and_drops_scripts_navigation_and_link_lists(tmp_path):
    html = (
        "<html><head><style>p{}</style></head><body><nav><a href='/'>Home</a> <a href='/a'>About</a></nav>"
        f"<h2>Rain</h2><p>{PARA}</p><script>alert('x')</script>"
        "<ul><li><a href='1'>Link one</a></li><li><a href='2'>Link two</a></li></ul>"
        "<footer>Copyright 2024</footer></body></html>"
    )
    (tmp_path / "r.html").write_text(html)
    [seg] = segments_of(tmp_path)["r.html"]
    assert seg.heading == "Rain" and seg.text == PARA


def test_plain_text_is_cut_into_paragraph_windows_within_bounds(tmp_path):
    (tmp_path / "p.txt").write_text("\n\n".join([PARA] * 9))
    segs = segments_of(tmp_path)["p.txt"]
    assert len(segs) > 1 and all(isinstance(s, Segment) and 100 <= len(s.text) <= 600 for s in segs)
    assert segs[0].end <= segs[1].start


def test_boilerplate_and_navigation_lines_are_removed():
    text = f"Skip to content\nHome | News | Sport | Weather\n{PARA}\nAll rights reserved 2024\nShare this"
    assert clean_lines(text) == PARA


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Too short.", "shorter than 100 characters"),
        ("\n".join(["one two", "three", "four five", "six", PARA]), "too many short lines"),
        (PARA.upper(), "mostly capitals"),
        ("#$%^&*()!@ " * 20 + PARA, "mostly symbols"),
        (" ".join(f"[page {i}](https://example.org/{i})" for i in range(8)) + " " + PARA[:60], "mostly links"),
        (PARA, None),
    ],
)
def test_segment_cleaning_rules(text, reason):
    assert segment_problem(text, CONFIG) == reason


def test_dropped_segments_come_with_their_reason(tmp_path):
    (tmp_path / "a.md").write_text(f"# Intro\n\nShort.\n\n# Body\n\n{PARA}\n")
    segs = segments_of(tmp_path)["a.md"]
    assert isinstance(segs[0], tuple) and segs[0][1] == "shorter than 100 characters"
    assert isinstance(segs[1], Segment)


def test_binary_empty_non_utf8_and_unknown_files_are_skipped_with_reasons(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "empty.md").write_text("   \n")
    (tmp_path / "latin.txt").write_bytes(PARA.encode() + b"\n\xe9\xe8\n")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    (tmp_path / "zgood.txt").write_text(PARA)
    out = segments_of(tmp_path)
    assert {name: reason for name, reason in out.items() if name != "zgood.txt"} == {
        "bin.txt": "binary file",
        "empty.md": "empty document",
        "latin.txt": "not UTF-8 text",  # found before any of its segments is used
        "photo.png": "unsupported file type '.png'",
    }


def test_a_huge_file_is_streamed(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "w") as f:
        for _ in range(200_000):  # about 28 MB
            f.write(PARA + "\n\n")
    item = next(iter(read_documents(tmp_path)))
    name, _, blocks = item
    first = next(iter(segment(name, blocks, CONFIG)))
    assert isinstance(first, Segment) and first.start == 0


def test_jsonl_and_parquet_sources_with_a_text_field(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(
        "\n".join([json.dumps({"body": PARA}), "{broken", json.dumps({"body": ""}), json.dumps({"body": 5})])
    )
    items = list(read_documents(jsonl, "body"))
    assert [i.reason for i in items if isinstance(i, Skipped)] == [
        "invalid JSON: Expecting property name enclosed in double quotes",
        "empty document",
        "'body' is not text",
    ]
    assert [i[0] for i in items if not isinstance(i, Skipped)] == ["d.jsonl:1"]
    parquet = tmp_path / "d.parquet"
    pl.DataFrame({"text": [PARA, None]}).write_parquet(parquet)
    items = list(read_documents(parquet))
    assert isinstance(items[1], Skipped) and items[0][0] == "d.parquet:1"
    pl.DataFrame({"content": [PARA]}).write_parquet(tmp_path / "x.parquet")
    with pytest.raises(DocumentError, match="no 'text' column"):
        read_documents(tmp_path / "x.parquet")  # when opened, not when first read
    (tmp_path / "y.parquet").write_bytes(b"not parquet")
    with pytest.raises(DocumentError, match=r"y\.parquet: not a readable Parquet file"):
        read_documents(tmp_path / "y.parquet")


def test_a_missing_or_unknown_source_is_an_error(tmp_path):
    with pytest.raises(DocumentError, match="no such file"):
        read_documents(tmp_path / "nope")
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(DocumentError, match="expected a folder"):
        read_documents(tmp_path / "a.csv")


# -- control characters, byte-order marks, sources with nothing usable --------------------------------


def test_control_characters_skip_a_document_naming_the_line_and_a_bom_is_dropped(tmp_path):
    (tmp_path / "bom.md").write_bytes(b"\xef\xbb\xbf# Rain\n\n" + PARA.encode())
    (tmp_path / "crlf.txt").write_bytes(PARA.encode() + b"\r\n\r\n" + PARA.encode() + b"\r\n")
    (tmp_path / "esc.txt").write_bytes(PARA.encode() + b"\n\n\x1b[2J\x1b]0;owned\x07 " + PARA.encode())
    (tmp_path / "cr.txt").write_bytes(PARA.encode() + b"\rOverwritten\n")
    # The bad byte lies past the first chunk read: the whole file is checked before any of it is used.
    (tmp_path / "late.txt").write_bytes((PARA + "\n\n").encode() * 12_000 + b"tail\x00\n")
    items = list(read_documents(tmp_path))
    skipped = {i.doc: i.reason for i in items if isinstance(i, Skipped)}
    assert skipped == {
        "cr.txt": "control character U+000D at line 1",
        "esc.txt": "control character U+001B at line 3",
        "late.txt": "binary file",
    }
    used = {name: list(blocks) for name, _, blocks in (i for i in items if not isinstance(i, Skipped))}
    assert sorted(used) == ["bom.md", "crlf.txt"]
    assert used["bom.md"][0] == Block("Rain", 0, heading=True)
    assert [b.text for b in used["crlf.txt"]] == [PARA, PARA]


def test_document_records_with_control_characters_are_skipped_naming_the_line(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    lines = [json.dumps({"text": PARA}), json.dumps({"text": f"{PARA}\nsecond line \u009b31m red"})]
    jsonl.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    items = list(read_documents(jsonl))
    assert items[0][0] == "d.jsonl:1"  # the byte-order mark before the first record is not JSON
    assert items[1] == Skipped("d.jsonl:2", "control character U+009B at line 2")


def test_a_source_without_a_usable_document_is_an_error_saying_what_it_holds(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    with pytest.raises(DocumentError) as caught:
        read_documents(folder)
    assert str(caught.value) == f"{folder}: no documents (an empty folder)"
    (folder / "a.txt").write_bytes(b"\x00\x01binary")
    (folder / "b.html").write_bytes(b"\x89PNG\r\n\x00")
    (folder / "c.md").write_text("  \n\n")
    with pytest.raises(DocumentError) as caught:
        read_documents(folder)
    assert str(caught.value) == f"{folder}: 3 files, none usable: 2 binary, 1 empty"
    (folder / "d.txt").write_text(PARA)
    assert [i.doc if isinstance(i, Skipped) else i[0] for i in read_documents(folder)] == [
        "a.txt",
        "b.html",
        "c.md",
        "d.txt",
    ]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(json.dumps({"text": ""}) + "\n\n" + json.dumps({"text": "a\x00b"}) + "\n{oops\n")
    with pytest.raises(DocumentError) as caught:
        read_documents(jsonl)
    assert str(caught.value) == f"{jsonl}: 3 records, none usable: 1 empty, 1 binary, 1 invalid JSON"
    jsonl.write_text("\n")
    with pytest.raises(DocumentError) as caught:
        read_documents(jsonl)
    assert str(caught.value) == f"{jsonl}: no documents (no records)"
