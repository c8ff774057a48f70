"""Leases on runs: another host's dead trainer, empty lease files, racing takers, a holder that
lost its lease; workers that die with their parent; ids and values safe in generated scripts."""

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, _missing

from study.errors import ConfigError
from study.store.lease import RunLease
from study.store.record import RunKey, Status
from study.store.runs import Store
from study.variants import find_row, load_tables

TINY = ["--profile", "smoke", "--set", "data.synthetic_count=40", "--threads", "1"]


def cli(*args, results, env=None, wait=True):
    argv = [sys.executable, "-m", "study", *args, "--results", str(results)]
    kwargs = dict(cwd=REPO_ROOT, env={**os.environ, **(env or {})}, text=True, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
    if not wait:
        return subprocess.Popen(argv, start_new_session=True, **kwargs)
    return subprocess.run(argv, timeout=900, **kwargs)


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def running_epochs(store: Store, key: RunKey) -> int:
    record = store.load(key)
    return record.epochs_done if record is not None and record.status is Status.RUNNING else -1


# --------------------------------------------------------------------------- case 3: another host


@pytest.mark.slow
def test_a_trainer_killed_on_another_host_is_taken_over_after_its_lease(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        _missing("another host is made with a UTS namespace (needs root and unshare)")
    store = Store(tmp_path / "store")
    config = find_row("t6-none").run_config("synthetic", "smoke", {"data": {"synthetic_count": 40},
                                                                     "train": {"epochs": 40}})
    key = RunKey(config.hash, 0)
    env = {**os.environ, "STUDY_LOCK_LEASE_S": "4"}
    train = [sys.executable, "-m", "study", "train", "--variant", "t6-none", *TINY, "--set", "train.epochs=40",
             "--results", str(store.root)]
    victim = subprocess.Popen(["unshare", "--uts", "sh", "-c", 'hostname node-b && exec "$@"', "sh", *train],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: running_epochs(store, key) >= 1, 300, "the first epoch on node-b")
    lease = next(store.run_dir(key).glob("lease.*"))
    assert json.loads(lease.read_text())["host"] == "node-b"
    victim.send_signal(signal.SIGKILL)  # the node is lost: nothing is cleaned up
    victim.communicate()
    assert store.load(key).status is Status.RUNNING and lease.exists()

    # Within the lease the run is held: `run` says by whom and exits non-zero, training nothing.
    args = ["run", "t6-none", "--seeds", "1", *TINY, "--set", "train.epochs=40"]
    held = cli(*args, results=store.root, env={"STUDY_LOCK_LEASE_S": "60"})
    assert held.returncode == 1, held.stdout + held.stderr
    assert "held" in held.stdout and "host node-b" in held.stdout and "last heartbeat" in held.stdout
    # Past the lease it is dead, on any host: taken over, resumed from its checkpoint, completed.
    time.sleep(4.5)
    again = cli(*args, results=store.root, env={"STUDY_LOCK_LEASE_S": "4"})
    assert again.returncode == 0, again.stdout + again.stderr
    record = store.load(key)
    assert record.completed and record.details["resumed_from_epoch"] >= 1
    assert [a["host"] for a in record.details["attempts"]][0] == "node-b"
    assert not list(store.run_dir(key).glob("lease.*"))


def test_an_empty_lease_is_busy_while_young_and_stale_after_the_lease(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "lease.1").write_bytes(b"")  # a holder died while writing it (or the disk was full)
    lease = RunLease(run_dir, lease_s=2)
    assert not lease.acquire()
    assert "unreadable lease" in lease.holder().describe()
    old = time.time() - 3
    os.utime(run_dir / "lease.1", (old, old))
    assert lease.acquire() and lease.generation == 2
    assert not (run_dir / "lease.1").exists()
    lease.release()
    assert not list(run_dir.glob("lease.*"))


def test_a_holder_taken_over_knows_it_lost_the_run(tmp_path):
    run_dir = tmp_path / "run"
    first = RunLease(run_dir, lease_s=2)
    assert first.acquire()
    second = RunLease(run_dir, lease_s=2)
    assert not second.acquire()  # live
    # the first holder is paused past its lease (its heartbeat did not run)
    path = run_dir / f"lease.{first.generation}"
    data = json.loads(path.read_text())
    data["renewed_at"] = time.time() - 10
    path.write_text(json.dumps(data))
    old = time.time() - 10
    os.utime(path, (old, old))
    data["pid"] = 999_999_999  # and, on this host, its process looks gone
    assert second.acquire()
    assert not first.renew() and first.lost
    first.release()  # never removes the new holder's lease
    assert second.still_held()
    second.release()


def _race(run_dir, barrier, results):
    lease = RunLease(run_dir, lease_s=2)
    barrier.wait()
    won = lease.acquire()
    results.put(won)
    if won:
        time.sleep(1.0)  # hold it while the others look
        lease.release()


@pytest.mark.parametrize("round_", range(3))
def test_exactly_one_of_racing_takers_gets_a_dead_lease(tmp_path, round_):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "lease.3").write_text(json.dumps({"host": "gone-node", "pid": 1, "token": "x", "started_at": 0,
                                                 "renewed_at": 0}))
    old = time.time() - 100
    os.utime(run_dir / "lease.3", (old, old))
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(run_dir, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    wins = [results.get(timeout=5) for _ in procs]
    assert wins.count(True) == 1, wins


# --------------------------------------------------------------------------- case 7: orphaned workers


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    from study.store.lease import pid_alive

    return pid_alive(pid)


@pytest.mark.slow
def test_jobs_workers_die_with_their_parent(tmp_path):
    store = Store(tmp_path / "store")
    parent = cli("run", "table6", "--seeds", "1", "--jobs", "2", "--profile", "smoke",
                 "--set", "data.synthetic_count=40", "--set", "train.epochs=200", results=store.root, wait=False)
    workers: list[int] = []

    def two_workers_training():
        nonlocal workers
        workers = [p for p in _children(parent.pid)
                   if "multiprocessing" in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")]
        return len(workers) >= 2 and sum(1 for r in store.records() if r.status is Status.RUNNING) >= 2

    try:
        wait_for(two_workers_training, 300, "two workers training")
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.communicate()
    wait_for(lambda: not any(_alive(p) for p in workers), 60, "the orphaned workers to exit")
    # each recorded its run as interrupted (resumable) on the way out, and none started the run queued next
    statuses = [r.status for r in store.records()]
    assert statuses.count(Status.INTERRUPTED) >= 2 and Status.COMPLETED not in statuses, statuses


# --------------------------------------------------------------------------- case 2: safe ids and scripts


def _variants(tmp_path, row_id: str):
    root = tmp_path / "variants"
    root.mkdir()
    shutil.copy(REPO_ROOT / "variants" / "base.toml", root / "base.toml")
    (root / "tablex.toml").write_text(f'[[rows]]\nid = {json.dumps(row_id)}\nname = "X"\n')
    return root


@pytest.mark.parametrize("row_id", ["t3\necho pwned", "Upper", "a b", "../x", "-x", 'a"b', "a$(id)"])
def test_row_ids_outside_the_alphabet_are_refused_naming_file_and_row(tmp_path, row_id):
    root = _variants(tmp_path, row_id)
    with pytest.raises(ConfigError, match=r"tablex\.toml \[\[rows\]\] #1 field 'id': row id .* is not allowed"):
        load_tables(root)


def test_every_value_in_a_generated_script_is_quoted(tmp_path):
    from study.launch import slurm as sl
    from study.plan import expand

    out_dir = tmp_path / 'odd "dir" $(touch pwned) `x`'
    runs = expand(["t6-none"], [0], profile="smoke")
    profile = sl.profile_from_dict({"partition": "gpu; rm -rf /", "job_name": "study x"}, name="odd")
    files = sl.write_sbatch(runs, Store(tmp_path / "store"), profile, out_dir, roots={}, name="t6",
                            command="python -m study sbatch t6-none\n#SBATCH --wrap=evil", snapshot=False)
    text = files.scripts[0].read_text()
    directives = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    log_dir = str(out_dir / "logs").replace("\\", "\\\\").replace('"', '\\"')
    assert f'#SBATCH --output="{log_dir}/%A_%a.out"' in directives
    assert f'#SBATCH --error="{log_dir}/%A_%a.err"' in directives
    assert '#SBATCH --partition="gpu; rm -rf /"' in directives
    assert '#SBATCH --job-name="study x-t6"' in directives
    assert not any("--wrap" in line for line in directives)  # the command is a comment, on one line
    assert all(line.startswith(("#", "set ", "export ", "cd ", "exec ")) or not line for line in text.splitlines())
    # bash parses it (syntax only) without running anything
    assert subprocess.run(["bash", "-n", str(files.scripts[0])], capture_output=True).returncode == 0
    with pytest.raises(ConfigError, match="line break"):
        sl.sbatch_line("job-name", "a\nb")


@pytest.mark.slow
def test_a_lease_dated_into_the_future_cannot_pin_a_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lease_file = run_dir / "lease.1"
    lease_file.write_text(json.dumps({"host": "node-b", "pid": 1, "token": "x", "started_at": 0, "renewed_at": 0}))
    future = time.time() + 365 * 86400
    os.utime(lease_file, (future, future))  # its modification time a year ahead: "0 s ago" for a year before
    lease = RunLease(run_dir, lease_s=1)
    holder = lease.holder()
    assert holder is not None and 0 <= holder.age_s < 60  # judged by when it last changed (its ctime), not its mtime
    time.sleep(1.5)
    assert lease.acquire() and lease.generation == 2
    lease.release()


def test_the_lease_period_is_the_stores_not_each_hosts(tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    store.root.mkdir()
    key = RunKey("0123456789abcdef", 0)
    assert store.lease(key).lease_s == 300.0  # the first process writes its own (the default) into the store
    assert json.loads(store.lease_period_path.read_text())["lease_s"] == 300.0
    monkeypatch.setenv("STUDY_LOCK_LEASE_S", "10")
    assert store.lease(key).lease_s == 300.0  # a host with a shorter setting renews and judges at the store's pace
    fresh = Store(tmp_path / "other")
    fresh.root.mkdir()
    assert fresh.lease(key).lease_s == 10.0
