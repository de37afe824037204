"""Workflows: what composes the stages into what a user runs.

- :mod:`~flare_helpers.workflows.training`: a training run: the cache brought up
  to date (with kept pseudo-labelled cases), then in spacing mode the organ
  localiser, then the VNet, both through the one training loop;
- :mod:`~flare_helpers.workflows.pseudo_round`: teacher → pseudo-labels →
  student, and which of the two to keep;
- :mod:`~flare_helpers.workflows.ceiling`: the resolution ceiling of a grid;
- :mod:`~flare_helpers.workflows.report`: a trained model's result figures and videos.

Workflows import stages; stages never import workflows (an import-linter
contract in ``pyproject.toml`` checks it).
"""
