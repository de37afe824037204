"""flare_helpers: the library behind the flare-vnet notebook series.

FLARE22 abdominal CT → cached, resampled volumes → 3D VNet (Keras 3) →
predictions on the input's own grid → per-organ Dice/NSD → figures and a 3D video.
Importing the package has no side effects; heavy modules (Keras) load on demand.
"""

__version__ = "0.1.0"
