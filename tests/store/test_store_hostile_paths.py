"""Nothing a store holds is followed or opened blindly: links to /dev/zero, FIFOs, run folders linked out
of the store, and log paths a record names (issue 29, item 4)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from study.errors import StudyError
from study.report.synthetic import write_run
from study.store.files import UnsafeFile, printable, read_regular
from study.store.record import RunKey
from study.store.runs import Store
from study.store.status import stderr_tail
from study.store.verify import verify_store
from study.variants import load_tables

ROW = load_tables()["table3"].row("t3-ours")


def _run(store: Store, seed: int = 0) -> RunKey:
    write_run(store, ROW, None, seed, "smoke", dsc=0.8)
    return RunKey(ROW.run_config(None, "smoke").hash, seed)


def _study(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_the_reader_takes_regular_files_only(tmp_path):
    (tmp_path / "file").write_bytes(b"ok")
    assert read_regular(tmp_path / "file") == b"ok"
    os.symlink("/dev/zero", tmp_path / "zero")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * 100)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        read_regular(tmp_path / "zero")
    with pytest.raises(UnsafeFile, match="not a regular file"):
        read_regular(tmp_path / "fifo")  # opened without blocking, then refused
    with pytest.raises(UnsafeFile, match="over the limit of 10"):
        read_regular(tmp_path / "big", limit=10)
    assert printable("a\x1b[31mred\x07\nnext") == "a\\x1b[31mred\\x07\nnext"


@pytest.mark.slow
@pytest.mark.parametrize("plant", ["record-zero", "record-fifo", "model-zero"])
def test_verify_and_status_survive_hostile_files(tmp_path, plant):
    store = Store(tmp_path)
    key = _run(store)
    target = store.record_path(key) if plant.startswith("record") else store.model_path(key)
    target.unlink()
    if plant.endswith("zero"):
        os.symlink("/dev/zero", target)
    else:
        os.mkfifo(target)
    check = verify_store(store)
    ((run_id, why),) = check.damaged
    assert run_id == key.id and ("symbolic link" in why or "not a regular file" in why), why
    for command in (["verify"], ["status"]):
        done = _study(*command, "--results", str(tmp_path), timeout=60)
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        assert key.id in done.stdout + done.stderr or command == ["status"]


@pytest.mark.slow
def test_a_run_folder_linked_out_of_the_store_is_refused(tmp_path):
    store = Store(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("a labmate's file")
    key = RunKey(ROW.run_config(None, "smoke").hash, 0)
    store.runs_dir.mkdir(parents=True)
    os.symlink(outside, store.run_dir(key))
    assert store.load(key).status.value == "damaged"
    with pytest.raises(StudyError, match="a symbolic link, not a folder of the store"):
        store.set_aside(key)
    done = _study("run", "t3-ours", "--seeds", "1", "--profile", "smoke", "--results", str(store.root), timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "a symbolic link, not a folder of the store" in done.stderr + done.stdout
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]  # nothing moved in or out
    assert store.run_dir(key).is_symlink()


def test_status_shows_a_log_tail_only_from_the_stores_own_logs(tmp_path):
    from dataclasses import replace

    store = Store(tmp_path / "store")
    key = _run(store)
    record = store.load(key)
    logs = store.root / "slurm" / "logs"
    logs.mkdir(parents=True)
    (logs / "job.err").write_text("line one\n\x1b[2J\x1b]0;owned\x07RunFailed: boom\n")
    tail = stderr_tail(replace(record, launcher={"stderr_path": str(logs / "job.err")}), store)
    assert tail == "line one\n\\x1b[2J\\x1b]0;owned\\x07RunFailed: boom"
    elsewhere = tmp_path / "secret.txt"
    elsewhere.write_text("not the store's")
    os.mkfifo(logs / "fifo.err")
    os.symlink("/dev/zero", logs / "zero.err")
    for path in (elsewhere, "/dev/zero", logs / "fifo.err", logs / "zero.err", logs / ".." / ".." / ".." / "secret.txt"):
        assert stderr_tail(replace(record, launcher={"stderr_path": str(path)}), store) is None, path
