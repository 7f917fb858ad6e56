"""Wheels for the rehearsed pool's hosts (suite/hosts.py), which reach no package index.

The hosts install from the operator's pip configuration, which names local folders only
(file:// indexes, find-links). What the operator's own Python has installed but those
folders lack (a Ray built here, say) is packed from the installed files back into a wheel,
so every host installs exactly the operator's version: Ray refuses nodes and clients of
mixed versions.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str, extras: set[str]) -> list[metadata.Distribution]:
    """The installed distributions `root[extras]` needs, itself included."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [(root, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = _norm(dist.metadata["Name"])
        if key in seen and not wanted:
            continue
        seen[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{**default_environment(), "extra": e} for e in (wanted or {""})]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                if _norm(req.name) not in seen or req.extras:
                    todo.append((req.name, frozenset(req.extras)))
    return list(seen.values())


def available(dist: metadata.Distribution, folders: list[Path]) -> bool:
    """Whether a file of this name and version is in one of the local folders (a find-links
    folder, or a simple index's per-project folder)."""
    name, version = _norm(dist.metadata["Name"]), dist.version
    for folder in folders:
        for d in (folder, folder / name):
            if d.is_dir() and any(_norm(f.name.split("-")[0]) == name and f"-{version}" in f.name
                                  for f in d.iterdir() if f.name.endswith((".whl", ".tar.gz", ".zip"))):
                return True
    return False


def pack(dist: metadata.Distribution, out: Path) -> Path:
    """A wheel of an installed distribution, from its files (RECORD), caches and scripts
    left out (pip makes the scripts again from entry_points.txt)."""
    info = next(p for p in dist.files if p.parts[0].endswith(".dist-info"))
    tags = [line.split(": ", 1)[1] for line in dist.read_text("WHEEL").splitlines() if line.startswith("Tag: ")]
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    # the compressed tag set of the file name: py2.py3-none-any
    tag = "-".join(".".join(dict.fromkeys(t.split("-")[i] for t in tags)) for i in range(3))
    path = out / f"{name}-{dist.version}-{tag}.whl"
    if path.exists():  # packed before: the folder is a cache
        return path
    record = []
    tmp = path.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for f in dist.files:
            if f.parts[0] == ".." or "__pycache__" in f.parts or f.name == "RECORD" or f.name == "INSTALLER":
                continue
            src = Path(dist.locate_file(f))
            data = src.read_bytes()
            entry = zipfile.ZipInfo(str(f), date_time=(2020, 1, 1, 0, 0, 0))
            entry.external_attr = (src.stat().st_mode & 0xFFFF) << 16  # executables stay executable (gcs_server)
            z.writestr(entry, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{f},sha256={digest},{len(data)}")
        rec = f"{info.parts[0]}/RECORD"
        z.writestr(rec, "\n".join([*record, f"{rec},,"]) + "\n")
    tmp.rename(path)
    os.chmod(path, 0o644)
    return path


def make(out: Path, roots: dict[str, set[str]], folders: list[Path]) -> list[str]:
    """Pack into `out` what roots (name -> extras) need that `folders` lack; return the
    packed distributions' names and versions."""
    out.mkdir(parents=True, exist_ok=True)
    packed = {}
    for root, extras in roots.items():
        for dist in closure(root, extras):
            key = f"{dist.metadata['Name']}=={dist.version}"
            # the checkout itself (each host installs it from its synced copy): an editable install,
            # or the gptbench.egg-info that `pip install -e` leaves in a checkout on sys.path
            checkout = _norm(dist.metadata["Name"]) == "gptbench" or \
                '"editable": true' in (dist.read_text("direct_url.json") or "")
            if key not in packed and not checkout and dist.files and not available(dist, folders):
                packed[key] = pack(dist, out)
    return sorted(packed)
