"""``embed --ray``'s decisions without a Ray instance: fresh, resumed or complete runs from OUT's manifest (a changed
input starts afresh, a folder it did not write is refused), the input listing, the settings handed to the actors, the
one-line errors out of Ray's wrapped exceptions, and the input's rows and ids as the single-machine path reads them."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedding_server.indexing.ray_run import MANIFEST, Output, Plan, _message, environment_settings, prepare
from embedding_server.indexing.sources import SourceError
from tests.support.ray_cluster import need_ray


def plan(source, out, **changes) -> Plan:
    fields = dict(source=str(source), out=str(out), column="text", id_column=None, model="m", models_dir=None,
                  outputs=["dense"], strict=False, settings={})
    return Plan(**{**fields, **changes})


def files_of(path):
    import pyarrow.fs as pafs

    return [pafs.LocalFileSystem().get_file_info(str(path))]


def test_a_run_is_fresh_resumed_complete_or_afresh_after_a_change(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("a\nb\n")
    out = Output(str(tmp_path / "out"))
    record, state = prepare(plan(source, out.uri), out, files_of(source))
    assert state == "fresh" and json.loads((tmp_path / "out" / MANIFEST).read_text())["state"] == "running"
    (tmp_path / "out" / "part-0.parquet").write_bytes(b"x")
    (tmp_path / "out.checkpoint").mkdir()
    assert prepare(plan(source, out.uri), out, files_of(source))[1] == "resume"  # same run: resumed
    assert (tmp_path / "out" / "part-0.parquet").exists() and (tmp_path / "out.checkpoint").exists()
    out.write_manifest({**record, "state": "complete", "rows": 2})
    assert prepare(plan(source, out.uri), out, files_of(source)) == ({**record, "state": "complete", "rows": 2},
                                                                    "complete")
    assert prepare(plan(source, out.uri, outputs=["dense", "sparse"]), out, files_of(source))[1] == "fresh"
    assert not (tmp_path / "out" / "part-0.parquet").exists() and not (tmp_path / "out.checkpoint").exists()
    source.write_text("a\nb\nc\n")  # the input changed: its size is in the signature
    (tmp_path / "out" / "part-1.parquet").write_bytes(b"x")
    assert prepare(plan(source, out.uri), out, files_of(source))[1] == "fresh"
    assert not (tmp_path / "out" / "part-1.parquet").exists()


def test_a_folder_not_written_by_embed_ray_is_refused_and_kept(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("a\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(SourceError, match="is not an output of embedding-server embed --ray"):
        prepare(plan(source, tmp_path / "mine"), Output(str(tmp_path / "mine")), files_of(source))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(SourceError, match="names a folder"):
        Output(str(source)).entries()


def test_the_driver_environment_settings_go_to_the_actors():
    env = {"EMBED_DTYPE": "bfloat16", "EMBED_MAX_BATCH_SIZE": "16", "EMBED_MODEL": "x", "EMBED_MODELS_DIR": "/m",
           "EMBED_NUM_THREADS": "8", "EMBED_TYPO": "1", "PATH": "/bin"}
    # model and models_dir are the stage's own arguments; threads come from each actor's CPUs
    assert environment_settings(env) == {"dtype": "bfloat16", "max_batch_size": "16"}


def test_errors_from_inside_ray_are_one_line():
    wrapped = RuntimeError("ray::MapWorker(MapBatches(Embedder)).submit() (pid=1)\nTraceback ...\n"
                           "embedding_server.indexing.ray_stage.RowError: row r7 has no text in column 'text' "
                           "(strict)\n\nThe above exception was the direct cause of ...\nUserCodeException: UDF failed")
    assert _message(wrapped) == "row r7 has no text in column 'text' (strict)"
    try:
        try:
            raise SourceError("in.csv: no column 'body' (columns: text); choose one with --column / --id-column")
        except SourceError as inner:
            raise RuntimeError("read task failed") from inner
    except RuntimeError as exc:
        assert _message(exc).startswith("in.csv: no column 'body'")
    assert _message(ValueError("first\nlast line")) == "last line"


def test_input_files_and_rows_with_their_ids(tmp_path):
    need_ray()
    import pyarrow.fs as pafs

    from embedding_server.indexing.ray_run import input_files
    from embedding_server.indexing.ray_source import rows

    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.jsonl").write_text('{"id": 7, "text": "x"}\n\n{"id": 8, "text": 3}\n')
    (tmp_path / "d" / "sub" / "b.csv").write_text("id,text\n1,hello\n2,\n")
    pq.write_table(pa.table({"id": [10, 11], "text": ["p", None]}), tmp_path / "d" / "c.parquet")
    (tmp_path / "d" / "_SUCCESS").write_text("")
    (tmp_path / "d" / ".hidden.txt").write_text("no")
    (tmp_path / "d" / "notes.md").write_text("not an input format")
    fs = pafs.LocalFileSystem()
    found = [f.path[len(str(tmp_path / "d")) + 1:] for f in input_files(fs, str(tmp_path / "d"))]
    assert found == ["a.jsonl", "c.parquet", "sub/b.csv"]
    assert [f.path for f in input_files(fs, str(tmp_path / "d" / "notes.md"))] == [str(tmp_path / "d" / "notes.md")]
    with pytest.raises(SourceError, match="no such file or folder"):
        input_files(fs, str(tmp_path / "missing"))

    def read(name, id_column=None):
        path = str(tmp_path / "d" / name)
        opened = fs.open_input_file(path) if name.endswith(".parquet") else fs.open_input_stream(path)
        with opened as f:
            return list(rows(f, path, "text", id_column))

    assert read("a.jsonl") == [("0", "x"), ("2", None)]  # blank lines keep their number; non-strings are empty
    assert read("a.jsonl", "id") == [("7", "x"), ("8", None)]
    assert read("sub/b.csv", "id") == [("1", "hello"), ("2", "")]
    assert read("c.parquet") == [("0", "p"), ("1", None)] and read("c.parquet", "id")[0] == ("10", "p")
    with pytest.raises(SourceError, match=r"no column 'body' \(columns: id, text\)"):
        path = str(tmp_path / "d" / "sub" / "b.csv")
        with fs.open_input_stream(path) as f:
            list(rows(f, path, "body", None))


def test_without_the_ray_extra_the_command_says_what_to_install(tmp_path, monkeypatch, capsys):
    from embedding_server.cli import main

    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if ray were not installed
    assert main(["embed", str(tmp_path / "in.txt"), "--out", str(tmp_path / "out"), "--ray"]) == 1
    assert "needs Ray: pip install 'embedding-server[ray]'" in capsys.readouterr().err
