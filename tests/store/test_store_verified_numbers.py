"""Every printed number from something verified (issue 29, item 5): Params and MACs from the models, never
the record; a history validated field by field; a record's config held to its hash; metrics.csv from the
sealed record."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from study.report.synthetic import write_run
from study.store.record import RunKey
from study.store.runs import Store
from study.variants import load_tables

ROW = load_tables()["table3"].row("t3-ours")


class _Done:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _verify(root):
    """`study verify` in this process (its checks build and count models: a subprocess per case is slow)."""
    import contextlib
    import io

    from study.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["verify", "--results", str(root)])
    return _Done(code, out.getvalue(), err.getvalue())


def _edit(store: Store, key: RunKey, change) -> None:
    path = store.record_path(key)
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path)
    write_run(store, ROW, None, 0, "smoke", dsc=0.8)  # params and MACs as the model counts them
    return store


KEY = RunKey(ROW.run_config(None, "smoke").hash, 0)


def test_a_clean_store_verifies(store):
    done = _verify(store.root)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("edit, field", [
    (lambda r: r.update(params=1), "field 'params': 1, but its model counts 34166"),
    (lambda r: r.update(gmacs_thop=0.001), "field 'gmacs_thop'"),
    (lambda r: r["config"]["train"].update(lr=0.5), "field 'config': hashes to"),
    (lambda r: r["history"][0].update(train_loss="low"), "field 'history[0].train_loss': expected a finite number"),
    (lambda r: r["history"][0].update(seconds=-3), "field 'history[0].seconds': expected at least 0"),
    (lambda r: r["history"].__setitem__(0, "epoch one"), "field 'history[0]': expected an object"),
    (lambda r: r["history"][1].update(epoch=7), "field 'history[1].epoch': 7, expected 2"),
])
def test_an_edited_record_is_damaged_with_the_field_named(store, edit, field):
    _edit(store, KEY, edit)
    done = _verify(store.root)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"damaged {KEY.id}: " in done.stdout and field in done.stdout, done.stdout


def test_a_record_with_a_broken_history_is_damaged_wherever_it_is_read(store):
    """A running record's history is read by `run --dry-run`'s cost estimates and the curves: parsed first."""
    _edit(store, KEY, lambda r: r.update(status="running", reason=None) or r["history"][0].update(seconds="soon"))
    record = store.load(KEY)
    assert record.status.value == "damaged" and "history[0].seconds" in record.reason


@pytest.mark.slow
def test_metrics_csv_is_written_from_the_sealed_record(tmp_path):
    import csv
    import io

    done = subprocess.run([sys.executable, "-m", "study", "train", "--variant", "t3-ours", "--profile", "smoke",
                           "--results", str(tmp_path), "--set", "train.epochs=2"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    store = Store(tmp_path)
    (record,) = list(store.records())
    rows = list(csv.DictReader(io.StringIO(store.metrics_path(record.key).read_text())))
    assert rows == [{k: str(v) for k, v in entry.items()} for entry in record.details["history"]]
