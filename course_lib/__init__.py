"""course_lib: the small, tested helper library behind the segmentation course notebooks.

Modules: ``runtime`` (profiles, device, seed), ``data`` (datasets, downloads, augmentation,
loaders), ``metrics`` (confusion matrix, IoU, Dice, boundary F1), ``engine`` (train /
evaluate, checkpoints), ``viz`` (overlays, grids, curves), ``models`` (patch classifier, FCN,
U-Net, SegNet), ``losses`` (class weights, Dice), ``leaderboard`` (CamVid results),
``exercises`` (checks for the notebooks' exercises).
"""

from .runtime import Profile, Setup, get_device, get_profile, seed_everything, setup

__all__ = ["Profile", "Setup", "get_device", "get_profile", "seed_everything", "setup"]
__version__ = "0.1.0"
