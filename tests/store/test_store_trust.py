"""Run records a lab can trust: typed records, integrity, damaged runs, `study verify`,
safe checkpoints, config validation, umask, and nothing written by a command that fails early."""

import json
import os
import pickle
import stat
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

from study.report.collect import resolve_profile
from study.report.synthetic import write_run
from study.store.atomic import atomic_write_bytes
from study.store.record import RecordError, RunKey, Status
from study.store.runs import Store
from study.train.run import RunFailed, train_run
from study.variants import find_row, load_tables

TINY = {"data": {"synthetic_count": 40}, "train": {"epochs": 2}}
TINY_ARGS = ["--profile", "smoke", "--set", "data.synthetic_count=40", "--set", "train.epochs=2", "--threads", "1"]


def tiny(row="ultralbm", epochs=2):
    return find_row(row).run_config("synthetic", "smoke", {"data": {"synthetic_count": 40},
                                                            "train": {"epochs": epochs}})


def cli(*args, results, env=None):
    argv = [sys.executable, "-m", "study", *args, "--results", str(results)]
    return subprocess.run(argv, cwd=REPO_ROOT, env={**os.environ, **(env or {})}, text=True,
                          capture_output=True, timeout=900)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny completed run, copied afresh for each test that damages it."""
    root = tmp_path_factory.mktemp("trained")
    torch.set_num_threads(1)
    record = train_run(tiny(), 0, Store(root), rows=("ultralbm",), progress=False)
    return root, record


def fresh_copy(trained, tmp_path):
    import shutil

    root, record = trained
    shutil.copytree(root, tmp_path / "store")
    return Store(tmp_path / "store"), record


# --------------------------------------------------------------------------- typed records


def test_run_key_and_record_round_trip(trained):
    root, record = trained
    store = Store(root)
    assert record.status is Status.COMPLETED and record.key == RunKey(tiny().hash, 0)
    assert RunKey.from_id(record.run_id) == record.key
    again = store.load(record.key)
    assert again == record
    assert set(record.files) == {"model.pt", "per_image_test.csv", "pred_test.npz"}
    assert record.pooled["test"].images == 12  # 30% of 40 synthetic images
    for bad in ("../x-s0", "0123456789abcdef-s-1", "0123456789ABCDEF-s0", "0123456789abcdef-s01"):
        with pytest.raises(RecordError):
            RunKey.from_id(bad)


# --------------------------------------------------------------------------- case 4: damaged runs


@pytest.mark.parametrize("damage, reason", [
    ("missing model", "model.pt is missing"),
    ("truncated csv", "per_image_test.csv has"),
    ("edited csv", "per_image_test.csv differs"),
    ("missing csv", "per_image_test.csv is missing"),
])
def test_damaged_files_make_a_damaged_run(trained, tmp_path, damage, reason):
    store, record = fresh_copy(trained, tmp_path)
    run_dir = store.run_dir(record.key)
    csv_path = store.per_image_path(record.key, "test")
    if damage == "missing model":
        store.model_path(record.key).unlink()
    elif damage == "truncated csv":  # a valid CSV that lost its last rows
        lines = csv_path.read_text().splitlines()
        csv_path.write_text("\n".join(lines[:-3]) + "\n")
    elif damage == "edited csv":  # same size, one digit changed
        text = csv_path.read_text()
        i = text.rindex(",") + 1
        csv_path.write_text(text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1:])
    else:
        csv_path.unlink()
    loaded = store.load(record.key)
    assert loaded.status is Status.DAMAGED and reason in loaded.reason
    assert not loaded.completed
    assert run_dir.is_dir()  # reading never moves or deletes anything


def test_truncated_csv_never_reaches_the_audit_or_tables(tmp_path):
    """The reported case: a truncated but valid per-image CSV flipped an audit verdict."""
    from study.report.audit import audit_tables
    from study.report.collect import collect_tables
    from study.report.synthetic import counts_for_dice

    table = load_tables()["table4"]
    store = Store(tmp_path)
    ids = [f"img{i:03d}" for i in range(48)]
    for seed in range(3):
        write_run(store, table.row("t4-ours"), "isic2017", seed, "paper", counts=counts_for_dice([0.9] * 48), ids=ids)
        write_run(store, table.row("t4-4dwconv"), "isic2017", seed, "paper",
                  counts=counts_for_dice([0.88] * 48), ids=ids)
    row_cfg = table.row("t4-4dwconv").run_config("isic2017", "paper")
    victim = store.per_image_path(RunKey(row_cfg.hash, 0), "test")
    lines = victim.read_text().splitlines()
    victim.write_text("\n".join(lines[:10]) + "\n")  # 9 images left, all still valid rows
    td = collect_tables([table], store, "paper")[0]
    cell = td.rows[[r.row.id for r in td.rows].index("t4-4dwconv")].cells["isic2017_dsc"]
    assert len(cell.values) == 2  # the damaged seed is not in the table
    assert any(p.status == "damaged" and p.seed == 0 for p in td.problems)
    audit = audit_tables([td], store, n_boot=50)[0]
    row = next(r for r in audit.rows if r.row_id == "t4-4dwconv")
    assert row.n_seeds == "2/3" and row.image.n_images == 48


@pytest.mark.slow
def test_unparsable_records_are_damaged_and_block_nothing(trained, tmp_path):
    store, record = fresh_copy(trained, tmp_path)
    other = tiny(epochs=3)
    half = store.run_dir(RunKey(other.hash, 0)) / "record.json"
    half.parent.mkdir(parents=True)
    text = store.record_path(record.key).read_text()
    half.write_text(text[: len(text) // 2])
    listed = store.run_dir(RunKey(other.hash, 1)) / "record.json"
    listed.parent.mkdir(parents=True)
    listed.write_text("[1, 2, 3]\n")
    by_id = {r.run_id: r for r in store.records()}
    assert by_id[record.run_id].completed
    assert by_id[f"{other.hash}-s0"].status is Status.DAMAGED and "not valid JSON" in by_id[f"{other.hash}-s0"].reason
    assert by_id[f"{other.hash}-s1"].status is Status.DAMAGED and "expected a JSON object" in by_id[f"{other.hash}-s1"].reason
    status = cli("status", "--profile", "smoke", results=store.root)
    assert status.returncode == 0, status.stderr
    index = cli("status", "--export", str(tmp_path / "runs.csv"), results=store.root)
    assert index.returncode == 0, index.stderr
    report = cli("report", "--tables", "6", "--bootstrap", "20", "--out", str(tmp_path / "rep"), results=store.root)
    assert report.returncode == 0, report.stderr


@pytest.mark.slow
def test_verify_names_every_damage_and_run_trains_damaged_runs_again(trained, tmp_path):
    store, record = fresh_copy(trained, tmp_path)
    # a second completed run of another row, whose per-image CSV loses rows
    second = train_run(tiny("t6-none"), 0, store, progress=False)
    csv_path = store.per_image_path(second.key, "test")
    csv_path.write_text("\n".join(csv_path.read_text().splitlines()[:-2]) + "\n")
    store.model_path(record.key).unlink()  # a missing model.pt
    half = store.run_dir(RunKey("ab" * 8, 0)) / "record.json"  # a half record.json
    half.parent.mkdir(parents=True)
    half.write_text('{"run_id": "abababababababab-s0", "sta')
    (store.runs_dir / "notes from a labmate").mkdir()  # a stray folder
    out = cli("verify", results=store.root)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"damaged {second.run_id}: per_image_test.csv has" in out.stdout
    assert f"damaged {record.run_id}: model.pt is missing" in out.stdout
    assert "damaged abababababababab-s0" in out.stdout and "not valid JSON" in out.stdout
    assert "stray" in out.stdout and "notes from a labmate" in out.stdout
    assert "3 damaged" in out.stdout

    status = cli("status", "table6", "--seeds", "1", *TINY_ARGS[:-2], results=store.root)
    assert status.returncode == 0 and "damaged 1" in status.stdout and "per_image_test.csv has" in status.stdout
    again = cli("run", "t6-none", "--seeds", "1", *TINY_ARGS, results=store.root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"damaged {second.run_id}" in again.stdout
    assert store.load(second.key).completed
    aside = list(store.runs_dir.glob(f"{second.run_id}.damaged-*"))
    assert len(aside) == 1 and (aside[0] / "record.json").is_file()  # set aside, never deleted
    clean = cli("verify", results=store.root)
    assert f"damaged {second.run_id}" not in clean.stdout and f"set aside: {aside[0].name}" in clean.stdout


# --------------------------------------------------------------------------- case 1: checkpoints


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_hostile_checkpoint_runs_nothing(tmp_path):
    store = Store(tmp_path / "store")
    config = tiny()
    key = RunKey(config.hash, 0)
    marker = tmp_path / "pwned"
    last = store.checkpoint_path(key, "last")
    last.parent.mkdir(parents=True)
    with open(last, "wb") as fh:
        pickle.dump({"model": _Hostile(marker)}, fh)
    # the same payload really runs code when unpickled the unsafe way (the test's own check)
    probe = tmp_path / "probe"
    with open(probe, "wb") as fh:
        pickle.dump(_Hostile(tmp_path / "probe-ran"), fh)
    with open(probe, "rb") as fh:
        pickle.load(fh)
    assert (tmp_path / "probe-ran").exists()

    with pytest.raises(RunFailed, match=r"last\.pt: cannot be loaded as this run's checkpoint"):
        train_run(config, 0, store, progress=False)
    assert not marker.exists()
    assert store.load(key).status is Status.FAILED and "--restart-unreadable" in store.load(key).reason
    record = train_run(config, 0, store, progress=False, restart_unreadable=True)
    assert record.completed and not marker.exists()
    assert list(last.parent.glob("last.pt.unreadable-*"))


# --------------------------------------------------------------------------- case 6: configuration


@pytest.mark.parametrize("override, message", [
    ("nosection.x=1", "unknown config section(s) 'nosection'"),
    ("trian.epochs=1", "unknown config section(s) 'trian'"),
    ("train.epoch=1", "unknown field(s) epoch"),
    ("train.eta_min=-1", "train.eta_min: expected a number of at least 0 and at most 0.001"),
    ("train.eta_min=0.5", "train.eta_min: expected a number of at least 0 and at most 0.001"),
    ("train.weight_decay=-0.1", "train.weight_decay: expected a number of at least 0"),
    ("train.betas=[1.0,0.999]", "train.betas[0]: expected a number of at least 0 and below 1"),
    ("train.betas=[0.9]", "train.betas: expected two numbers"),
    ("data.split_seed=-2", "data.split_seed: expected a non-negative integer"),
])
@pytest.mark.slow
def test_bad_config_is_one_line_and_writes_nothing(tmp_path, override, message):
    out = cli("train", "--variant", "ultralbm", "--dataset", "synthetic", "--profile", "smoke", "--set", override,
              results=tmp_path)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["train", "--variant", "ultralbm", "--profile", "smoke", "--seed", "-1"], "--seed -1: expected a non-negative"),
    (["run", "t6-none", "--seed-list", "-1", "--profile", "smoke"], "--seed-list '-1': expected non-negative"),
    (["report", "--seeds", "0"], "--seeds 0: expected at least 1"),
])
@pytest.mark.slow
def test_bad_seeds_are_one_line_errors(tmp_path, args, message):
    out = cli(*args, results=tmp_path)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- case 9: failed commands


@pytest.mark.slow
def test_a_failed_command_writes_nothing_and_changes_no_report(tmp_path):
    table1 = load_tables()["table1"]
    store = Store(tmp_path)
    for seed in range(3):
        write_run(store, table1.row("ultralbm"), None, seed, "smoke", dsc=0.85 + seed / 100)
    env = {"STUDY_DATA_ISIC2017": "", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    before = sorted(p.name for p in store.runs_dir.iterdir())
    out = cli("train", "--variant", "ultralbm", "--dataset", "isic2017", "--seed", "0", results=tmp_path, env=env)
    assert out.returncode == 2 and "no root folder set for isic2017" in out.stderr
    assert sorted(p.name for p in store.runs_dir.iterdir()) == before
    assert resolve_profile(table1, store, "auto") == "smoke"
    # even a failed paper-profile run (from an older harness) does not switch the table
    write_run(store, table1.row("ultralbm"), "isic2017", 0, "paper", status="failed", reason="no data")
    assert resolve_profile(table1, store, "auto") == "smoke"


# --------------------------------------------------------------------------- case 8: permissions


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "sub" / "file.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "sub" / "file.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) == 0o777 & ~umask


def test_a_trained_run_is_readable_by_the_lab(trained):
    root, record = trained
    run_dir = Store(root).run_dir(record.key)
    for path in [run_dir, *run_dir.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, (path, oct(mode))  # group and others can read (umask 022)


# --------------------------------------------------------------------------- ENOSPC


def _can_mount_tmpfs() -> bool:
    import shutil

    return os.geteuid() == 0 and shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_next_run_starts_clean(tmp_path):
    if not _can_mount_tmpfs():
        from conftest import _missing

        _missing("a full disk is made with a small tmpfs in a private mount namespace (needs root and unshare)")
    full = tmp_path / "full"
    keep = tmp_path / "keep"
    full.mkdir()
    keep.mkdir()
    # 400 KiB: room for the record and the first files, not for the model and optimizer checkpoint
    script = (f"mount -t tmpfs -o size=400k tmpfs {full} && "
              f"{sys.executable} -m study train --variant ultralbm --dataset synthetic --profile smoke "
              f"--set data.synthetic_count=40 --set train.epochs=2 --threads 1 --results {full}; "
              f"rc=$?; cp -a {full}/. {keep}/; exit $rc")
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 2, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not list(keep.rglob(".*.tmp"))  # nothing torn, no temporary files left
    for record_path in keep.rglob("record.json"):
        json.loads(record_path.read_text())  # every record still parses
    again = cli("train", "--variant", "ultralbm", "--dataset", "synthetic", *TINY_ARGS, results=keep)
    assert again.returncode == 0 and "completed: test IoU" in again.stdout, again.stdout + again.stderr
