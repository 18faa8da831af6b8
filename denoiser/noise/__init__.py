"""What noise is: a spec parsed and checked, the synthetic kinds, realistic scan
degradations, and the blind-spot masks that self-supervised losses use.

    spec        NoiseSpec ("gaussian:0.5", "salt-pepper:0.1", "scan", ranges)
    synthetic   add_noise, noisy_copy, synthesize
    degrade     realistic scans: paper, ink, texture, lighting, blur, noise, dust, JPEG
    blindspot   blind-spot masking and the clipped-noise loss
"""

from denoiser import lazy_exports

_EXPORTS = {
    "NoiseSpec": "spec",
    "add_noise": "synthetic",
    "noisy_copy": "synthetic",
    "synthesize": "synthetic",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
