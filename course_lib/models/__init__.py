"""Models built in the notebooks: sliding-window patch classifier, FCN, U-Net, SegNet, DeepLab v1-v3+,
Mask R-CNN, basis-based instance segmentation (CenterNet + YOLACT / BlendMask + B2Inst)."""

from .backbones import ResNetFeatures
from .basis_instance import (B2INST_ARMS, BasisInstanceNet, MaskScoringHead, blend, boundary_score, centernet_focal_loss,
                             centernet_targets, crop_to_boxes, decode_centernet, gaussian_radius, paste_masks,
                             per_instance_boundaries, resample_roi, roi_basis, roi_sample_nearest, yolact_masks)
from .common import PadToMultiple, count_parameters, pad_to_multiple, smp_model
from .deeplab import DeepLab
from .fcn import FCN
from .maskrcnn import mask_rcnn
from .patch_cnn import PatchClassifier, convolutionalize, dense_logits, extract_patches, pad_for_centres
from .pretrained import PretrainedWeightsError
from .segnet import SegNet
from .unet import UNet
from .upsampling import bilinear_kernel, bilinear_upsampler

__all__ = ["ResNetFeatures", "PadToMultiple", "count_parameters", "pad_to_multiple", "smp_model", "DeepLab", "FCN", "mask_rcnn", "PatchClassifier",
           "convolutionalize", "dense_logits", "extract_patches", "pad_for_centres", "SegNet", "UNet",
           "bilinear_kernel", "bilinear_upsampler", "PretrainedWeightsError",
           "B2INST_ARMS", "BasisInstanceNet", "MaskScoringHead", "blend", "boundary_score", "centernet_focal_loss",
           "centernet_targets", "crop_to_boxes", "decode_centernet", "gaussian_radius", "paste_masks",
           "per_instance_boundaries", "resample_roi", "roi_basis", "roi_sample_nearest", "yolact_masks"]
