# DRAFT of notebook 05 (issue 3), not part of the course yet. Percent-format source: build the
# .ipynb with jupytext or any percent-format converter. Its cpu-profile run took 17.5 min and its
# CamVid results (19-24 mIoU after 2 epochs; small-class IoU 0-3 for every loss) do not support the
# lesson yet: redesign the budget before committing it as notebooks/05_unet_segnet.ipynb.

# %% [markdown]
# # 05 · Encoder–decoders: U-Net and SegNet, and losses for imbalanced classes
#
# **What you will learn**
# - **U-Net** (Ronneberger, Fischer, Brox 2015): a symmetric encoder–decoder whose decoder concatenates the encoder's feature maps at every scale, and how to make it accept any H×W;
# - **SegNet** (Badrinarayanan et al. 2017): a decoder that upsamples with the encoder's **max-pooling indices** (notebook 04) instead of skip features;
# - U-Net on the task it was made for: **ISBI 2012 membranes**, with the paper's elastic deformations;
# - U-Net and SegNet on CamVid, next to the "production" `segmentation_models_pytorch.Unet` (ResNet-34 encoder, no pretrained weights);
# - **losses under class imbalance**: cross-entropy, class-weighted cross-entropy, Dice, and CE + Dice, compared on CamVid's small classes (pole, sign, pedestrian, bicyclist).

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import tv_tensors
from torchvision.transforms import v2

import course_lib
from course_lib import data as D
from course_lib import leaderboard, viz
from course_lib.engine import evaluate, fit, predict
from course_lib.exercises import check
from course_lib.losses import CEDiceLoss, DiceLoss, class_weights, pixel_counts
from course_lib.models import SegNet, UNet, count_parameters

S = course_lib.setup(seed=0)
viz.notebook_style()
notebook_start = time.perf_counter()
CFG = {"smoke": dict(unet_width=4, segnet_width=4, loss_width=4, smp_encoder="resnet18", membrane_crop=128,
                     membrane_epochs=1, camvid_epochs=1, loss_epochs=1, lr=1e-3),
       "cpu":   dict(unet_width=16, segnet_width=16, loss_width=8, smp_encoder="resnet34", membrane_crop=256,
                     membrane_epochs=20, camvid_epochs=2, loss_epochs=4, lr=1e-3),
       "gpu":   dict(unet_width=64, segnet_width=64, loss_width=32, smp_encoder="resnet34", membrane_crop=512,
                     membrane_epochs=200, camvid_epochs=80, loss_epochs=40, lr=1e-3)}[S.profile.name]
print(CFG)
ckpt_dir = course_lib.runtime.REPO_ROOT / "checkpoints"

def ckpt(name):
    return ckpt_dir / f"05_{name}_{S.profile.name}.pt"

# %% [markdown]
# ## 1. U-Net
#
# The encoder is four steps of (two 3×3 conv + BN + ReLU, then 2×2 max-pool), doubling the channels each time; the decoder mirrors it with 2×2 transposed convolutions, and after each one **concatenates** the encoder's feature map of the same scale before two more convolutions. The high-resolution encoder features carry *where*; the upsampled decoder features carry *what*.
#
# The original used unpadded ("valid") convolutions, so its output was smaller than its input and the skips had to be cropped; it tiled large images with an overlap. We use padded convolutions, pad the input to a multiple of 16 (four poolings) and crop the output back, so **output size = input size** for any H×W.

# %%
for w in (CFG["unet_width"], 64):
    m = UNet(2, in_channels=1, width=w)
    print(f"UNet(width={w}): {count_parameters(m):,} parameters; 97×131 input -> {tuple(m(torch.zeros(1, 1, 97, 131)).shape[-2:])}"
          + ("   (the paper's width)" if w == 64 else ""))
m = SegNet(11, width=CFG["segnet_width"])
print(f"SegNet(width={CFG['segnet_width']}): {count_parameters(m):,} parameters; 97×131 input -> {tuple(m(torch.zeros(1, 3, 97, 131)).shape[-2:])}")

# %% [markdown]
# ## 2. U-Net on ISBI 2012 membranes
#
# 30 labelled 512×512 EM slices; the 30 test slices have no public labels, so we hold out the last 6 training slices for validation (train on 24). The paper's lesson: with very few images, **augmentation** is the data. We train on random crops with flips and **elastic deformations** (`v2.ElasticTransform`, which moves image and mask together and keeps the mask's nearest-neighbour labels), and score whole 512×512 slices: U-Net is fully convolutional.

# %%
mem_full = D.semantic_dataset("membrane", "train", S.profile)
channels = mem_full[0][0].shape[0]
mem_classes, mem_palette = mem_full.classes, mem_full.palette
crop = min(CFG["membrane_crop"], *mem_full[0][0].shape[-2:])
mem_train_tf = v2.Compose([
    v2.RandomCrop(crop), v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
    # pixels pulled in from outside the slice are void in the mask (255), so they are not scored
    v2.RandomApply([v2.ElasticTransform(alpha=50.0, sigma=5.0, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255})], p=0.5),
    v2.ColorJitter(brightness=0.2, contrast=0.2), D.to_model_input(channels)])
mem_train = D.semantic_dataset("membrane", "train", S.profile, transforms=mem_train_tf)
mem_val = D.semantic_dataset("membrane", "train", S.profile, transforms=D.eval_transforms(channels))
n = len(mem_full)
n_val = max(1, n // 5)                                   # the last 6 of 30 slices are held out
train_idx = range(S.profile.subset(n - n_val))
val_idx = range(n - n_val, n - n_val + S.profile.subset(n_val, train=False))
mem_train_loader = DataLoader(Subset(mem_train, train_idx), batch_size=4, shuffle=True, generator=S.generator)
mem_val_loader = DataLoader(Subset(mem_val, val_idx), batch_size=2)
x, y = next(iter(mem_train_loader))
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for k in range(min(4, len(x))):
    axes[0, k].imshow(D.denormalize(x[k], channels).permute(1, 2, 0).squeeze(), cmap="gray")
    axes[1, k].imshow(viz.colorize(y[k], mem_palette))
for a in axes.flat:
    a.axis("off")
plt.suptitle(f"augmented {crop}×{crop} training crops (flips, elastic deformation, contrast) and their masks", fontsize=10)
plt.show()

# %%
mem_C = len(mem_classes)
mem_weights = class_weights(pixel_counts(mem_full, mem_C)).to(S.device)
torch.manual_seed(0)
unet_mem = UNet(mem_C, in_channels=channels, width=CFG["unet_width"])
hist_mem = fit(unet_mem, mem_train_loader, mem_val_loader, num_classes=mem_C, device=S.device, epochs=CFG["membrane_epochs"],
               optimizer=torch.optim.AdamW(unet_mem.parameters(), lr=CFG["lr"], weight_decay=1e-4),
               loss_fn=torch.nn.CrossEntropyLoss(weight=mem_weights, ignore_index=255), schedule="onecycle",
               checkpoint=ckpt("unet_membrane"), verbose=False)
res_mem = evaluate(unet_mem, mem_val_loader, mem_C, S.device, boundary=True, progress=False)
fg = mem_C - 1  # membrane (class 1) on the real data
print(f"ISBI 2012, {len(val_idx)} held-out slices at full resolution, profile {S.profile.name}, "
      f"{hist_mem.train_time_s / 60:.1f} min of training on {leaderboard.device_name(S.device)}")
print(f"membrane IoU {100 * res_mem['iou'][fg]:.1f} | membrane Dice {100 * res_mem['dice'][fg]:.1f} | "
      f"membrane boundary F {100 * res_mem['bf1'][fg]:.1f} | pixel accuracy {100 * res_mem['pixel_acc']:.1f}")

# %%
unet_mem.eval()
xv, yv = mem_val_loader.dataset[0]
logits = predict(unet_mem, xv[None].to(S.device))[0].cpu()
prob = logits.softmax(0)[fg]
fig, axes = plt.subplots(1, 4, figsize=(15, 4))
axes[0].imshow(D.denormalize(xv, channels).permute(1, 2, 0).squeeze(), cmap="gray"); axes[0].set_title("held-out slice")
axes[1].imshow(viz.colorize(yv, mem_palette)); axes[1].set_title("ground truth (yellow = membrane)")
axes[2].imshow(prob, cmap="magma", vmin=0, vmax=1); axes[2].set_title("U-Net: P(membrane)")
err = np.zeros((*yv.shape, 3)); err[(logits.argmax(0) == fg) & (yv != fg)] = (1, 0.2, 0.2); err[(logits.argmax(0) != fg) & (yv == fg)] = (0.2, 0.6, 1)
axes[3].imshow(err); axes[3].set_title("errors: red = false membrane, blue = missed")
for a in axes:
    a.axis("off")
plt.show()

# %% [markdown]
# Most errors are on thin, faint membranes, where a gap is a topological error (two cells merged) even if it costs few pixels. That is why the ISBI challenge ranked by Rand and warping errors rather than pixel IoU, and why the U-Net paper weighted the pixels *between* touching cells more in its loss.

# %% [markdown]
# ## 3. U-Net and SegNet on CamVid, and the production library
#
# Same data pipeline and loss as notebook 03 (training at the profile's size with the course's augmentation, class-weighted cross-entropy, AdamW with a one-cycle schedule; scoring at full 360×480), so the numbers are comparable with FCN. For comparison, `segmentation_models_pytorch.Unet` with a ResNet-34 encoder and **no pretrained weights** (none can be downloaded here): the same U-Net idea with a stronger encoder.

# %%
size = S.profile.camvid_size
L = D.semantic_loaders("camvid", S.profile, size, S.generator)
classes, palette, C = L.classes, L.palette, L.num_classes
weighted_ce = torch.nn.CrossEntropyLoss(weight=L.class_weights.to(S.device), ignore_index=255)

def train(model, name, epochs, loss_fn=weighted_ce, validate=True):
    """Train with the notebook's recipe; same data order for every call (the shuffle generator is reset)."""
    S.generator.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=CFG["lr"], weight_decay=1e-4)
    return fit(model, L.train, L.val if validate else None, num_classes=C, device=S.device, epochs=epochs, optimizer=opt,
               loss_fn=loss_fn, schedule="onecycle", input_size=size, checkpoint=ckpt(name), verbose=False)

camvid_models = {
    f"U-Net (width {CFG['unet_width']})": UNet(C, width=CFG["unet_width"]),
    f"SegNet (width {CFG['segnet_width']})": SegNet(C, width=CFG["segnet_width"]),
    f"smp.Unet ({CFG['smp_encoder']}, no pretraining)": smp.Unet(CFG["smp_encoder"], encoder_weights=None, classes=C),
}
camvid_hist = {}
for (name, model), key in zip(camvid_models.items(), ["unet", "segnet", "smp_unet"]):
    torch.manual_seed(0)
    camvid_hist[name] = train(model, key, CFG["camvid_epochs"])
    print(f"{name}: {camvid_hist[name].train_time_s / 60:.1f} min, val mIoU per epoch {[round(v, 3) for v in camvid_hist[name]['val_miou']]}")

# %% [markdown]
# ## 4. Losses under class imbalance
#
# Cross-entropy averages over **pixels**, so road and sky dominate it. Three remedies:
#
# - **class-weighted CE**: weight each class by frequency^(−½) (notebook 00);
# - **Dice loss**: 1 − the soft Dice of each class, averaged over **classes**: a class of a hundred pixels counts as much as one of a million (`course_lib.losses.DiceLoss`, tested against smp's);
# - **CE + Dice**: the pixel-level gradient of CE with the class-level balance of Dice.
#
# Four U-Nets with the same initialisation, data order and schedule, differing only in the loss. (A smaller U-Net than in section 3, so that four fit in the `cpu` budget.)

# %%
small = [classes.index(c) for c in ("Pole", "SignSymbol", "Pedestrian", "Bicyclist")] if C == 11 else list(range(1, C))
losses = {"CE": torch.nn.CrossEntropyLoss(ignore_index=255), "weighted CE": weighted_ce,
          "Dice": DiceLoss(), "CE + Dice": CEDiceLoss()}
loss_results = {}
for name, loss_fn in losses.items():
    torch.manual_seed(0)
    model = UNet(C, width=CFG["loss_width"])
    h = train(model, "loss_" + name.replace(" ", "").replace("+", "_").lower(), CFG["loss_epochs"], loss_fn, validate=False)
    r = evaluate(model, L.val, C, S.device, input_size=size, boundary=True, progress=False)
    loss_results[name] = dict(res=r, train_s=h.train_time_s)
print(f"U-Net width {CFG['loss_width']}, {CFG['loss_epochs']} epochs each, CamVid val at 360×480, profile {S.profile.name}\n")
print(f"{'loss':<13}{'mIoU':>7}{'pixel acc':>11}{'small-class IoU':>17}{'boundary F':>12}")
for name, d in loss_results.items():
    r = d["res"]
    print(f"{name:<13}{100 * r['miou']:>7.1f}{100 * r['pixel_acc']:>11.1f}{100 * r['iou'][small].nan_to_num(0).mean():>17.1f}{100 * r['mbf1']:>12.1f}")

# %%
ax = viz.bar_per_class({k: d["res"]["iou"].nan_to_num(0).tolist() for k, d in loss_results.items()}, classes, ylabel="val IoU")
ax.set_title("per-class IoU by loss (small classes: pole, sign, pedestrian, bicyclist)"); plt.show()

# %% [markdown]
# Read the table together with the figure: the plain CE model has the best pixel accuracy and the worst small-class IoU; re-weighting by class frequency or optimising Dice moves capacity to the small classes at some cost in pixel accuracy. With so few epochs the differences between the three remedies are within run-to-run noise; the gap to plain CE on the small classes is the robust finding.

# %% [markdown]
# ## 5. Results
#
# One table for notebook 05's CamVid models (validation and test at full resolution, void ignored), recorded on the course leaderboard (`cpu` and `gpu` runs only; see the README for all models so far).

# %%
rows = []
for name, model in camvid_models.items():
    val = evaluate(model, L.val, C, S.device, input_size=size, boundary=True, progress=False)
    test = evaluate(model, L.test, C, S.device, input_size=size, progress=False)
    rows.append((name, model, val, test, camvid_hist[name].train_time_s))
print(f"CamVid, profile {S.profile.name}, {leaderboard.device_name(S.device)}, trained at {size[0]}×{size[1]} for "
      f"{CFG['camvid_epochs']} epochs, scored at 360×480\n")
print(f"{'model':<40}{'params':>12}{'val mIoU':>10}{'val BF':>8}{'small IoU':>11}{'test mIoU':>11}{'train':>9}")
for name, model, val, test, t in rows:
    print(f"{name:<40}{count_parameters(model):>12,}{100 * val['miou']:>10.1f}{100 * val['mbf1']:>8.1f}"
          f"{100 * val['iou'][small].nan_to_num(0).mean():>11.1f}{100 * test['miou']:>11.1f}{t / 60:>7.1f} min")
    if S.profile.name != "smoke":
        leaderboard.record(dict(model=f"{name}, from scratch", notebook="05", params_m=count_parameters(model) / 1e6,
                                profile=S.profile.name, device=leaderboard.device_name(S.device),
                                train_size=f"{size[0]}x{size[1]}", train_s=t, val_miou=val["miou"], test_miou=test["miou"]))

# %%
raw_val = D.semantic_dataset("camvid", "val", S.profile)
idx = [12, 60] if len(L.val.dataset) > 60 else [0, 1]
preds = {}
for name, model, *_ in rows:
    model.eval()
    preds[name.split(" (")[0]] = [predict(model, L.val.dataset[i][0][None].to(S.device), input_size=size)[0].argmax(0).cpu() for i in idx]
viz.show_segmentation([raw_val[i][0] for i in idx], [raw_val[i][1] for i in idx], preds, palette, classes)
plt.show()
print(leaderboard.markdown_table((S.profile.name,)))

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** U-Net input padding. For `depth` poolings the input must be a multiple of 2^depth. Write `unet_padded_size(h, w, depth)` returning the padded (H, W) and check it against the model's own padding (`course_lib.models.pad_to_multiple`).

# %%
def unet_padded_size(h: int, w: int, depth: int = 4) -> tuple:
    raise NotImplementedError  # your code here

# %%
from course_lib.models import pad_to_multiple
check(unet_padded_size, [((h, w, d), tuple(pad_to_multiple(torch.zeros(1, 1, h, w), 2 ** d)[0].shape[-2:]))
                         for h, w, d in [(97, 131, 4), (360, 480, 4), (512, 512, 5), (7, 9, 1)]]);

# %% [markdown]
# **Exercise 2.** Dice by hand. Write `soft_dice(probs, onehot)` for tensors `[C, N]` (probabilities and one-hot targets over N pixels) returning the per-class soft Dice 2Σpg / (Σp + Σg) as `[C]`.

# %%
def soft_dice(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError  # your code here

# %%
p_ex = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.8, 0.5]])
g_ex = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
check(soft_dice, [((p_ex, g_ex), torch.tensor([2 * 1.4 / 3.6, 2 * 0.8 / 2.4])), ((g_ex, g_ex), torch.ones(2))]);

# %% [markdown]
# **Exercise 3 (open).** SegNet transfers only pooling *indices* from encoder to decoder; U-Net transfers whole feature maps. Measure the peak memory of a forward + backward pass of each at 360×480 (`torch.cuda.max_memory_allocated` on a GPU, or `tracemalloc`/`resource` on a CPU) and relate it to what each decoder has to keep.

# %% [markdown]
# ## Summary
#
# - U-Net: encoder–decoder with concatenated skips at every scale; pad to a multiple of 16 and crop to accept any size. With elastic deformations it learns membranes from 24 images.
# - SegNet: upsampling by max-unpooling with the encoder's indices, cheap in memory; without skip features it recovers less detail.
# - A stronger encoder (smp's ResNet-34 U-Net) helps even without pretraining, at several times the parameters.
# - Cross-entropy favours large classes; class weights, Dice or CE + Dice trade some pixel accuracy for the small classes.
#
# **Further reading**
# - O. Ronneberger, P. Fischer, T. Brox. *U-Net: convolutional networks for biomedical image segmentation.* MICCAI 2015.
# - V. Badrinarayanan, A. Kendall, R. Cipolla. *SegNet: a deep convolutional encoder-decoder architecture for image segmentation.* TPAMI 2017.
# - F. Milletari, N. Navab, S.-A. Ahmadi. *V-Net: fully convolutional neural networks for volumetric medical image segmentation.* 3DV 2016 (Dice loss).
# - C. Sudre et al. *Generalised Dice overlap as a deep learning loss function for highly unbalanced segmentations.* DLMIA 2017.
# - P. Iakubovskii. *Segmentation Models PyTorch* (GitHub), the production library used for comparison.
#
# <details><summary>Solutions</summary>
#
# ```python
# def unet_padded_size(h, w, depth=4):
#     m = 2 ** depth
#     return (-(-h // m) * m, -(-w // m) * m)
#
# def soft_dice(probs, onehot):
#     return 2 * (probs * onehot).sum(1) / (probs.sum(1) + onehot.sum(1))
# ```
# </details>

# %%
print(f"notebook ran in {time.perf_counter() - notebook_start:.1f} s (profile {S.profile.name}, device {S.device})")
