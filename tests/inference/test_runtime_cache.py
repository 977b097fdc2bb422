"""ONNX Runtime's exported graph kept between starts: used again for the same weights, made again for
other weights or a damaged file, and never a reason for a start to fail."""
from __future__ import annotations

import mmap
import os
import re
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch

from ner_lit.inference import runtimes
from ner_lit.inference.choice import prepare_runtime
from ner_lit.inference.predictor import Predictor
from ner_lit.inference.runtimes import RuntimeCache
from ner_lit.memory import map_sparsely

from serve_fixtures import SENTENCES


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kinds of module exported from now on (the real export still runs)."""
    made: list[str] = []
    real = runtimes.export_onnx

    def counting(module, example, path):
        made.append(type(module).__name__)
        real(module, example, path)

    monkeypatch.setattr(runtimes, "export_onnx", counting)
    return made


def served(model_dir: Path, cache: Path) -> Predictor:
    p = Predictor.from_pretrained(model_dir)
    p.runtime_cache = cache
    prepare_runtime(p, "onnxruntime", pack=True)
    assert p.runtime.compiled and p.packing.packed
    return p


def answers(p: Predictor) -> list:
    return [[(e.start, e.end, e.label) for e in r.entities] for r in p.predict(SENTENCES)]


def test_a_second_start_of_the_same_model_loads_the_kept_graph_instead_of_exporting(tiny_model_dir, tmp_path, exports):
    first = served(tiny_model_dir, tmp_path)
    assert exports == ["PackedLogits"]
    assert len(list(tmp_path.glob("*.onnx"))) == 1 and len(list(tmp_path.glob("*.json"))) == 1
    second = served(tiny_model_dir, tmp_path)
    assert exports == ["PackedLogits"]  # no second export
    assert answers(second) == answers(first)


def test_other_weights_are_exported_again_under_another_key(tiny_model_dir, tmp_path, exports):
    served(tiny_model_dir, tmp_path)
    p = Predictor.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        next(p.model.parameters()).add_(0.01)
    p.runtime_cache = tmp_path
    prepare_runtime(p, "onnxruntime", pack=True)
    assert exports == ["PackedLogits", "PackedLogits"]
    assert len(list(tmp_path.glob("*.onnx"))) == 2


def test_a_damaged_kept_graph_is_removed_and_exported_again(tiny_model_dir, tmp_path, exports):
    first = served(tiny_model_dir, tmp_path)
    (graph,) = tmp_path.glob("*.onnx")
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    again = served(tiny_model_dir, tmp_path)
    assert exports == ["PackedLogits", "PackedLogits"]
    assert answers(again) == answers(first)
    assert RuntimeCache(tmp_path).find(graph.stem) == graph  # the new one, whole


def identity_graph(path: Path, table_rows: int) -> Path:
    """A one-``Gather`` ONNX graph whose table has ``table_rows`` rows of 4 floats."""
    table = onnx.numpy_helper.from_array(np.arange(table_rows * 4, dtype=np.float32).reshape(table_rows, 4), "table")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gather", ["table", "ids"], ["out"])], "g",
        [onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [None])],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [None, 4])], [table])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    return path


def test_only_the_most_recently_used_graphs_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes, "TABLE_MIN_BYTES", 1)
    cache = RuntimeCache(tmp_path / "cache", keep=2)
    for key, rows in (("a", 3), ("b", 4), ("c", 5)):
        cache.keep(key, identity_graph(tmp_path / f"{key}.onnx", rows))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "b.data", "b.json", "b.onnx", "c.data", "c.json", "c.onnx"]


# --------------------------------------------------------------------------- lookup tables beside the graph
@pytest.fixture
def split_small_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even the tiny model's word embeddings count as a large lookup table."""
    monkeypatch.setattr(runtimes, "TABLE_MIN_BYTES", 1)


def test_a_large_lookup_table_is_kept_beside_the_graph_page_aligned(tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes, "TABLE_MIN_BYTES", 40)  # the 12-row table (192 bytes), not a 2-row one
    source = identity_graph(tmp_path / "src.onnx", 12)
    graph = RuntimeCache(tmp_path / "cache").keep("k", source)
    kept = onnx.load(str(graph), load_external_data=False)
    (table,) = kept.graph.initializer
    info = {e.key: e.value for e in table.external_data}
    assert table.data_location == onnx.TensorProto.EXTERNAL and not table.raw_data
    assert info["location"] == "k.data" and int(info["offset"]) % runtimes.TABLE_ALIGN == 0
    loaded = onnx.numpy_helper.to_array(onnx.load(str(graph)).graph.initializer[0])
    assert np.array_equal(loaded, onnx.numpy_helper.to_array(onnx.load(str(source)).graph.initializer[0]))
    source2 = identity_graph(tmp_path / "small.onnx", 2)
    small = RuntimeCache(tmp_path / "cache").keep("s", source2)
    assert onnx.load(str(small), load_external_data=False).graph.initializer[0].raw_data  # under the bound: inline
    assert not (tmp_path / "cache" / "s.data").exists()


def test_the_kept_tables_are_mapped_by_the_session_and_answer_alike(tiny_model_dir, tmp_path, exports,
                                                                   split_small_tables):
    first = served(tiny_model_dir, tmp_path)
    (data,) = tmp_path.glob("*.data")
    maps = Path("/proc/self/maps").read_text(encoding="utf-8")
    assert str(data.resolve()) in maps  # mapped into memory, not read into the process's own
    second = served(tiny_model_dir, tmp_path)
    assert exports == ["PackedLogits"]  # the split graph was found again
    assert answers(first) == answers(second) == answers(served(tiny_model_dir, None))


def test_a_damaged_table_file_means_the_graph_is_exported_again(tiny_model_dir, tmp_path, exports, split_small_tables):
    first = served(tiny_model_dir, tmp_path)
    (data,) = tmp_path.glob("*.data")
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    again = served(tiny_model_dir, tmp_path)
    assert exports == ["PackedLogits", "PackedLogits"]
    assert answers(again) == answers(first)


def test_a_cache_folder_that_can_not_be_written_only_costs_the_export(tiny_model_dir, tmp_path, exports):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    p = served(tiny_model_dir, blocked / "runtimes")
    assert exports == ["PackedLogits"] and p.predict(["서울"])[0].text == "서울"


def mapped_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text(encoding="utf-8").splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.split(None, 5)[-1] == str(path.resolve())
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_a_sparsely_mapped_table_holds_only_the_pages_read(tmp_path):
    table = tmp_path / "table.data"
    with open(table, "wb") as f:
        f.write(os.urandom(32 << 20))
        f.flush()
        os.fsync(f.fileno())  # clean pages: the page cache may drop them
    with open(table, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert map_sparsely(table) == 1
        for offset in range(0, 32 << 20, 512 << 10):  # 64 reads, 512 KiB apart
            mapped[offset]
        assert mapped_kib(table) <= 64 * 16  # a page or a small folio per read, not the whole 32 MiB
