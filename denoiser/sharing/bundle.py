"""Model bundles: one file holding everything ``clean`` needs for a model, to train once and
clean anywhere.

A bundle is a zip archive of JSON and safetensors files, never a pickle:

    bundle.json                     format, its version, the library that wrote it, the model
                                    id, and the sha256 of every other file in the archive
    clean/<model_id>.json           the cleaning model's metadata (recipe, lineage, history)
    clean/<model_id>.safetensors    its weights
    shapes/<name>.json|.safetensors the digit-shape model (with its calibration for this model)
    quality/<model_id>.json|...     the learned quality estimate

    path = export_bundle("data/models", "unet-cd0707c07a23", "unet.bundle")
    found = import_bundle("unet.bundle", "other/models", sha256=None)   # -> Checkpoint

:func:`import_bundle` checks the archive before it writes anything: the expected digest of
the whole file (when given), that it is a zip, that it holds only the files a bundle has,
the format version, every file's digest, and that the weights fit the architecture their
metadata names. Any failure is a :class:`BundleError` with one line naming what is wrong,
and the store is left as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from denoiser import __version__
from denoiser.checks.quality_net import QualityNet, find_quality, quality_path
from denoiser.checks.shapes import FOLDER as SHAPES_FOLDER
from denoiser.checks.shapes import ShapeNet, calibration_key, find_shapes
from denoiser.files import atomic_path, read_json, write_json
from denoiser.models.checkpoint import Checkpoint, find_checkpoint, resolve_checkpoint
from denoiser.models.networks import build_model

log = logging.getLogger(__name__)

FORMAT = "denoiser-bundle"
#: The bundle format this library writes and the newest it reads.
FORMAT_VERSION = 1
SUFFIX = ".bundle"
#: What an archive member may be called: a role folder, a plain name, JSON or safetensors.
_MEMBER = re.compile(r"(clean|shapes|quality)/[A-Za-z0-9][A-Za-z0-9._-]*\.(json|safetensors)")


class BundleError(ValueError):
    """A file that is not a usable model bundle; the message is one line."""


@dataclass(frozen=True)
class Part:
    role: str  # clean, shapes or quality
    name: str  # the file stem in the store
    metadata: dict
    tensors: dict[str, torch.Tensor]


def export_bundle(models_dir: str | os.PathLike[str], reference: str, out: str | os.PathLike[str]) -> Path:
    """Write the bundle of model ``reference`` (an id in ``models_dir`` or a checkpoint path),
    with the store's digit-shape model and the model's quality estimate where it has them.
    Returns the path written (atomically)."""
    found = resolve_checkpoint(reference, models_dir)
    parts = [Part("clean", found.model_id, found.metadata, _read_state(found.weights))]
    shapes = find_shapes(models_dir)
    if shapes is not None:
        meta = read_json(shapes.with_suffix(".json"))
        calibrated = meta.get("calibrated", {})  # only this model's threshold travels
        meta = {**meta, "calibrated": {k: v for k, v in calibrated.items() if k == calibration_key(found.model_id)}}
        parts.append(Part("shapes", shapes.stem, meta, _read_state(shapes)))
    quality = find_quality(models_dir, found.model_id)
    if quality is not None:
        parts.append(Part("quality", found.model_id, read_json(quality.with_suffix(".json")), _read_state(quality)))

    files: dict[str, bytes] = {}
    for part in parts:
        files[f"{part.role}/{part.name}.json"] = json.dumps(part.metadata, indent=2, sort_keys=True).encode()
        files[f"{part.role}/{part.name}.safetensors"] = save_tensors(part.tensors)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "denoiser_version": __version__,
              "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "model_id": found.model_id, "roles": [part.role for part in parts],
              "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bundle.json", json.dumps(header, indent=2, sort_keys=True))
        for name, data in files.items():
            archive.writestr(name, data)
    return out


def file_digest(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_bundle(path: str | os.PathLike[str], *, sha256: str | None = None) -> tuple[dict, list[Part]]:
    """The bundle's header and parts, every check of the module made; nothing is written."""
    shown = str(path)
    if sha256 is not None:
        got = file_digest(path)
        if got != sha256.lower():
            raise BundleError(f"{shown}: its sha256 is {got}, not the expected {sha256.lower()} "
                              "(damaged, truncated or another file)")
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise BundleError(f"{shown}: no such file") from None
    except (zipfile.BadZipFile, OSError) as error:
        raise BundleError(f"{shown}: not a model bundle, or truncated ({error})") from None
    with archive:
        names = archive.namelist()
        if "bundle.json" not in names:
            raise BundleError(f"{shown}: not a model bundle (no bundle.json inside)")
        strange = [n for n in names if n != "bundle.json" and not _MEMBER.fullmatch(n)]
        if strange:
            raise BundleError(f"{shown}: holds {strange[0]!r}, which a model bundle never does "
                              "(only JSON and safetensors; nothing of it was loaded)")
        try:
            header = json.loads(archive.read("bundle.json"))
        except (ValueError, zipfile.BadZipFile, OSError) as error:
            raise BundleError(f"{shown}: its bundle.json is damaged ({str(error).splitlines()[0]})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise BundleError(f"{shown}: not a model bundle (bundle.json does not name the format {FORMAT})")
        version = header.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise BundleError(f"{shown}: bundle format {version!r}, written by denoiser "
                              f"{header.get('denoiser_version', '?')}; this denoiser ({__version__}) reads "
                              f"format {FORMAT_VERSION} and older: upgrade it")
        digests = header.get("sha256")
        if not isinstance(digests, dict) or set(digests) != set(names) - {"bundle.json"}:
            raise BundleError(f"{shown}: its files are not those bundle.json lists (altered?)")
        contents = {}
        for name in sorted(digests):
            try:
                data = archive.read(name)
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise BundleError(f"{shown}: {name} is damaged ({str(error).splitlines()[0]})") from None
            if hashlib.sha256(data).hexdigest() != digests[name]:
                raise BundleError(f"{shown}: {name} does not match its sha256 in bundle.json (damaged or altered)")
            contents[name] = data
    parts = []
    for name in sorted(n for n in contents if n.endswith(".json")):
        role, stem = name[: -len(".json")].split("/", 1)
        tensors_name = f"{role}/{stem}.safetensors"
        if tensors_name not in contents:
            raise BundleError(f"{shown}: {name} has no {tensors_name} beside it")
        try:
            metadata, tensors = json.loads(contents[name]), load_tensors(contents[tensors_name])
        except Exception as error:  # noqa: BLE001 - a malformed header or JSON: one line
            raise BundleError(f"{shown}: {tensors_name} or {name} is not readable ({error})") from None
        parts.append(Part(role, stem, metadata, tensors))
    clean = [p for p in parts if p.role == "clean"]
    if len(clean) != 1 or clean[0].name != header.get("model_id"):
        raise BundleError(f"{shown}: a bundle holds exactly one cleaning model, the one bundle.json names")
    for part in parts:
        _check_fits(shown, part)
    return header, parts


def import_bundle(path: str | os.PathLike[str], models_dir: str | os.PathLike[str], *,
                  sha256: str | None = None) -> Checkpoint:
    """Check the bundle at ``path`` (see the module) and put its models into ``models_dir``.
    A model the store already has is left as it is (the same id with other weights: the
    same recipe trained elsewhere; the store's own is kept and a warning says so). Returns
    the cleaning model's checkpoint in the store."""
    header, parts = read_bundle(path, sha256=sha256)
    models_dir = Path(models_dir)
    model_id = header["model_id"]
    origin = {"bundle": str(path), "bundle_sha256": sha256 or file_digest(path),
              "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for part in sorted(parts, key=lambda p: p.role == "clean"):  # the cleaning model last: complete when seen
        if part.role == "clean":
            target, meta = models_dir / f"{part.name}.pt", {**part.metadata, "imported": origin}
        elif part.role == "quality":
            target, meta = quality_path(models_dir, part.name), part.metadata
        else:
            target, meta = models_dir / SHAPES_FOLDER / f"{part.name}.pt", part.metadata
        if _same_weights(target, part.tensors):
            if part.role == "shapes":  # the store's own copy: add this model's threshold to it
                _merge_calibration(target, part.metadata.get("calibrated", {}))
            continue
        if part.role == "shapes" and find_shapes(models_dir) is not None:
            continue  # the store keeps its digit-shape model; clean calibrates it where MNIST is at hand
        if part.role == "clean" and find_checkpoint(models_dir, part.name) is not None:
            # The same id is the same recipe and data trained elsewhere (other bits): the store's
            # own stays, so the files it cleaned are not silently judged by other weights.
            log.warning("the store %s already has %s with other weights (the same recipe trained elsewhere): "
                        "kept it", models_dir, part.name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            torch.save(part.tensors, tmp)
        write_json(target.with_suffix(".json"), meta)
    found = find_checkpoint(models_dir, model_id)
    assert found is not None
    return found


def _read_state(weights: Path) -> dict[str, torch.Tensor]:
    state = torch.load(weights, map_location="cpu", weights_only=True)
    return {name: tensor.contiguous() for name, tensor in state.items()}


def _check_fits(shown: str, part: Part) -> None:
    """The weights load into the network their metadata names (a foreign or altered file does not)."""
    try:
        net = (build_model(str(part.metadata.get("architecture"))) if part.role == "clean"
               else ShapeNet() if part.role == "shapes" else QualityNet())
        net.load_state_dict(part.tensors)
    except Exception as error:  # noqa: BLE001 - unknown architecture, wrong shapes or names
        reason = str(error).strip().splitlines()[0][:200]
        raise BundleError(f"{shown}: the {part.role} model {part.name} does not fit its network ({reason})") from None


def _same_weights(target: Path, tensors: dict[str, torch.Tensor]) -> bool:
    if not (target.is_file() and target.with_suffix(".json").is_file()):
        return False
    try:
        stored = _read_state(target)
    except Exception:  # noqa: BLE001 - a damaged copy in the store is replaced
        return False
    return stored.keys() == tensors.keys() and all(torch.equal(stored[k], tensors[k]) for k in stored)


def _merge_calibration(target: Path, calibrated: dict) -> None:
    meta_path = target.with_suffix(".json")
    metadata = read_json(meta_path)
    if calibrated and any(metadata.get("calibrated", {}).get(k) != v for k, v in calibrated.items()):
        metadata["calibrated"] = {**metadata.get("calibrated", {}), **calibrated}
        write_json(meta_path, metadata)


def is_bundle_reference(reference: str) -> bool:
    """Whether ``--model`` names a bundle (a URL, or a file ending in .bundle) rather than a
    model id or a checkpoint path."""
    return reference.startswith(("http://", "https://")) or reference.endswith(SUFFIX)

