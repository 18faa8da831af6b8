"""The networks and everything about a stored model: recipes and model ids, checkpoints,
the store's defaults and promotion, the device and precision it runs in, and running it
over images (batched, tiled).

    networks     ConvDAE (the tutorial's), UNet, DenseAE; build_model
    recipe       TrainConfig, the recipes, model ids
    checkpoint   save/load a state dict plus JSON metadata; resolve a model by id or path
    registry     the default model per use, promotion, choose_clean_model
    device       resolve_device
    precision    float32 or bf16, chosen per machine by measurement
    infer        denoise, denoise_images (batched and tiled)
"""

from denoiser import lazy_exports

_EXPORTS = {
    "build_model": "networks",
    "TrainConfig": "recipe",
    "load_model": "checkpoint",
    "resolve_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "choose_clean_model": "registry",
    "resolve_device": "device",
    "resolve_precision": "precision",
    "denoise": "infer",
    "denoise_images": "infer",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
