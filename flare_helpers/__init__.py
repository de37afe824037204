"""flare_helpers: the library behind the flare-vnet notebook series.

FLARE22 abdominal CT → cached, resampled volumes → 3D VNet (Keras 3) →
predictions on the input's own grid → per-organ Dice/NSD → figures and a 3D video.

One subpackage per stage of that pipeline, in the order data flows through them:
``data`` (zip, cases, NIfTI, layout), ``preprocess``, ``model``, ``train``,
``localize``, ``infer``, ``evaluate``, ``pseudolabel``, ``viz``; ``phantoms`` makes
test data, ``workflows`` composes stages, ``series`` runs the notebooks, and
``cli`` the console commands. Importing the package has no side effects; heavy
modules (Keras) load only with the stages that need them.
"""

__version__ = "0.1.0"
