"""A store's manifest: every completed run's identity and file digests, and one root digest.

``write_manifest`` lists, for every completed run that verifies, its run id,
config hash, seed, the digest of its ``record.json`` and the digest of every
file the record vouches for; the root digest is the sha256 of those entries in
a canonical order, so a paper can cite one line for its whole store.
``compare_manifest`` names every run added, removed or changed since.

What it protects against: accidents (a file truncated, overwritten, edited by a
labmate) and edits made after the manifest was published. What it does not: a
writer who edits the store before the manifest is written and published — the
digests then vouch for the edited files. Publish the root digest where the
store's writers cannot change it (the paper, a tagged commit).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from study.errors import ConfigError
from study.store.atomic import StoreWriteError, atomic_write_bytes
from study.store.record import RunKey
from study.store.runs import Store

MANIFEST_FORMAT = 1


def run_entries(store: Store) -> dict[str, dict]:
    """run id -> {config_hash, seed, record_sha256, files: {name: sha256}} of every completed, verified run."""
    entries = {}
    for record in store.records():
        if not record.completed:
            continue
        record_digest = hashlib.sha256(store.record_path(record.key).read_bytes()).hexdigest()
        entries[record.run_id] = {"config_hash": record.config_hash, "seed": record.seed,
                                  "record_sha256": record_digest,
                                  "files": {name: d.sha256 for name, d in sorted(record.files.items())}}
    return entries


def root_digest(entries: dict[str, dict]) -> str:
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_manifest(store: Store, out: Path) -> dict:
    entries = run_entries(store)
    manifest = {"format": MANIFEST_FORMAT, "store": str(store.root), "runs": entries,
                "root_sha256": root_digest(entries)}
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{out}: a folder; --manifest expects a file name to write, e.g. {out / 'manifest.json'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    except (OSError, StoreWriteError) as exc:
        raise ConfigError(f"{out}: the manifest cannot be written ({getattr(exc, 'strerror', None) or exc}); "
                          "choose a path you can write") from None
    return manifest


def read_manifest(path: Path) -> dict[str, dict]:
    """The runs of a manifest file, parsed and checked (it may come from anywhere); ConfigError otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("runs"), dict):
        raise ConfigError(f"{path}: not a manifest of format {MANIFEST_FORMAT} (expected 'format' and 'runs')")
    runs = data["runs"]
    for run_id, entry in runs.items():
        if not RunKey.is_id(run_id):  # ids are printed: an id holding escapes or a newline could forge lines
            raise ConfigError(f"{path}: run id {run_id!r} is not a run id (16 hex digits, -s and a seed)")
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
            raise ConfigError(f"{path}: run {run_id!r}: expected an object with 'files'")
    if data.get("root_sha256") != root_digest(runs):
        raise ConfigError(f"{path}: its root digest does not match its own runs (the manifest was edited)")
    return runs


@dataclass
class ManifestDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, str] = field(default_factory=dict)  # run id -> what changed

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed)


def compare_manifest(store: Store, published: dict[str, dict]) -> ManifestDiff:
    """What differs between the store now and a published manifest's runs (a run that no longer
    verifies, its files edited or truncated, is changed, with the reason; not removed)."""
    now = run_entries(store)
    damaged = {r.run_id: r.reason for r in store.records() if r.status.value == "damaged"}
    gone = set(published) - set(now)
    diff = ManifestDiff(added=sorted(set(now) - set(published)), removed=sorted(gone - set(damaged)))
    for run_id in sorted(gone & set(damaged)):
        diff.changed[run_id] = f"damaged: {damaged[run_id]}"
    for run_id in sorted(set(now) & set(published)):
        before, after = published[run_id], now[run_id]
        files = sorted(n for n in set(before["files"]) | set(after["files"])
                       if before["files"].get(n) != after["files"].get(n))
        if files:
            diff.changed[run_id] = "files " + ", ".join(files)
        elif before.get("record_sha256") != after["record_sha256"]:
            diff.changed[run_id] = "record.json"
    return diff
