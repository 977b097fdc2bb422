"""Reading and writing corpora: KLUE TSV, JSONL, plain text, and the errors bad files raise."""
from __future__ import annotations

import codecs
import json
import os
from pathlib import Path

import pytest

from ner_lit.corpus import lines as corpus_lines
from ner_lit.corpus import records as corpus_records
from ner_lit.corpus.formats import read_corpus, write_corpus
from ner_lit.corpus.jsonl import read_jsonl, write_jsonl
from ner_lit.corpus.klue import read_klue_tsv, write_klue_tsv
from ner_lit.corpus.records import CorpusError, Sentence
from ner_lit.corpus.text import read_text

COMMENTS = "## 토큰, 레이블 구분자 : \\t\n## 컬럼명 : CHAR\tNE_TAG\n"


def klue_block(sid: str, tagged: str, chars: str, tags: list[str]) -> str:
    return f"## {sid}\t{tagged}\n" + "".join(f"{c}\t{t}\n" for c, t in zip(chars, tags)) + "\n"


SEOUL = klue_block("s1", "<서울:LC>에서 봄", "서울에서 봄", ["B-LC", "I-LC", "O", "O", "O", "O"])
KIM = klue_block("s2", "<김 철수:PS>", "김 철수", ["B-PS", "I-PS", "I-PS", "I-PS"])
SEOUL_SENTENCE = Sentence("s1", "서울에서 봄", ["B-LC", "I-LC", "O", "O", "O", "O"])
KIM_SENTENCE = Sentence("s2", "김 철수", ["B-PS", "I-PS", "I-PS", "I-PS"])


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def assert_error(exc: pytest.ExceptionInfo[CorpusError], path: Path, line: int | None, phrase: str) -> None:
    message = str(exc.value)
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    assert where in message, message
    assert phrase in message, message


# ------------------------------------------------------------------------------ KLUE TSV


def test_klue_reads_id_text_and_tags_with_spaces_as_characters(tmp_path: Path) -> None:
    path = write(tmp_path, "a.tsv", COMMENTS + SEOUL + KIM)
    assert read_klue_tsv(path) == [SEOUL_SENTENCE, KIM_SENTENCE]


def test_klue_comment_line_with_a_tab_is_not_taken_for_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "a.tsv", COMMENTS + SEOUL)
    assert [s.id for s in read_klue_tsv(path)] == ["s1"]


def test_klue_round_trip_gives_equal_sentences(tmp_path: Path) -> None:
    original = [SEOUL_SENTENCE, KIM_SENTENCE, Sentence("s3", "a b", ["O", "O", "I-QT"])]
    write_klue_tsv(original, tmp_path / "out.tsv")
    assert read_klue_tsv(tmp_path / "out.tsv") == original


def test_klue_writer_puts_entities_in_header_markup(tmp_path: Path) -> None:
    write_klue_tsv([SEOUL_SENTENCE], tmp_path / "out.tsv")
    assert "## s1\t<서울:LC>에서 봄\n" in (tmp_path / "out.tsv").read_text(encoding="utf-8")


def test_klue_real_dev_written_back_is_byte_identical(klue_dir: Path, tmp_path: Path) -> None:
    sentences = read_klue_tsv(klue_dir / "dev.tsv")
    write_klue_tsv(sentences, tmp_path / "dev.tsv")
    assert len(sentences) == 5000
    assert (tmp_path / "dev.tsv").read_bytes() == (klue_dir / "dev.tsv").read_bytes()


def test_klue_reads_crlf_line_endings_like_lf(tmp_path: Path) -> None:
    path = write(tmp_path, "crlf.tsv", (COMMENTS + SEOUL + KIM).replace("\n", "\r\n"))
    assert read_klue_tsv(path) == [SEOUL_SENTENCE, KIM_SENTENCE]


def test_klue_reads_final_block_without_trailing_blank_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a.tsv", COMMENTS + SEOUL + KIM.rstrip("\n"))
    assert read_klue_tsv(path) == [SEOUL_SENTENCE, KIM_SENTENCE]


def test_klue_header_may_lack_a_trailing_space_the_characters_have(tmp_path: Path) -> None:
    # as sentence klue-ner-v1_train_01212_nsmc of the official train file does
    path = write(tmp_path, "a.tsv", klue_block("s1", "<봄:DT>", "봄 ", ["B-DT", "O"]))
    assert read_klue_tsv(path) == [Sentence("s1", "봄 ", ["B-DT", "O"])]


def test_klue_error_character_line_without_tab(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.tsv", "## s1\t서울\n서 B-LC\n울\tI-LC\n\n")
    with pytest.raises(CorpusError) as exc:
        read_klue_tsv(path)
    assert_error(exc, path, 2, "no tab")


def test_klue_error_more_than_one_character_before_tab(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.tsv", "## s1\t서울\n서울\tB-LC\n\n")
    with pytest.raises(CorpusError) as exc:
        read_klue_tsv(path)
    assert_error(exc, path, 2, "expected exactly one")


def test_klue_error_tag_not_in_bio_form(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.tsv", "## s1\t서울\n서\tB-LC\n울\tLC\n\n")
    with pytest.raises(CorpusError) as exc:
        read_klue_tsv(path)
    assert_error(exc, path, 3, "tag 'LC'")


def test_klue_error_characters_do_not_spell_header_sentence(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.tsv", SEOUL + klue_block("s2", "<부산:LC>", "부천", ["B-LC", "I-LC"]))
    with pytest.raises(CorpusError) as exc:
        read_klue_tsv(path)
    assert_error(exc, path, 9, "the characters spell '부천'")


def test_klue_error_character_tags_contradict_header_markup(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.tsv", klue_block("s1", "<서울:LC>", "서울", ["B-OG", "I-OG"]))
    with pytest.raises(CorpusError) as exc:
        read_klue_tsv(path)
    assert_error(exc, path, 1, "expected the header's entities")


def test_klue_error_header_line_inside_a_block(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.tsv", SEOUL.rstrip("\n") + "\n" + KIM)
    with pytest.raises(CorpusError) as exc:
        read_klue_tsv(path)
    assert_error(exc, path, 8, "expected a blank line between blocks")


def test_klue_error_duplicate_sentence_id(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.tsv", SEOUL + SEOUL)
    with pytest.raises(CorpusError) as exc:
        read_klue_tsv(path)
    assert_error(exc, path, 9, "already used on line 1")


def test_klue_error_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as exc:
        read_klue_tsv(tmp_path / "absent.tsv")
    assert_error(exc, tmp_path / "absent.tsv", None, "no such file")


def test_klue_error_file_with_only_comments_has_no_sentences(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.tsv", COMMENTS)
    with pytest.raises(CorpusError) as exc:
        read_klue_tsv(path)
    assert_error(exc, path, None, "no sentences")


def test_klue_writer_refuses_a_tab_in_the_text(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="expected no tab or line break"):
        write_klue_tsv([Sentence("s1", "a\tb")], tmp_path / "out.tsv")
    assert not (tmp_path / "out.tsv").exists()


# ------------------------------------------------------------------------------ JSONL


def jsonl(tmp_path: Path, *objects: object, name: str = "a.jsonl") -> Path:
    return write(tmp_path, name, "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects))


def test_jsonl_entity_list_alone_gives_the_tags(tmp_path: Path) -> None:
    path = jsonl(tmp_path, {"id": "s1", "origin": "서울에서 봄", "entity_list": [{"text": "서울", "label": "LC", "offset": [0, 2]}]})
    assert read_jsonl(path) == [SEOUL_SENTENCE]


def test_jsonl_character_list_alone_gives_text_and_tags(tmp_path: Path) -> None:
    pairs = [[c, t] for c, t in zip(SEOUL_SENTENCE.text, SEOUL_SENTENCE.tags)]
    path = jsonl(tmp_path, {"id": "s1", "character_list": pairs})
    assert read_jsonl(path) == [SEOUL_SENTENCE]


def test_jsonl_default_id_is_file_stem_and_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "news.jsonl", '\n{"origin": "봄", "entity_list": []}\n')
    assert [s.id for s in read_jsonl(path)] == ["news-2"]


def test_jsonl_round_trip_gives_equal_sentences(tmp_path: Path) -> None:
    original = [SEOUL_SENTENCE, KIM_SENTENCE]
    write_jsonl(original, tmp_path / "out.jsonl")
    assert read_jsonl(tmp_path / "out.jsonl") == original


def test_jsonl_writer_writes_id_both_lists_and_unescaped_korean(tmp_path: Path) -> None:
    write_jsonl([SEOUL_SENTENCE], tmp_path / "out.jsonl")
    line = (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    assert json.loads(line) == {
        "id": "s1",
        "origin": "서울에서 봄",
        "entity_list": [{"text": "서울", "label": "LC", "offset": [0, 2]}],
        "character_list": [[c, t] for c, t in zip(SEOUL_SENTENCE.text, SEOUL_SENTENCE.tags)],
    }
    assert "서울" in line


def test_jsonl_error_lists_that_disagree(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path,
        {"origin": "서울", "entity_list": [{"text": "서울", "label": "LC", "offset": [0, 2]}],
         "character_list": [["서", "B-OG"], ["울", "I-OG"]]},
    )
    with pytest.raises(CorpusError) as exc:
        read_jsonl(path)
    assert_error(exc, path, 1, "expected both to mark the same entities")


def test_jsonl_error_offset_outside_the_text(tmp_path: Path) -> None:
    path = jsonl(tmp_path, {"origin": "서울", "entity_list": [{"text": "서울", "label": "LC", "offset": [1, 3]}]})
    with pytest.raises(CorpusError) as exc:
        read_jsonl(path)
    assert_error(exc, path, 1, "lies outside the text")


def test_jsonl_error_entity_text_differs_from_its_span(tmp_path: Path) -> None:
    path = jsonl(tmp_path, {"origin": "서울에서", "entity_list": [{"text": "서울", "label": "LC", "offset": [1, 3]}]})
    with pytest.raises(CorpusError) as exc:
        read_jsonl(path)
    assert_error(exc, path, 1, "offset [1, 3] spans '울에'")


def test_jsonl_error_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl", '{"origin": "봄", "entity_list": []}\n{"origin": \n')
    with pytest.raises(CorpusError) as exc:
        read_jsonl(path)
    assert_error(exc, path, 2, "invalid JSON")


def test_jsonl_error_neither_list(tmp_path: Path) -> None:
    path = jsonl(tmp_path, {"origin": "봄"})
    with pytest.raises(CorpusError) as exc:
        read_jsonl(path)
    assert_error(exc, path, 1, 'neither "entity_list" nor "character_list"')


def test_jsonl_error_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as exc:
        read_jsonl(tmp_path / "absent.jsonl")
    assert_error(exc, tmp_path / "absent.jsonl", None, "no such file")


def test_jsonl_error_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.jsonl", "\n\n")
    with pytest.raises(CorpusError) as exc:
        read_jsonl(path)
    assert_error(exc, path, None, "no sentences")


# ------------------------------------------------------------------------------ plain text


def test_text_gives_all_outside_sentences_with_line_number_ids(tmp_path: Path) -> None:
    path = write(tmp_path, "in.txt", "서울에서 봄\n\n김 철수\r\n")
    assert read_text(path) == [Sentence("in-1", "서울에서 봄"), Sentence("in-3", "김 철수")]


def test_text_error_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "in.txt", "\n  \n")
    with pytest.raises(CorpusError) as exc:
        read_text(path)
    assert_error(exc, path, None, "no sentences")


# ------------------------------------------------------------------------------ any format


@pytest.mark.parametrize("name", ["c.tsv", "c.jsonl", "c.json", "C.TSV"])
def test_corpus_round_trips_in_the_format_of_its_extension(tmp_path: Path, name: str) -> None:
    write_corpus([SEOUL_SENTENCE], tmp_path / name)
    assert read_corpus(tmp_path / name) == [SEOUL_SENTENCE]


def test_corpus_txt_extension_reads_plain_text(tmp_path: Path) -> None:
    path = write(tmp_path, "in.txt", "서울에서 봄\n")
    assert read_corpus(path) == [Sentence("in-1", "서울에서 봄")]


def test_corpus_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "data.dat", COMMENTS + SEOUL)
    assert read_corpus(path, format="klue") == [SEOUL_SENTENCE]


def test_corpus_error_unknown_extension_lists_the_accepted_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "x")
    with pytest.raises(CorpusError) as exc:
        read_corpus(path)
    assert_error(exc, path, None, ".tsv (klue), .jsonl (jsonl), .json (jsonl), .txt (text)")


@pytest.mark.parametrize("name", ["c.tsv", "c.jsonl", "c.txt"])
def test_writer_refuses_to_overwrite_an_existing_file(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "keep")
    with pytest.raises(CorpusError) as exc:
        write_corpus([SEOUL_SENTENCE], path)
    assert_error(exc, path, None, "already exists")
    assert path.read_text() == "keep"


def test_writer_overwrites_when_asked(tmp_path: Path) -> None:
    path = write(tmp_path, "c.tsv", "old")
    write_klue_tsv([SEOUL_SENTENCE], path, overwrite=True)
    assert read_klue_tsv(path) == [SEOUL_SENTENCE]


def test_writer_failing_midway_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "c.tsv", "old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(corpus_lines.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_klue_tsv([SEOUL_SENTENCE], path, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["c.tsv"]
    assert path.read_text() == "old"



def test_jsonl_text_to_tag_may_carry_origin_alone(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "origin": "서울에 갔다"}\n', encoding="utf-8")
    (s,) = read_corpus(path, labelled=False)
    assert (s.id, s.text, set(s.tags)) == ("a", "서울에 갔다", {"O"})


def test_labelled_jsonl_without_either_list_is_still_an_error(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": "a", "origin": "서울에 갔다"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="train.jsonl:1.*neither"):
        read_corpus(path)


# ------------------------------------------------------------------------------ error excerpts, locations, limits


def test_a_huge_line_without_a_tab_is_quoted_as_a_short_excerpt_with_its_length(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.tsv", "## s1\t서울\n" + "서" * 1_000_000 + "\n\n")
    with pytest.raises(CorpusError) as exc:
        read_klue_tsv(path)
    assert_error(exc, path, 2, "no tab in '서서서")
    assert "… (1,000,000 characters)" in str(exc.value)
    assert len(str(exc.value)) < 400


def test_a_huge_json_value_is_quoted_as_a_short_excerpt(tmp_path: Path) -> None:
    path = jsonl(tmp_path, {"origin": "봄", "entity_list": ["x" * 100_000]})
    with pytest.raises(CorpusError) as exc:
        read_jsonl(path)
    assert_error(exc, path, 1, "entity_list[0] is 'xxx")
    assert len(str(exc.value)) < 500


def test_excerpt_keeps_short_values_whole_and_cuts_long_ones() -> None:
    assert corpus_records.excerpt("서울") == "'서울'"
    assert corpus_records.excerpt("a" * 201) == repr("a" * 200) + "… (201 characters)"
    assert corpus_records.excerpt(list(range(1000))).endswith("… (4,890 characters)")


@pytest.mark.parametrize("name,text,line,column", [
    ("bad.tsv", "## s1\t서울\n서\tB-LC\n울\tI-\xffLC\n\n", 3, 7),
    ("bad.jsonl", '{"origin": "봄", "entity_list": []}\n{"origin": "\xff"}\n', 2, 13),
    ("bad.txt", "봄\n\n여름 \xff가을\n", 3, 8),
])
def test_a_byte_that_is_not_utf8_is_named_by_line_and_byte_column(
        tmp_path: Path, name: str, text: str, line: int, column: int) -> None:
    path = tmp_path / name
    raw = text.encode("utf-8").replace("\xff".encode("utf-8"), b"\xff")
    path.write_bytes(raw)
    with pytest.raises(CorpusError) as exc:
        read_corpus(path)
    assert_error(exc, path, line, f"byte 0xff at byte column {column} is not UTF-8")
    assert raw.split(b"\n")[line - 1][column - 1] == 0xFF  # the column really points at the byte


def test_the_byte_column_counts_the_bytes_of_the_raw_line_a_bom_included(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfab\xffc\n")
    with pytest.raises(CorpusError) as exc:
        read_text(path)
    assert_error(exc, path, 1, "byte 0xff at byte column 6 is not UTF-8")


def test_klue_tag_outside_the_label_set_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "dev.tsv", SEOUL + klue_block("s2", "<화성:PL>", "화성", ["B-PL", "I-PL"]))
    with pytest.raises(CorpusError) as exc:
        read_klue_tsv(path, labels=["O", "B-LC", "I-LC"])
    assert_error(exc, path, 10, "sentence 's2', character 0 ('화'): tag 'B-PL' is not in the label set")


def test_jsonl_tag_outside_the_label_set_names_its_line(tmp_path: Path) -> None:
    path = jsonl(tmp_path, {"id": "a", "origin": "봄", "entity_list": []},
                 {"id": "b", "origin": "화성", "entity_list": [{"text": "화성", "label": "PL", "offset": [0, 2]}]})
    with pytest.raises(CorpusError) as exc:
        read_corpus(path, labels=["O", "B-LC", "I-LC"])
    assert_error(exc, path, 2, "character 0 ('화'): tag 'B-PL' is not in the label set")


def test_tags_inside_the_label_set_read_as_without_one(tmp_path: Path) -> None:
    path = write(tmp_path, "a.tsv", COMMENTS + SEOUL + KIM)
    assert read_klue_tsv(path, labels=["O", "B-LC", "I-LC", "B-PS", "I-PS"]) == [SEOUL_SENTENCE, KIM_SENTENCE]


@pytest.mark.parametrize("name,content,line", [
    ("long.tsv", COMMENTS + SEOUL + klue_block("s2", "가" * 11, "가" * 11, ["O"] * 11), 11),
    ("long.jsonl", json.dumps({"origin": "봄"}) + "\n" + json.dumps({"id": "s2", "origin": "가" * 11}) + "\n", 2),
    ("long.txt", "봄\n\n" + "가" * 11 + "\n", 3),
])
def test_a_sentence_over_max_chars_is_an_error_naming_its_line_and_length(
        tmp_path: Path, name: str, content: str, line: int) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(CorpusError) as exc:
        read_corpus(path, labelled=False, max_chars=10)
    assert_error(exc, path, line, "has 11 characters, expected at most max_chars=10")
    assert len(read_corpus(path, labelled=False, max_chars=11)) == 2  # at the limit is fine


def test_the_streamed_readers_give_the_whole_file_readers_sentences_and_errors(tmp_path: Path) -> None:
    """predict streams through iter_text/iter_jsonl: the same sentences, and the same error at the same place."""
    from ner_lit.corpus.jsonl import iter_jsonl, read_jsonl
    from ner_lit.corpus.text import iter_text, read_text

    text = tmp_path / "in.txt"
    text.write_bytes("\ufeff서울\r\n\n부산\n".encode() + b"\xc3\x28\n")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"origin": "서울"}\n\n{"id": "b", "origin": "부산"}\n', encoding="utf-8")
    assert list(iter_jsonl(jsonl, labelled=False)) == read_jsonl(jsonl, labelled=False)
    with pytest.raises(CorpusError) as whole:
        read_text(text)
    with pytest.raises(CorpusError) as streamed:
        list(iter_text(text))
    assert str(streamed.value) == str(whole.value)
    assert f"{text}:4: byte 0xc3 at byte column 1" in str(whole.value)
    text.write_bytes("\ufeff서울\r\n\n부산\n".encode())
    assert list(iter_text(text)) == read_text(text) and [s.id for s in read_text(text)] == ["in-1", "in-3"]


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 20])
def test_iter_lines_reads_blocks_as_the_whole_file_splits_at_any_block_size(tmp_path: Path, block: int) -> None:
    from ner_lit.corpus.lines import iter_lines

    data = codecs.BOM_UTF8 + "가나\r\n\n다\rx\n" .encode() + "라" .encode() * 9 + b"\nlast"
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    whole = data[len(codecs.BOM_UTF8):].decode().split("\n")
    assert list(iter_lines(path, "text", block)) == [(i, x[:-1] if x.endswith("\r") else x) for i, x in enumerate(whole, 1)]
    path.write_bytes(data[:-4])  # ends with a line end: no empty last line
    assert [x for _, x in iter_lines(path, "text", block)][-1] == "라" * 9


@pytest.mark.parametrize("block", [1, 5, 1 << 20])
def test_iter_lines_names_the_first_bad_byte_at_any_block_size(tmp_path: Path, block: int) -> None:
    from ner_lit.corpus.lines import iter_lines
    from ner_lit.corpus.records import CorpusError

    path = tmp_path / "f.txt"
    path.write_bytes(codecs.BOM_UTF8 + "가\n나다\n".encode() + b"ab\xffc\n")
    with pytest.raises(CorpusError) as info:
        list(iter_lines(path, "text", block))
    offset = len(codecs.BOM_UTF8) + len("가\n나다\n".encode()) + 2
    assert str(info.value) == (f"{path}:3: byte 0xff at byte column 3 is not UTF-8 (invalid start byte; byte {offset:,} of "
                               "the file), expected UTF-8 text")
