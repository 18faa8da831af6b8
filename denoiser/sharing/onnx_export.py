"""A cleaning model as ONNX, to run where PyTorch is not wanted (onnxruntime, other runtimes).

    path, difference = export_onnx("data/models", "unet-cd0707c07a23", "unet.onnx")

The graph is the network alone: input ``image`` (batch, 1, height, width) in the model's
look (paper 0, ink 1, float32), output ``logits`` of the same shape (the cleaned image is
their sigmoid); batch and image size are dynamic. The product's handling around the network
(paper and ink levels, stroke scale, the map back to the scan's tones) stays in Python:
docs/sharing.md shows the few lines that clean one digit scan with onnxruntime alone. The
export is checked against PyTorch on random images of three sizes and refused when they
differ by more than :data:`TOLERANCE`; the ONNX model's metadata carries the model id and
the tone headroom the model was trained with.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from denoiser.files import atomic_path
from denoiser.models.checkpoint import load_model, resolve_checkpoint
from denoiser.scans.restore import model_headroom

TOLERANCE = 1e-4  # largest difference allowed between onnxruntime and PyTorch (float32 logits)
OPSET = 17
#: Sizes the export is checked on: MNIST's, a scan's, an odd one.
CHECK_SHAPES = ((3, 1, 28, 28), (1, 1, 64, 48), (2, 1, 45, 37))


def to_onnx(model: torch.nn.Module) -> bytes:
    """The model's graph as ONNX bytes (TorchScript exporter: no onnxscript needed)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notes
        torch.onnx.export(model.eval(), (torch.rand(2, 1, 28, 28),), buffer, input_names=["image"],
                          output_names=["logits"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={name: {0: "batch", 2: "height", 3: "width"} for name in ("image", "logits")})
    return buffer.getvalue()


def largest_difference(model: torch.nn.Module, onnx_bytes: bytes, images: list[np.ndarray]) -> float:
    """The largest absolute difference of the logits, onnxruntime against PyTorch (float32)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in images:
        ours = session.run(None, {"image": batch.astype(np.float32)})[0]
        with torch.no_grad():
            theirs = model.eval()(torch.from_numpy(batch.astype(np.float32))).numpy()
        worst = max(worst, float(np.abs(ours - theirs).max()))
    return worst


def export_onnx(models_dir: str | os.PathLike[str], reference: str, out: str | os.PathLike[str]) -> tuple[Path, float]:
    """Write model ``reference`` (id or checkpoint path) as ONNX at ``out``, checked against
    PyTorch first. Returns the path and the largest difference found. Needs the ``onnx``
    extra (``pip install 'denoiser[onnx]'``)."""
    try:
        import onnx
        import onnxruntime  # noqa: F401 - the check below runs in it
    except ImportError:
        raise ValueError("ONNX export needs onnx and onnxruntime: pip install 'denoiser[onnx]'") from None
    found = resolve_checkpoint(reference, models_dir)
    model = load_model(found)
    graph = onnx.load_from_string(to_onnx(model))
    for key, value in (("denoiser_model_id", found.model_id),
                       ("tone_headroom", json.dumps(model_headroom(found.metadata))),
                       ("input", "image: (batch, 1, height, width) float32, paper 0 and ink 1"),
                       ("output", "logits: the cleaned image is their sigmoid")):
        graph.metadata_props.add(key=key, value=value)
    data = graph.SerializeToString()
    rng = np.random.default_rng(0)
    difference = largest_difference(model, data, [rng.random(shape, dtype=np.float32) for shape in CHECK_SHAPES])
    if difference > TOLERANCE:
        raise ValueError(f"the ONNX export of {found.model_id} differs from PyTorch by {difference:.1e} "
                         f"(more than {TOLERANCE:g}); not written")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(data)
    return out, difference
