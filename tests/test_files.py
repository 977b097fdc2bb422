"""The one atomic-write helper: the target holds the old bytes or the new ones, never a mix."""
from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ner_lit.errors import UserError
from ner_lit.files import WriteError, atomic_writer, write_json_atomic, write_text_atomic


def test_the_open_file_is_named_by_its_temporary_path_beside_the_target(tmp_path: Path) -> None:
    with atomic_writer(tmp_path / "a.txt") as f:
        assert Path(f.name).parent == tmp_path and Path(f.name).name.startswith(".a.txt.")


def test_text_is_written_whole_with_unix_line_ends(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "sub" / "a.txt", "김철수\r\n는\n")
    assert path.read_bytes() == "김철수\r\n는\n".encode()
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_a_failure_inside_the_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_writer(target) as f:
        f.write('{"v": 2')
        raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == '{"v": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_the_file_gets_the_permissions_open_would_give_it(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = write_text_atomic(tmp_path / "a.txt", "x")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o640


def test_json_with_indent_ends_with_a_newline(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "a.json", {"b": [1]}, indent=2)
    assert path.read_text(encoding="utf-8") == '{\n  "b": [\n    1\n  ]\n}\n'


def test_a_named_temporary_is_used_and_gone_after(tmp_path: Path) -> None:
    temp = tmp_path / ".a.bin.mine"
    with atomic_writer(tmp_path / "a.bin", "wb", temp=temp) as f:
        assert Path(f.name) == temp  # a writer (and the fault-injection tests) can tell which file it writes
        f.write(b"\x00\x01")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01" and not temp.exists()


def test_a_process_killed_while_writing_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old", encoding="utf-8")
    code = ("import sys, time; from ner_lit.files import atomic_writer\n"
            "with atomic_writer(sys.argv[1]) as f:\n"
            "    f.write('new' * 1000); f.flush(); print('writing', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    time.sleep(0.05)
    assert target.read_text(encoding="utf-8") == "old"


def test_only_text_and_binary_write_modes_are_taken(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be"), atomic_writer(tmp_path / "a", "a"):
        pass


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES], ids=["full disk", "read-only", "no permission"])
def test_a_refused_write_is_one_clear_error_naming_the_file_and_the_old_file_stays(tmp_path: Path, code: int) -> None:
    target = write_text_atomic(tmp_path / "report.json", "old")
    with pytest.raises(WriteError) as info, atomic_writer(target) as f:
        f.write("new, half written")
        raise OSError(code, os.strerror(code))
    assert str(info.value) == f"{target}: could not be written ({os.strerror(code)}); what was there before is unchanged"
    assert isinstance(info.value, OSError) and isinstance(info.value, UserError)  # caches that carry on still catch it
    assert target.read_text(encoding="utf-8") == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_folder_where_no_temporary_can_be_made_is_a_write_error(tmp_path: Path, monkeypatch) -> None:
    def refused(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(WriteError, match=r"report\.json: could not be written \(Read-only file system\)"):
        write_text_atomic(tmp_path / "report.json", "x")
