"""Model bundles: export, checked import, download over loopback, and the refusals."""

import hashlib
import json
import zipfile

import numpy as np
import pytest
import torch

from denoiser.checks import quality_net, shapes
from denoiser.models import checkpoint
from denoiser.models.checkpoint import save_weights
from denoiser.models.networks import build_model
from denoiser.scans.restore import restore
from denoiser.sharing.bundle import FORMAT_VERSION, BundleError, export_bundle, file_digest, import_bundle
from denoiser.sharing.download import fetch, obtain
from tests.helpers import bundle_server, draw_digits

MODEL = "unet-0123456789ab"
SHAPES = f"digit-shapes-v{shapes.VERSION}-test"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A store with a cleaning model, a digit-shape model calibrated for it and another
    model, and the model's quality estimate; and the bundle exported from it."""
    store = tmp_path_factory.mktemp("source")
    torch.manual_seed(0)
    checkpoint.save_checkpoint(store, MODEL, build_model("unet"), {
        "architecture": "unet", "tone_headroom": 1.25, "parent": "unet-fedcba987654"})
    save_weights(shapes.ShapeNet(), store / shapes.FOLDER / f"{SHAPES}.pt",
                 {"model_id": SHAPES, "calibrated": {shapes.calibration_key(MODEL): 0.41,
                                                     shapes.calibration_key("unet-other"): 0.3}})
    save_weights(quality_net.QualityNet(), quality_net.quality_path(store, MODEL),
                 {"model_id": MODEL, "version": quality_net.VERSION})
    bundle = export_bundle(store, MODEL, tmp_path_factory.mktemp("out") / "model.bundle")
    return store, bundle


def outputs(store, model_id):
    found = checkpoint.find_checkpoint(store, model_id)
    scans = [255 - d for d in draw_digits(6, seed=3)[0]]
    cleaned, _ = restore(checkpoint.load_model(found), scans, headroom=1.25)
    return np.stack(cleaned)


def test_export_then_import_gives_the_same_outputs_bit_for_bit(source, tmp_path):
    store, bundle = source
    found = import_bundle(bundle, tmp_path / "store")
    assert found.model_id == MODEL and found.metadata["parent"] == "unet-fedcba987654"  # lineage
    assert found.metadata["imported"]["bundle_sha256"] == file_digest(bundle)
    assert np.array_equal(outputs(store, MODEL), outputs(tmp_path / "store", MODEL))
    shape_meta = json.loads((tmp_path / "store" / shapes.FOLDER / f"{SHAPES}.json").read_text())
    assert shape_meta["calibrated"] == {shapes.calibration_key(MODEL): 0.41}  # only this model's threshold travels
    assert quality_net.find_quality(tmp_path / "store", MODEL) is not None
    with zipfile.ZipFile(bundle) as archive:  # JSON and safetensors only: no pickle anywhere
        assert all(n.endswith((".json", ".safetensors")) for n in archive.namelist())
        assert not any(b"\x80\x02" in archive.read(n)[:2] or n.endswith(".pkl") for n in archive.namelist())
    # Importing again writes nothing new; the store's copy stays.
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*.pt")}
    import_bundle(bundle, tmp_path / "store")
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*.pt")}


def rewritten(bundle, tmp_path, change):
    """A copy of ``bundle`` with its members passed through ``change(name, data) -> data | None``
    (None drops the member) and ``change("extra", None)`` -> extra members to add."""
    out = tmp_path / "changed.bundle"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = change(name, src.read(name))
            if data is not None:
                dst.writestr(name, data)
        for name, data in (change("extra", None) or {}).items():
            dst.writestr(name, data)
    return out


def header_with(**fields):
    def change(name, data):
        if name == "bundle.json":
            return json.dumps({**json.loads(data), **fields})
        return None if name == "extra" else data
    return change


def flip_weights(name, data):
    if name.startswith("clean/") and name.endswith(".safetensors"):
        data = bytearray(data)
        data[-100] ^= 0xFF
        return bytes(data)
    return None if name == "extra" else data


def with_pickle(name, data):
    if name == "extra":
        return {"clean/evil.pkl": b"\x80\x04cos\nsystem\n."}
    return data


REFUSALS = {
    "altered weights": (flip_weights, "does not match its sha256 in bundle.json"),
    "a pickle inside": (with_pickle, "'clean/evil.pkl', which a model bundle never does"),
    "a future format": (header_with(format_version=FORMAT_VERSION + 1, denoiser_version="9.0"),
                        f"bundle format {FORMAT_VERSION + 1}, written by denoiser 9.0"),
    "another format": (header_with(format="something-else"), "not a model bundle"),
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_a_bad_bundle_is_refused_in_one_line_and_adds_nothing(source, tmp_path, kind):
    change, expected = REFUSALS[kind]
    bad = rewritten(source[1], tmp_path, change)
    with pytest.raises(BundleError, match="^[^\n]*$") as refused:
        import_bundle(bad, tmp_path / "store")
    assert expected in str(refused.value) and str(bad) in str(refused.value)
    assert not (tmp_path / "store").exists()


def test_a_damaged_truncated_or_foreign_file_or_wrong_digest_is_refused(source, tmp_path):
    _, bundle = source
    data = bundle.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "a corrupted byte": data[:5000] + bytes([data[5000] ^ 1]) + data[5001:],
             "a checkpoint": (source[0] / f"{MODEL}.pt").read_bytes(), "text": b"hello"}
    for name, content in cases.items():
        path = tmp_path / f"{name}.bundle"
        path.write_bytes(content)
        with pytest.raises(BundleError, match="^[^\n]*$") as refused:
            import_bundle(path, tmp_path / "store")
        assert str(path) in str(refused.value), name
    with pytest.raises(BundleError, match=f"its sha256 is {file_digest(bundle)}, not the expected 0+"):
        import_bundle(bundle, tmp_path / "store", sha256="0" * 64)
    assert not (tmp_path / "store").exists()


def test_a_bundle_by_url_is_checked_cached_and_resumed(source, tmp_path):
    _, bundle = source
    data, digest = bundle.read_bytes(), hashlib.sha256(bundle.read_bytes()).hexdigest()
    with bundle_server({"models/model.bundle": data}, cut_first_at=len(data) // 3) as (base, ranges):
        found = obtain(f"{base}/models/model.bundle#sha256={digest}", tmp_path / "store")
        assert found.model_id == MODEL
        # The first answer was cut; the second try asked only for the rest.
        assert ranges == [None, f"bytes={len(data) // 3}-"]
        again, _ = fetch(f"{base}/models/model.bundle", tmp_path / "store" / ".downloads")
        assert len(ranges) == 2 and again.read_bytes() == data  # cached: not downloaded again
        with pytest.raises(BundleError, match="its sha256 is .* not the expected 1+ "):
            obtain(f"{base}/models/model.bundle#sha256={'1' * 64}", tmp_path / "other")
        with pytest.raises(BundleError, match="the server answered 404"):
            obtain(f"{base}/models/missing.bundle", tmp_path / "other")
    assert not (tmp_path / "other" / f"{MODEL}.json").exists()


def test_a_server_that_sends_nothing_times_out_in_one_line(tmp_path):
    with bundle_server({}, stall=True) as (base, _):
        with pytest.raises(BundleError, match=r"download failed after 2 tries \(no data for 0.5 s\)"):
            fetch(f"{base}/model.bundle", tmp_path, timeout=0.5, tries=2)


def test_a_run_that_names_a_bundle_url_fetches_it_into_its_store(source, tmp_path):
    # What each run of a deployment made with `deploy --model URL` does on its worker.
    from denoiser.folders.model_choice import choose_for_clean
    from denoiser.folders.settings import CleanOptions, CleanRun

    data = source[1].read_bytes()
    with bundle_server({"model.bundle": data}) as (base, ranges):
        run = CleanRun(model=f"{base}/model.bundle", models_dir=str(tmp_path / "worker-store"), train=False)
        first = choose_for_clean(run, CleanOptions(device="cpu"))
        second = choose_for_clean(run, CleanOptions(device="cpu"))
    assert first.model_id == second.model_id == MODEL and len(ranges) == 1  # fetched once
    assert first.shapes is not None and first.quality is not None  # its checks came with it


def test_with_no_model_and_no_training_allowed_the_run_says_what_to_do(tmp_path):
    from denoiser.folders.model_choice import choose_for_clean
    from denoiser.folders.settings import CleanOptions, CleanRun

    with pytest.raises(ValueError, match="^no model for clean in .*--no-train was given: import a model bundle"):
        choose_for_clean(CleanRun(models_dir=str(tmp_path / "empty"), train=False), CleanOptions(device="cpu"))


def test_a_store_that_trained_the_same_recipe_keeps_its_own_weights(source, tmp_path, caplog):
    torch.manual_seed(1)  # the same id, other weights: as when two machines train one recipe
    own = checkpoint.save_checkpoint(tmp_path / "store", MODEL, build_model("unet"), {"architecture": "unet"})
    before = own.weights.read_bytes()
    found = import_bundle(source[1], tmp_path / "store")
    assert found.weights.read_bytes() == before and "imported" not in found.metadata
    assert "already has unet-0123456789ab with other weights" in caplog.text
