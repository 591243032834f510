"""Language lexicons as data files: the built-in ones, a language added by its file alone, and files
that cannot be used failing with their name."""

from __future__ import annotations

from pathlib import Path

import pytest

from synth.filters.lexicons import FOLDER, LEXICONS, LexiconError, load_lexicon, load_lexicons


def test_every_built_in_file_is_a_lexicon_keyed_by_its_language_code() -> None:
    codes = sorted(p.stem for p in FOLDER.glob("*.toml"))
    assert codes == sorted(LEXICONS)
    assert {"en", "zh"} <= set(LEXICONS)
    assert not LEXICONS["en"].spaceless and LEXICONS["zh"].spaceless
    assert LEXICONS["en"].refusal.search("Sorry, I can't help with that.")
    assert LEXICONS["zh"].refusal.search("抱歉，我无法回答这个问题。")


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_language_is_added_by_its_file_alone(tmp_path: Path) -> None:
    write(tmp_path, "de.toml", "stop_words = 'Ja der die das Und'\nrefusals = ['es tut mir leid', 'ich kann nicht']\n")
    write(
        tmp_path,
        "ja.toml",
        "spaceless = true\nstop_words = 'はい です ね'\nrefusals = ['申し訳(?:ありません|ございません)']\n",
    )
    lexicons = load_lexicons(tmp_path)
    assert sorted(lexicons) == ["de", "ja"]
    de, ja = lexicons["de"], lexicons["ja"]
    # A spaced language: whole words, case folded; refusal phrases at word boundaries only.
    assert de.only_stop_words("Ja, und das!") and not de.only_stop_words("Ja, Wasser.")
    assert de.refusal.search("Es tut mir leid.") and not de.refusal.search("ich kann nichts dafür")
    # A spaceless language: stop words come out as substrings, phrases match anywhere.
    assert ja.only_stop_words("はいですね。") and not ja.only_stop_words("はい、水です。")
    assert ja.refusal.search("大変申し訳ございませんが")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("stop_words = 'a'\nrefusals = [\n", "Invalid value"),  # not TOML
        ("stop_words = 'a'\n", "'refusals' must be a non-empty list"),
        ("stop_words = 'a'\nrefusals = []\n", "'refusals' must be a non-empty list"),
        ("stop_words = ['a']\nrefusals = ['x']\n", "'stop_words' must be a string"),
        ("spaceless = 'yes'\nrefusals = ['x']\n", "'spaceless' must be true or false"),
        ("refusals = ['(unclosed']\n", "'refusals': missing )"),
        ("refusals = ['x']\nstopwords = 'a'\n", "unknown field(s) stopwords"),
    ],
)
def test_a_file_that_cannot_be_used_is_named_with_what_is_wrong(tmp_path: Path, text: str, complaint: str) -> None:
    path = write(tmp_path, "xx.toml", text)
    with pytest.raises(LexiconError) as caught:
        load_lexicon(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert complaint in str(caught.value)
