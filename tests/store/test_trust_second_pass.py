"""Trust, second pass: runs never complete without their history, numbers follow from counts, leases
judged on one clock, a manifest a paper can cite, a torn search journal, and the last hostile inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from conftest import REPO_ROOT
from runs import tiny

from study.errors import ConfigError
from study.store import lease as lease_mod
from study.store.lease import RunLease
from study.store.record import Status
from study.store.runs import Store
from study.train import loop as loop_mod
from study.train import run as run_mod

# ------------------------------------------------------------------ 1. stopped between the last epoch and the seal


class Killed(BaseException):
    """A SIGKILL: nothing catches it, nothing is recorded on the way out."""


EPOCHS = 2
# (what, where, which call, before or after the real call). save_record runs once at the start and
# once per epoch; write_record once more for the seal.
STEPS = [
    ("last checkpoint written", loop_mod.Trainer, "checkpoint", EPOCHS, "after"),
    ("metrics.csv written", run_mod, "atomic_write_bytes", EPOCHS, "after"),
    ("record after the last epoch", run_mod, "save_record", 1 + EPOCHS, "after"),
    ("choosing the checkpoint", loop_mod.Trainer, "selected_model", 1, "before"),
    ("model.pt written", run_mod, "atomic_torch_save", 1, "after"),
    ("test split evaluated", run_mod, "evaluate_split", 1, "after"),
    ("sealing", Store, "seal", 1, "after"),
    ("writing the sealed record", Store, "write_record", 2 + EPOCHS, "before"),
]
IGNORED = {"wall_time_s", "finished_at", "attempts", "host", "pid", "requeues", "previous_status",
           "resumed_from_epoch", "launcher"}
TIMES = {"seconds", "step_seconds", "data_seconds", "select_seconds"}


def _comparable(record) -> dict:
    out = {k: v for k, v in record.to_json().items() if k not in IGNORED}
    out["history"] = [{k: v for k, v in h.items() if k not in TIMES} for h in out["history"]]
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run_mod.train_run(tiny(train={"epochs": EPOCHS}), 0, Store(tmp_path_factory.mktemp("whole")),
                             progress=False)


@pytest.mark.parametrize("signal_kind", ["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("step", STEPS, ids=[s[0] for s in STEPS])
def test_a_run_stopped_at_any_step_after_its_last_epoch_seals_the_same_record(
        tmp_path, monkeypatch, uninterrupted, step, signal_kind):
    what, owner, name, nth, when = step
    real = getattr(owner, name)
    calls = {"n": 0}
    stop = KeyboardInterrupt if signal_kind == "SIGTERM" else Killed  # SIGTERM arrives as KeyboardInterrupt

    def stopping(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth and when == "before":
            raise stop()
        out = real(*args, **kwargs)
        if calls["n"] == nth and when == "after":
            raise stop()
        return out

    monkeypatch.setattr(owner, name, stopping)
    store = Store(tmp_path)
    config = tiny(train={"epochs": EPOCHS})
    with pytest.raises((KeyboardInterrupt, Killed)):
        run_mod.train_run(config, 0, store, progress=False)
    monkeypatch.setattr(owner, name, real)
    record = run_mod.train_run(config, 0, store, progress=False)
    assert record.completed, record.reason
    assert record.epochs_done == EPOCHS and len(record.details["history"]) == EPOCHS
    assert _comparable(record) == _comparable(uninterrupted), what


def test_a_completed_record_without_its_history_is_damaged(tmp_path, uninterrupted):
    store = Store(tmp_path)
    record = run_mod.train_run(tiny(train={"epochs": EPOCHS}), 0, store, progress=False)
    path = store.record_path(record.key)
    data = json.loads(path.read_text())
    data.pop("history")
    data["epochs_done"] = 0  # what a resume after the last epoch used to seal
    path.write_text(json.dumps(data))
    damaged = store.load(record.key)
    assert damaged.status is Status.DAMAGED and "no per-epoch history" in damaged.reason
    data["history"] = [{"epoch": 1}]
    path.write_text(json.dumps(data))
    assert "1 epochs, but epochs_done says 0" in store.load(record.key).reason


# ------------------------------------------------------------------ 2. one source of truth for numbers


def test_an_edited_headline_metric_makes_the_record_damaged(tmp_path, uninterrupted):
    from study.store.verify import verify_store

    store = Store(tmp_path)
    record = run_mod.train_run(tiny(train={"epochs": EPOCHS}), 0, store, progress=False)
    path = store.record_path(record.key)
    data = json.loads(path.read_text())
    data["test"]["dsc"], data["test"]["iou"] = 0.98, 0.99
    path.write_text(json.dumps(data))
    damaged = store.load(record.key)
    assert damaged.status is Status.DAMAGED
    assert "field 'test.iou': 0.99 does not follow from the pooled counts" in damaged.reason \
        or "field 'test.dsc': 0.98 does not follow from the pooled counts" in damaged.reason
    assert not verify_store(store).ok


def test_tables_compute_from_counts_not_summary_fields(tmp_path):
    """A record's summary may lack a score (an older harness): the table still shows it, from the counts."""
    from study.report.collect import collect_table
    from study.report.synthetic import counts_for_dice, write_run
    from study.variants import load_tables

    store = Store(tmp_path)
    table = load_tables()["table6"]
    counts = counts_for_dice(np.full(20, 0.85))
    run_dir = write_run(store, table.row("t6-shared"), None, 0, "smoke", counts=counts)
    path = run_dir / "record.json"
    data = json.loads(path.read_text())
    del data["test"]["iou"], data["test"]["dsc"]
    path.write_text(json.dumps(data))
    td = collect_table(table, store, "smoke")
    cell = td.row("t6-shared").cells["synthetic_dsc"]
    tp, fp, fn = counts[:, 0].sum(), counts[:, 1].sum(), counts[:, 2].sum()
    assert cell.values == (pytest.approx(100 * 2 * tp / (2 * tp + fp + fn)),)


# ------------------------------------------------------------------ 3. leases on one clock


def _foreign_lease(run_dir, age_s: float, host="node-b"):
    """A lease written by another host whose last renewal is ``age_s`` old by the file system's clock."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "lease.1"
    path.write_text(json.dumps({"host": host, "pid": 4242, "token": "t", "started_at": 0, "renewed_at": 0}))
    stamp = lease_mod.store_now(run_dir) - age_s
    os.utime(path, (stamp, stamp))
    return path


@pytest.mark.parametrize("observer_skew", [-600, 0, 600])
@pytest.mark.parametrize("holder_skew", [-600, 0, 600])
def test_clock_skew_neither_takes_a_live_run_nor_blocks_a_dead_one(tmp_path, monkeypatch, holder_skew,
                                                                     observer_skew):
    real_time = time.time
    monkeypatch.setattr(lease_mod.time, "time", lambda: real_time() + holder_skew)
    holder = RunLease(tmp_path / "live", lease_s=30)
    assert holder.acquire()  # its file says renewed_at = its own (skewed) clock
    path = tmp_path / "live" / f"lease.{holder.generation}"
    data = json.loads(path.read_text())
    data["host"] = "node-b"  # on another host: no pid check can help the observer
    path.write_text(json.dumps(data))
    monkeypatch.setattr(lease_mod.time, "time", lambda: real_time() + observer_skew)
    observer = RunLease(tmp_path / "live", lease_s=30)
    assert not observer.acquire()  # a live run is never taken
    assert observer.holder().age_s < 5 and "last heartbeat" in observer.holder().describe()
    # a holder that stopped renewing: dead once the lease has passed on the store's clock, whatever the clocks say
    _foreign_lease(tmp_path / "dead", age_s=31)
    taker = RunLease(tmp_path / "dead", lease_s=30)
    assert taker.acquire()
    taker.release()
    _foreign_lease(tmp_path / "young", age_s=25)
    assert not RunLease(tmp_path / "young", lease_s=30).acquire()


# ------------------------------------------------------------------ 4. a manifest a paper can cite


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_manifest_names_every_run_added_removed_or_changed(tmp_path):
    from study.report.synthetic import counts_for_dice, write_run
    from study.variants import load_tables

    store = Store(tmp_path / "store")
    table = load_tables()["table6"]
    for i, row in enumerate(table.rows):
        write_run(store, row, None, 0, "smoke", counts=counts_for_dice(np.full(10, 0.8 + i / 100)))
    manifest = tmp_path / "manifest.json"
    first = _cli("verify", "--results", str(store.root), "--manifest", str(manifest))
    assert first.returncode == 0, first.stdout + first.stderr
    root = json.loads(manifest.read_text())["root_sha256"]
    assert f"root sha256 {root}" in first.stdout and len(json.loads(manifest.read_text())["runs"]) == 3
    same = _cli("verify", "--results", str(store.root), "--against", str(manifest))
    assert same.returncode == 0 and "the same completed runs, byte for byte" in same.stdout
    # one run removed, one changed (its files rewritten and re-sealed), one added
    import shutil

    from study.store.record import RunKey

    keys = [RunKey(row.run_config(None, "smoke").hash, 0) for row in table.rows]
    shutil.rmtree(store.run_dir(keys[0]))
    write_run(store, table.rows[1], None, 0, "smoke", counts=counts_for_dice(np.full(10, 0.5)))
    write_run(store, table.rows[2], None, 1, "smoke", counts=counts_for_dice(np.full(10, 0.7)))
    diff = _cli("verify", "--results", str(store.root), "--against", str(manifest))
    assert diff.returncode == 1
    assert f"removed {keys[0].id}" in diff.stdout and f"changed {keys[1].id}: files" in diff.stdout
    assert f"added   {RunKey(keys[2].config_hash, 1).id}" in diff.stdout
    assert "1 added, 1 removed, 1 changed" in diff.stdout


@pytest.mark.slow
def test_an_edited_manifest_is_refused(tmp_path):
    from study.store.manifest import read_manifest

    store = Store(tmp_path / "store")
    manifest = tmp_path / "m.json"
    assert _cli("verify", "--results", str(store.root), "--manifest", str(manifest)).returncode == 0
    data = json.loads(manifest.read_text())
    data["runs"]["0000000000000000-s0"] = {"files": {}}
    manifest.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="root digest does not match its own runs"):
        read_manifest(manifest)


# ------------------------------------------------------------------ 5. a torn journal


def test_a_torn_last_journal_record_is_set_aside_and_the_search_goes_on(tmp_path, capsys):
    import optuna

    from study.search.storage import open_storage

    path = tmp_path / "tune" / "s.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)), direction="maximize")
    study.enqueue_trial({"x": 0.5})
    whole = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(b'{"op_code": 4, "worker_id": "w", "study_id": 0, "datetime_st')  # killed mid-write
    again = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    assert path.read_bytes() == whole
    torn = list(path.parent.glob("s.journal.torn-*"))
    assert len(torn) == 1 and torn[0].read_bytes().startswith(b'{"op_code": 4')
    assert "1 torn record(s)" in capsys.readouterr().err
    trial = again.ask()  # the next write lands on a whole line
    again.tell(trial, 1.0)
    reread = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    assert [t.state.name for t in reread.trials] == ["COMPLETE"]


@pytest.mark.parametrize("line", [b'{"hello": "world"}', b'{"op_code": 99, "worker_id": "w"}', b'[1, 2, 3]'])
def test_a_journal_line_that_is_no_optuna_operation_is_set_aside(tmp_path, capsys, line):
    import optuna

    from study.search.storage import open_storage

    path = tmp_path / "tune" / "s.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)), direction="maximize")
    study.enqueue_trial({"x": 0.5})
    whole = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(line + b"\n")  # valid JSON, but nothing Optuna can replay
    again = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    assert path.read_bytes() == whole and len(again.trials) == 1
    (aside,) = path.parent.glob("s.journal.torn-*")
    assert aside.read_bytes() == line + b"\n"
    assert "1 torn record(s)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_bad_study_name_is_one_line(tmp_path):
    done = _cli("tune", "show", "--study-name", "../../etc", "--results", str(tmp_path))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--study-name: '../../etc' is not allowed" in done.stderr + done.stdout
    assert not (tmp_path / "tune").exists()


def test_a_record_glued_onto_a_torn_one_is_kept(tmp_path):
    """The usual tear: a killed worker's fragment, then a live worker's record appended onto it."""
    import optuna

    from study.search.storage import open_storage

    path = tmp_path / "s.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)), direction="maximize")
    lines = path.read_bytes().splitlines(keepends=True)
    fragment = b'{"op_code": 4, "worker_id": "dead", "study_'
    study.enqueue_trial({"x": 0.5})  # appended after the fragment: glued to it
    after = path.read_bytes()[sum(map(len, lines)):]
    path.write_bytes(b"".join(lines) + fragment + after)
    again = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    assert [t.state.name for t in again.trials] == ["WAITING"]  # the glued record survived
    assert (next(path.parent.glob("s.journal.torn-*")).read_bytes()) == fragment + b"\n"


@pytest.mark.slow
def test_tune_show_reads_a_journal_it_cannot_write_and_creates_nothing(tmp_path):
    done = _cli("tune", "show", "--results", str(tmp_path / "store"))
    assert done.returncode == 2 and "no search journal at" in done.stderr
    assert not (tmp_path / "store").exists()


def test_a_whole_journal_is_left_alone(tmp_path):
    import optuna

    from study.search.storage import open_storage, repair_journal

    path = tmp_path / "s.journal"
    optuna.create_study(study_name="s", storage=open_storage(str(path)))
    before = path.read_bytes()
    assert repair_journal(path) is None and path.read_bytes() == before


# ------------------------------------------------------------------ 6. the smaller holes


def test_a_control_character_in_a_row_name_is_refused_at_load(tmp_path):
    import shutil

    from study.variants import load_tables

    root = tmp_path / "variants"
    shutil.copytree(REPO_ROOT / "variants", root)
    text = (root / "table6.toml").read_text().replace('name = "w/o"', 'name = "w/o\\u0007"', 1)
    (root / "table6.toml").write_text(text)
    load_tables.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"table6.toml row 't6-none' field 'name': holds the control character "
                                              r"U\+0007"):
            load_tables(root)
    finally:
        load_tables.cache_clear()


def test_non_ascii_names_typeset_in_the_pdf(tmp_path):
    from conftest import require_executable

    from study.report.build import compile_pdf
    from study.report.format import latex_escape

    require_executable("pdflatex")
    name = "Müller-Net α (Ø) 中"
    escaped = latex_escape(name)
    assert escaped == "Müller-Net $\\alpha$ (Ø) [U+4E2D]"
    tex = tmp_path / "names.tex"
    tex.write_text("\\documentclass{article}\\usepackage[utf8]{inputenc}\\usepackage[T1]{fontenc}"
                   f"\\begin{{document}}{escaped}\\end{{document}}\n", encoding="utf-8")
    pdf = compile_pdf(tex)
    assert pdf.is_file() and "not set up for use with LaTeX" not in (tmp_path / "names.log").read_text()


@pytest.mark.slow
def test_a_read_only_results_store_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store should be")
    results = blocker / "results"
    for args in (["train", "--variant", "t6-none", "--profile", "smoke"], ["report"],
                 ["run", "table6", "--profile", "smoke"]):
        done = _cli(*args, "--results", str(results))
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "is not writable" in lines[0] and str(blocker) in lines[0], done.stderr
        assert "Traceback" not in done.stderr


def _png_claiming(width: int, height: int, path) -> None:
    """A tiny valid 8x8 1-bit PNG whose header claims ``width`` x ``height`` (CRC fixed)."""
    from PIL import Image

    Image.new("1", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 8] = width.to_bytes(4, "big")
    data[ihdr + 8:ihdr + 12] = height.to_bytes(4, "big")
    data[ihdr + 17:ihdr + 21] = zlib.crc32(bytes(data[ihdr:ihdr + 17])).to_bytes(4, "big")
    path.write_bytes(bytes(data))


def test_an_image_s_size_is_checked_from_its_header_before_decoding(tmp_path):
    from study.data.imageio import UnreadableFile, read_mask

    path = tmp_path / "huge_segmentation.png"
    _png_claiming(13_000, 13_000, path)
    assert path.stat().st_size < 1000
    with pytest.raises(UnreadableFile, match=r"claims 13000x13000 pixels \(169 MP\), over the limit of 64 MP"):
        read_mask(path)


def test_a_self_looping_symlink_is_one_line_or_skipped(real_samples, tmp_path):
    import shutil

    root = tmp_path / "ISIC2017"
    shutil.copytree(real_samples / "ISIC2017", root)
    loop = root / "ISIC-2017_Training_Data" / "ISIC_9999999.jpg"
    loop.symlink_to(loop.name)
    done = _cli("data", "check", "isic2017", "--root", str(root))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"error: {loop}: cannot open the image (Too many levels of "
                                                    "symbolic links); expected a readable file")
    skipped = _cli("data", "check", "isic2017", "--root", str(root), "--skip-bad")
    assert skipped.returncode == 0 and "skipped 1 bad pair(s)" in skipped.stdout


# ------------------------------------------------------------------ from the review of the above


def test_a_reader_who_cannot_write_the_folder_judges_leases_by_its_own_clock(tmp_path, monkeypatch):
    dead = _foreign_lease(tmp_path / "dead", age_s=3600)
    live = _foreign_lease(tmp_path / "live", age_s=5)

    def read_only(folder):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(lease_mod, "store_now", read_only)
    assert RunLease(tmp_path / "dead", lease_s=300).holder() is None  # not "0 s ago" forever
    holder = RunLease(tmp_path / "live", lease_s=300).holder()
    assert holder is not None and "by this host's clock" in holder.describe()
    assert dead.exists() and live.exists()


def test_a_record_sealed_without_history_by_an_older_harness_is_resealed_not_retrained(tmp_path):
    store = Store(tmp_path)
    config = tiny(train={"epochs": EPOCHS})
    record = run_mod.train_run(config, 0, store, progress=False)
    path = store.record_path(record.key)
    data = json.loads(path.read_text())
    data.pop("history")
    data["epochs_done"] = 0
    path.write_text(json.dumps(data))
    again = run_mod.train_run(config, 0, store, progress=False)
    assert again.completed and again.details["resumed_from_epoch"] == EPOCHS  # no epoch trained again
    assert again.details["history"] == record.details["history"]


def test_a_huge_number_in_a_record_is_damage_not_a_crash(tmp_path):
    store = Store(tmp_path)
    record = run_mod.train_run(tiny(train={"epochs": EPOCHS}), 0, store, progress=False)
    path = store.record_path(record.key)
    path.write_text(path.read_text().replace('"tp": ', '"tp": 1' + "0" * 400 + ', "x": ', 1))
    assert store.load(record.key).status is Status.DAMAGED
    assert [r.status for r in store.records()] == [Status.DAMAGED]


def test_letters_t1_fonts_lack_are_spelt_with_their_nearest(tmp_path):
    from study.report.format import latex_escape

    assert latex_escape("Ħaŧŀ ſ") == "Hatl s"

