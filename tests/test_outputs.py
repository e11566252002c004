"""Nothing a user has is lost to an output: dataset folders, atomic folders and what killed writers leave behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sepit._io import atomic_dir, remove_stale_partials
from sepit.cli import build_parser
from sepit.cli.data import build_config
from sepit.data.build import FORMAT, check_output_dir
from sepit.errors import ConfigError, InputError


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_atomic_dir_removes_what_killed_writers_left(tmp_path) -> None:
    target = tmp_path / "model"
    dead = _dead_pid()
    stale = tmp_path / f".model.{dead}.abc123.partial"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "weights.bin").write_bytes(b"x" * 10)
    stale_old = tmp_path / f".model.old-{dead}"
    stale_old.mkdir()
    live = tmp_path / f".model.{os.getppid()}.def456.partial"  # a writer that is still running: left alone
    live.mkdir()
    other = tmp_path / ".model.notes.partial"  # not a writer's folder (no pid): left alone
    other.mkdir()
    with atomic_dir(target) as tmp:
        assert tmp.name.startswith(f".model.{os.getpid()}.") and tmp.name.endswith(".partial")
        (tmp / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    assert not stale.exists() and not stale_old.exists()
    assert live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "model"])
    assert remove_stale_partials(target) == []


def test_atomic_dir_keeps_the_old_folder_on_error(tmp_path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("killed half-way")
    assert (target / "v").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _fake_build(path, **extra_files) -> None:
    (path / "records").mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"format": FORMAT}))
    for name, text in extra_files.items():
        (path / name).write_text(text)


def test_dataset_output_folder_is_checked(tmp_path) -> None:
    check_output_dir(tmp_path / "new")  # does not exist: fine
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")
    _fake_build(tmp_path / "earlier")
    check_output_dir(tmp_path / "earlier")  # an earlier build: replaced whole
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work")
    (mine / "data.csv").write_text("1,2")
    with pytest.raises(InputError, match=r"mine: the output folder holds files a dataset build did not write "
                                         r"\(data.csv, thesis.tex\).*--overwrite"):
        check_output_dir(mine)
    check_output_dir(mine, overwrite=True)  # asked for
    _fake_build(tmp_path / "added", **{"notes.txt": "mine"})
    with pytest.raises(InputError, match=r"notes.txt"):
        check_output_dir(tmp_path / "added")  # a build the user added files to: those files would be lost
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(InputError, match="not a sepit dataset"):
        check_output_dir(fake)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        check_output_dir(tmp_path / "file")


def test_build_refuses_a_foreign_folder_before_any_work(tmp_path) -> None:
    from sepit.data.build import build_dataset
    from sepit.data.config import DataConfig

    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="keep.txt"):
        build_dataset(DataConfig(), tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "precious"


def _build_args(*argv: str):
    return build_parser().parse_args(["data", "build", "-o", "out", *argv])


def test_data_build_structure_options_go_together(tmp_path) -> None:
    """README's `sepit data build --structures DIR --structure-map TSV` gives a config with both (it used to fail with
    an internal ValueError, the options being applied one at a time); one without the other is a ConfigError."""
    cfg = build_config(_build_args("--structures", str(tmp_path), "--structure-map", str(tmp_path / "map.tsv"),
                                   "--identity", "0.5", "--extra-identity", "0.3", "--seed", "3"))
    assert cfg.structures == str(tmp_path) and cfg.structure_map == str(tmp_path / "map.tsv")
    assert cfg.split.identity == 0.5 and cfg.split.extra_identities == [0.3] and cfg.seed == 3
    with pytest.raises(ConfigError, match="structures and structure_map go together"):
        build_config(_build_args("--structures", str(tmp_path)))
