"""Hostile or mistaken input gets one line naming the file or field, never a traceback or raw escapes
(issue 29, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from study.report.synthetic import write_run
from study.store.runs import Store
from study.variants import load_tables


def _study(*args, cwd=REPO_ROOT, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _one_line(done, *needles):
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    text = done.stdout + done.stderr
    assert "\x1b" not in text and "\x07" not in text
    for needle in needles:
        assert needle in text, text[-2000:]


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "store")
    write_run(store, load_tables()["table3"].row("t3-ours"), None, 0, "smoke", dsc=0.8)
    return store


@pytest.mark.slow
def test_a_manifest_onto_a_folder_or_a_read_only_path(store, tmp_path):
    _one_line(_study("verify", "--results", str(store.root), "--manifest", str(tmp_path)), "a folder; --manifest")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.geteuid() == 0:  # root writes anywhere: a path under a file cannot be written by anyone
            target = store.record_path(next(store.keys())) / "manifest.json"
        else:
            target = locked / "manifest.json"
        _one_line(_study("verify", "--results", str(store.root), "--manifest", str(target)),
                  "the manifest cannot be written")
    finally:
        locked.chmod(0o700)


@pytest.mark.slow
def test_a_manifest_id_holding_escapes_is_refused(store, tmp_path):
    import json

    from study.store.manifest import root_digest

    runs = {"0123456789abcdef-s0\x1b[31m\nchanged everything": {"files": {}}}
    forged = tmp_path / "m.json"
    forged.write_text(json.dumps({"format": 1, "runs": runs, "root_sha256": root_digest(runs)}))
    _one_line(_study("verify", "--results", str(store.root), "--against", str(forged)), "is not a run id")


@pytest.mark.slow
def test_a_read_only_cache_is_refused_before_a_run_starts(tmp_path, real_samples):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    env = {"STUDY_CACHE": str(cache if os.geteuid() != 0 else tmp_path / "file-not-folder")}
    if os.geteuid() == 0:
        (tmp_path / "file-not-folder").write_text("a file where the cache folder should be")
    root = ["--root", f"isic2017={real_samples / 'ISIC2017'}"]
    try:
        _one_line(_study("data", "cache", "isic2017", *root, env=env), "dataset cache")
        _one_line(_study("train", "--variant", "t3-ours", "--dataset", "isic2017", *root, "--results",
                         str(tmp_path / "store"), env=env), "the dataset cache is not writable")
        assert not (tmp_path / "store" / "runs").exists()  # refused first: no failed run left behind
    finally:
        cache.chmod(0o700)


def test_bad_roots_and_config_files(tmp_path):
    _one_line(_study("data", "check", "isic2017", "--root", "isic2017=/x" + "y" * 6000), "a path of 6002 characters")
    _one_line(_study("data", "check", "isic2017", "--root", "isic2017=/data/\x1b[2J\x07"), "holds control characters")
    (tmp_path / "study.toml").write_bytes(b'[data]\nisic2017 = "/d\xff\xfe"\n')
    _one_line(_study("data", "check", "isic2017", cwd=tmp_path, env={"PYTHONPATH": str(REPO_ROOT)}),
              "study.toml: cannot read config file", "expected UTF-8 TOML")
    (tmp_path / "study.toml").write_text('bogus = 3\n[data]\nisic2017 = "/d"\n')
    _one_line(_study("data", "check", "isic2017", cwd=tmp_path, env={"PYTHONPATH": str(REPO_ROOT)}),
              "unknown key(s) 'bogus'")
