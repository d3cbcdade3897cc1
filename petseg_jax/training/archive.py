"""Model archives: a trained model (an export folder or a training workdir) in one zip with a
model card, a SHA-256 sidecar, and installation under a name that ``predict --model NAME`` finds.

An archive holds ``card.json`` (:func:`model_card`) and either an export's files (``meta.json``,
``model.jaxexport``, ``model.mlir``) or a workdir's ``model.json`` with its best checkpoint
(``checkpoints/<step>/``). ``pack`` writes ``MODEL.zip`` and ``MODEL.zip.sha256`` (``sha256sum``
format) beside it. ``install`` checks the archive against a digest given on the command line or
in the sidecar (a digest stored inside the zip would prove nothing), refuses members that are
links or whose paths leave the target folder, and extracts into :func:`models_dir` ``/NAME``
(a temporary folder renamed into place); :mod:`petseg_jax.inference.installed` finds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from petseg_jax import __version__
from petseg_jax.inference.installed import CARD_FILE, models_dir
from petseg_jax.inference.serving import ARTIFACT_FILES, META_FILE, read_meta
from petseg_jax.inference.spec import MODEL_FILE, read_model_file
from petseg_jax.training.checkpointing import Checkpointer

CHECKPOINTS = "checkpoints"


class ArchiveError(ValueError):
    """An archive that cannot be packed, verified or installed."""


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record(folder: Path) -> tuple[dict[str, Any], Path]:
    """The model record of an export (``meta.json``) or a workdir (``model.json``) and the
    training workdir whose evaluation it reports."""
    if (folder / META_FILE).is_file():
        meta = read_meta(folder)
        return meta, Path(meta["training"]["workdir"] or folder)
    return read_model_file(folder), folder


def model_card(folder: str | Path) -> dict[str, Any]:
    """The card of the model in ``folder``: training conditions (tracers, doses, AC/NAC,
    centers), spacing, label schema, software version and the Dice its evaluation reached
    (``W/eval/summary.json``; a model never evaluated is an error naming that file)."""
    folder = Path(folder)
    spec, workdir = _record(folder)
    summary_path = workdir / "eval" / "summary.json"
    if not summary_path.is_file():
        raise ArchiveError(f"{summary_path} does not exist: evaluate the model before packing "
                           f"(python -m petseg_jax.evaluate --workdir {workdir})")
    summary = json.loads(summary_path.read_text())
    return {"software": {"petseg_jax": __version__, "jax": spec["jax_version"]},
            "training_data": spec["training_data"], "spacing_mm": spec["spacing"],
            "labels": spec["schema"], "normalization": spec["normalization"],
            "checkpoint_step": spec["training"]["step"],
            "evaluation": {k: summary[k] for k in ("mean_dice", "by_organ", "n_cases")
                           if k in summary}}


def _members(folder: Path, spec: Mapping[str, Any]) -> list[Path]:
    """The files to pack, relative to ``folder``."""
    if (folder / META_FILE).is_file():
        return [Path(f) for f in ARTIFACT_FILES]
    step_dir = folder / CHECKPOINTS / str(spec["training"]["step"])
    if not step_dir.is_dir():
        raise ArchiveError(f"{step_dir} does not exist: the record's checkpoint is missing")
    return [Path(MODEL_FILE)] + sorted(p.relative_to(folder) for p in step_dir.rglob("*")
                                       if p.is_file())


def pack(folder: str | Path, out: str | Path) -> tuple[Path, str]:
    """Write the archive of ``folder`` (an export or a workdir, its best checkpoint) to ``out``
    and ``out.sha256`` beside it, both atomically; returns the archive and its digest."""
    folder, out = Path(folder), Path(out)
    if (folder / META_FILE).is_file():
        spec = read_meta(folder)
    else:
        spec = read_model_file(folder)
        ckpt = Checkpointer(folder / CHECKPOINTS, read_only=True)
        spec["training"]["step"] = ckpt.best_step()
        ckpt.close()
        if spec["training"]["step"] is None:
            raise ArchiveError(f"{folder / CHECKPOINTS} holds no checkpoint")
    card = model_card(folder) | {"checkpoint_step": spec["training"]["step"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(CARD_FILE, json.dumps(card, indent=1))
            for rel in _members(folder, spec):
                zf.write(folder / rel, rel.as_posix())
        digest = sha256_of(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar = out.with_name(out.name + ".sha256")
    side_tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    side_tmp.write_text(f"{digest}  {out.name}\n")
    os.replace(side_tmp, sidecar)
    return out, digest


def expected_digest(archive: Path, sha256: str | None) -> str:
    """The digest ``archive`` must have: ``sha256`` when given, else its sidecar's."""
    if sha256:
        return sha256.strip().lower()
    sidecar = archive.with_name(archive.name + ".sha256")
    if not sidecar.is_file():
        raise ArchiveError(f"no digest for {archive}: give --sha256 HEX or put {sidecar.name} "
                           "beside it")
    text = sidecar.read_text().split()
    if not text:
        raise ArchiveError(f"{sidecar} is empty")
    return text[0].lower()


def _safe_members(zf: zipfile.ZipFile, target: Path) -> list[zipfile.ZipInfo]:
    """Every member, checked: no links, no absolute or escaping paths, a card present."""
    infos = zf.infolist()
    for info in infos:
        path = PurePosixPath(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArchiveError(f"member {info.filename!r} is a link; refused")
        resolved = (target / path).resolve()
        if (path.is_absolute() or ".." in path.parts or "\\" in info.filename
                or not resolved.is_relative_to(target.resolve())):
            raise ArchiveError(f"member {info.filename!r} would leave the install folder; "
                               "refused")
    if CARD_FILE not in {i.filename for i in infos}:
        raise ArchiveError(f"the archive has no {CARD_FILE}")
    return infos


def install(archive: str | Path, sha256: str | None = None, name: str | None = None,
            root: str | Path | None = None) -> Path:
    """Verify ``archive`` (see :func:`expected_digest`) and install it as ``root/NAME``
    (``NAME``: the archive's stem; ``root``: :func:`models_dir`); returns the model folder."""
    archive = Path(archive)
    if not archive.is_file():
        raise ArchiveError(f"{archive} does not exist")
    want, got = expected_digest(archive, sha256), sha256_of(archive)
    if want != got:
        raise ArchiveError(f"{archive}: SHA-256 {got} does not match the expected {want}; "
                           "the archive is damaged or was changed. Refused")
    name = name or archive.name.removesuffix(".zip")
    if not name or "/" in name or name.startswith("."):
        raise ArchiveError(f"invalid model name {name!r}")
    root = Path(root) if root is not None else models_dir()
    target = root / name
    if target.exists():
        raise ArchiveError(f"{target} exists: a model of that name is installed already")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.{os.getpid()}.tmp"
    try:
        tmp.mkdir()
        with zipfile.ZipFile(archive) as zf:
            for info in _safe_members(zf, tmp):
                zf.extract(info, tmp)
        read_meta(tmp) if (tmp / META_FILE).is_file() else read_model_file(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
