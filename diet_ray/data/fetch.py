"""`diet-ray fetch movielens-100k`: obtain MovieLens 100K into the user cache, verified.

Order of attempts:
1. the official GroupLens archive (`ml-100k.zip`, checked against its published MD5);
2. when that is unreachable, the copy shipped inside the `recbole==1.2.1` wheel on the
   Python package index (`recbole/dataset_example/ml-100k/`), downloaded with
   `pip download --no-deps`, checked against the wheel's pinned SHA-256, read with
   `zipfile` (recbole is never installed) and written back in the 100K layout:
   `u.data` (the original tab layout), `u.user` (the same fields) and `u.item` (title,
   release date reduced to its year, the 19 genre flags).

MovieLens may not be redistributed: diet-ray never ships the files, it fetches them.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from diet_ray.data.errors import DataError
from diet_ray.data.sources.movielens import GENRES_100K

OFFICIAL_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
OFFICIAL_MD5 = "0e33842e24a9c977be4e0107933c0723"
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_DIR = "recbole/dataset_example/ml-100k/"
# SHA-256 of u.data (100,000 ratings) as rebuilt from the wheel. The official archive is
# verified by its published MD5 instead.
U_DATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"
FILES = ("u.data", "u.user", "u.item")


def cache_dir() -> Path:
    """`$DIET_RAY_CACHE`, else `$XDG_CACHE_HOME/diet-ray`, else `~/.cache/diet-ray`."""
    if env := os.environ.get("DIET_RAY_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diet-ray"


def movielens_100k_dir() -> Path:
    return cache_dir() / "movielens-100k"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _complete(target: Path) -> bool:
    """Files present and u.data unchanged since it was verified (`.verified` holds its hash)."""
    marker = target / ".verified"
    if not marker.is_file() or not all((target / f).is_file() for f in FILES):
        return False
    return sha256((target / "u.data").read_bytes()) == marker.read_text().strip()


def _from_official(timeout: float) -> dict[str, bytes]:
    with urllib.request.urlopen(OFFICIAL_URL, timeout=timeout) as r:
        archive = r.read()
    if hashlib.md5(archive).hexdigest() != OFFICIAL_MD5:
        raise DataError(f"{OFFICIAL_URL}: MD5 mismatch, the download is damaged or changed")
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        return {f: z.read(f"ml-100k/{f}") for f in FILES}


def _from_recbole_wheel() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-q", "-d", tmp, RECBOLE_WHEEL]
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if run.returncode != 0 or not wheels:
            raise DataError(
                f"could not download {RECBOLE_WHEEL} from the package index "
                f"({run.stderr.strip()[-300:]}). Download ml-100k.zip by hand, unzip it and "
                "pass its folder to `diet-ray prepare --input`."
            )
        blob = wheels[0].read_bytes()
    if sha256(blob) != RECBOLE_SHA256:
        raise DataError(f"{wheels[0].name}: SHA-256 mismatch, refusing to use it")
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        inter = z.read(RECBOLE_DIR + "ml-100k.inter").decode("latin-1").splitlines()[1:]
        users = z.read(RECBOLE_DIR + "ml-100k.user").decode("latin-1").splitlines()[1:]
        items = z.read(RECBOLE_DIR + "ml-100k.item").decode("latin-1").splitlines()[1:]
    u_data = "".join(line + "\n" for line in inter)
    u_user = "".join("|".join(line.split("\t")) + "\n" for line in users)
    item_lines = []
    for line in items:
        iid, title, year, classes = line.split("\t")
        present = set(classes.split(" ")) if classes else set()
        flags = ["1" if g in present else "0" for g in GENRES_100K]
        date = f"01-Jan-{year}" if year else ""
        item_lines.append("|".join([iid, title, date, "", "", *flags]) + "\n")
    if sha256(u_data.encode("latin-1")) != U_DATA_SHA256:
        raise DataError(f"u.data rebuilt from {RECBOLE_WHEEL} does not match its pinned SHA-256")
    return {
        "u.data": u_data.encode("latin-1"),
        "u.user": u_user.encode("latin-1"),
        "u.item": "".join(item_lines).encode("latin-1"),
    }


def fetch_movielens_100k(force: bool = False, timeout: float = 10.0, log=print) -> Path:
    """Return the cache folder holding verified `u.data`, `u.user`, `u.item`; fetch if needed."""
    target = movielens_100k_dir()
    if not force and _complete(target):
        return target
    try:
        files, origin = _from_official(timeout), "the GroupLens archive"
    except DataError:
        raise
    except OSError as e:
        log(f"official archive unreachable ({e.__class__.__name__}); using the recbole wheel copy")
        files, origin = _from_recbole_wheel(), f"the {RECBOLE_WHEEL} wheel"
    target.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():  # write each file whole, then rename: no torn files
        tmp = target / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(target / name)
    (target / ".verified").write_text(sha256(files["u.data"]))  # last: marks the copy complete
    log(f"MovieLens 100K from {origin} -> {target}")
    return target
