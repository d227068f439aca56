"""course_lib: the small, tested helper library behind the segmentation course notebooks.

Modules: ``runtime`` (profiles, device, seed), ``data`` (datasets, downloads, augmentation,
loaders), ``metrics`` (confusion matrix, IoU, Dice, boundary F1, trimap), ``engine`` (train /
evaluate / test-time augmentation, checkpoints, the course's training recipe), ``viz``
(overlays, grids, curves), ``models`` (patch classifier, FCN, U-Net, SegNet, DeepLab v1-v3+),
(DeepLab's SBCB wrapper in ``models.sbcb``), ``losses`` (class weights, Dice), ``crf`` (fully
connected CRF), ``boundaries`` (semantic edges, edge precision-recall, instance boundaries),
``instance_metrics`` (DSB2018 score, COCO mask AP, Boundary IoU), ``cost`` (activation memory,
time per call), ``results`` (reference runs: provenance, tables, verdicts), ``leaderboard``
(CamVid results), ``exercises`` (checks for the notebooks' exercises).
"""

from .runtime import Profile, Setup, get_device, get_profile, seed_everything, setup

__all__ = ["Profile", "Setup", "get_device", "get_profile", "seed_everything", "setup"]
__version__ = "0.1.0"
