"""Layer re-initialisation of one off-the-shelf model (the hp_arrangements seed's `--pretrained`
re-initialisation): a registered architecture (tv_* for torchvision's) with weights from a local
file, evaluated on labelled images from a folder, one layer at a time reset to a fresh seeded
draw of the family's initialiser and to the weights of any further files (`--inits-from`).

The images are read in torchvision's ImageFolder layout (one sub-folder per class, class k the
k-th folder name in sorted order: ImageNet's synset folders then match the indices of
torchvision's pretrained heads) and preprocessed as those weights expect: the shorter side
resized to size x 256/224, a centre crop of size x size, ImageNet's mean and std. Images are
decoded by PIL: nothing in a folder or a weights file is executed.

Writes reinit.parquet (one row per layer and reset source, top-1 and top-5 accuracy) and
model.json (what was measured) into one folder, published whole.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from netgeom.errors import NetgeomError
from netgeom.io import atomic_write_json, atomic_write_parquet, building_dir
from netgeom.layout import Layout
from netgeom.models import create_model
from netgeom.stages.reinit import init_files
from netgeom.studies.reinit import reinit_sweep

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224  # torchvision's evaluation transform: resize to 256, crop 224


def default_folder(layout: Layout, arch: str, pretrained: Path) -> Path:
    return layout.model_study_dir("reinit", f"{arch}-file-{Path(pretrained).stem}")


def image_folder(folder: Path, size: int, samples: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(x, y, class names) of at most `samples` images of `folder` (a seeded subset in folder
    order), preprocessed for ImageNet weights at `size`; one line naming the file that fails."""
    from torchvision import datasets, transforms

    folder = Path(folder)
    if not folder.is_dir():
        raise NetgeomError("--images", f"no such folder: {folder}")
    preprocess = transforms.Compose([
        transforms.Resize(round(size * RESIZE_RATIO)), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    try:
        images = datasets.ImageFolder(str(folder), transform=preprocess)
    except (FileNotFoundError, OSError) as err:
        raise NetgeomError("--images", f"{folder}: {err} (expected one sub-folder of images per class)") from None
    chosen = torch.arange(len(images))
    if samples is not None and samples < len(images):
        chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:samples].sort().values
    xs, ys = [], []
    for index in chosen.tolist():
        path, label = images.samples[index]
        try:
            x, _ = images[index]
        except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
            raise NetgeomError("--images", f"cannot read {path} as an image ({type(err).__name__})") from None
        xs.append(x)
        ys.append(label)
    return torch.stack(xs), torch.tensor(ys), list(images.classes)


def model_reinit(
    arch: str,
    pretrained: Path,
    images: Path,
    out: Path,
    *,
    size: int = 224,
    num_classes: int = 1000,
    samples: int | None = 1000,
    seed: int = 0,
    layer_kinds: str = "conv_and_linear",
    inits_from: list[str] | None = None,
    batch_size: int = 64,
    options: dict | None = None,
) -> pd.DataFrame:
    """Re-initialise each layer of `arch` with `pretrained`'s weights, evaluate on `images`,
    write `out` and return the table (see `netgeom.studies.reinit.reinit_sweep` for its columns)."""
    if not Path(pretrained).is_file():
        raise NetgeomError("--pretrained", f"no such file: {pretrained}")
    x, y, classes = image_folder(images, size, samples, seed)
    if len(classes) > num_classes:
        raise NetgeomError("--classes", f"{images} has {len(classes)} class folders, more than the model's {num_classes} outputs")
    shape = (3, size, size)
    options = options or {}
    model = create_model(arch, shape, num_classes, **options, pretrained=str(pretrained)).eval()
    trained = {k: v.detach() for k, v in model.state_dict().items()}
    files = init_files(list(inits_from or []), Path.cwd(), torch.device("cpu"), key="--inits-from")
    table = reinit_sweep(
        model, trained, {}, x, y, make_model=lambda: create_model(arch, shape, num_classes, **options), rand_seed=seed,
        batch_size=batch_size, layer_kinds=layer_kinds, extra_sources=files,
    )
    out = Path(out)
    with building_dir(out, out.with_name(f".{out.name}.staging"), out.with_name(f".{out.name}.trash")) as staging:
        atomic_write_parquet(staging / "reinit.parquet", table)
        atomic_write_json(staging / "model.json", {
            "arch": arch, "weights": str(pretrained), "images": str(images), "classes": len(classes), "samples": len(y),
            "size": size, "num_classes": num_classes, "seed": seed, "layer_kinds": layer_kinds, "inits_from": sorted(files),
            "options": options,
        })
    return table
