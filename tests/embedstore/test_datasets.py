"""Dataset adapters: native layouts in, fixed-size relabelled tiles out (fixtures written in tmp_path)."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import tifffile
from PIL import Image

import embedstore.datasets.folder as folder_module
from embedstore.datasets import DatasetInfo, get_dataset, list_datasets
from embedstore.datasets.monuseg import rasterise, read_regions
from embedstore.datasets.pannuke import masks_to_maps
from embedstore.errors import EmbedstoreError

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------- helpers
def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def all_tiles(ds) -> list:
    return [ds.tile(i) for i in range(len(ds))]


def write_folder(root: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    """A `folder` dataset: png images and tif instance masks with the same stems."""
    for stem, image in images.items():
        save_png(root / "images" / f"{stem}.png", image)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for stem, label in labels.items():
        tifffile.imwrite(root / "labels" / f"{stem}.tif", label)
    return root


def pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distinct (a, b) value pairs over the pixels where ``a > 0``, as rows of a (n, 2) array."""
    fg = a > 0
    keys = np.unique(a[fg].astype(np.int64) << 32 | b[fg].astype(np.int64))
    return np.stack([keys >> 32, keys & 0xFFFFFFFF], axis=1)


def disk(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


# ----------------------------------------------------------------------------------------------- tiling
def test_folder_tiles_cover_the_image_with_overlapping_stride_and_report_origins(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 70, 3), dtype=np.uint8)
    label = np.zeros((100, 70), np.int32)
    label[40:60, 10:30] = 3
    ds = get_dataset("folder", write_folder(tmp_path, {"a": image}, {"a": label}), tile_size=64, stride=32)
    tiles = all_tiles(ds)
    assert [t.origin for t in tiles] == [(y, x) for y in (0, 32, 36) for x in (0, 6)]
    for t in tiles:
        y, x = t.origin
        assert np.array_equal(t.image, image[y : y + 64, x : x + 64])
        assert t.source == "a" and t.source_shape == (100, 70)
        assert t.sample_id == f"a_y{y:04d}_x{x:04d}"
    assert len({t.sample_id for t in tiles}) == len(tiles)


def test_image_smaller_than_the_tile_is_zero_padded_with_background(tmp_path: Path) -> None:
    image = np.full((40, 50, 3), 200, np.uint8)
    label = np.zeros((40, 50), np.int32)
    label[30:40, 40:50] = 5
    ds = get_dataset("folder", write_folder(tmp_path, {"small": image}, {"small": label}), tile_size=64)
    (t,) = all_tiles(ds)
    assert t.image.shape == (64, 64, 3) and t.instance.shape == (64, 64)
    assert t.sample_id == "small" and t.origin == (0, 0)
    assert np.all(t.image[:40, :50] == 200) and not t.image[40:].any() and not t.image[:, 50:].any()
    assert np.array_equal(t.instance[30:40, 40:50], np.ones((10, 10)))
    assert t.instance.sum() == 100


def test_tiles_of_one_source_decode_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = np.zeros((128, 128, 3), np.uint8)
    root = write_folder(tmp_path, {"big": image}, {"big": np.zeros((128, 128), np.int32)})
    ds = get_dataset("folder", root, tile_size=32)
    calls = []
    real = folder_module.read_image
    monkeypatch.setattr(folder_module, "read_image", lambda p: calls.append(p) or real(p))
    assert len(all_tiles(ds)) == 16
    assert len(calls) == 1


def test_dataset_pickles_and_still_reads_tiles(tmp_path: Path) -> None:
    ds = get_dataset("synthetic", n=3, stain="nissl")
    ds.tile(0)
    clone = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(clone.tile(2).image, ds.tile(2).image)


# ----------------------------------------------------------------------------------------------- folder
def test_folder_reads_class_maps_and_folds_csv(tmp_path: Path) -> None:
    shape = (32, 32)
    images = {s: np.full((*shape, 3), 90, np.uint8) for s in ("x1", "x2")}
    label = (disk(shape, (10, 10), 4) * 1 + disk(shape, (22, 22), 4) * 2).astype(np.int32)
    root = write_folder(tmp_path, images, {"x1": label, "x2": label})
    cls = np.where(label == 1, 2, np.where(label == 2, 1, 0)).astype(np.uint8)
    save_png(root / "classes" / "x1.png", cls)
    save_png(root / "classes" / "x2.png", cls)
    (root / "folds.csv").write_text("img_id,fold\nx1,2\nx2,1\n")
    ds = get_dataset("folder", root, tile_size=32, magnification="20x", classes="tumour, stroma")
    assert ds.info == DatasetInfo("folder", "20x", 0.5, ("tumour", "stroma"), f"local folder {root}")
    t1, t2 = all_tiles(ds)
    assert (t1.split, t2.split) == ("test", "val")
    assert np.array_equal(t1.cls, cls)
    assert t1.instance.max() == 2 and t1.group == "x1"


def test_folder_without_classes_gives_no_class_map_and_all_train(tmp_path: Path) -> None:
    root = write_folder(tmp_path, {"a": np.zeros((16, 16, 3), np.uint8)}, {"a": np.zeros((16, 16), np.int32)})
    (t,) = all_tiles(get_dataset("folder", root, tile_size=16, um_per_px=0.3))
    assert t.cls is None and t.split == "train"
    assert get_dataset("folder", root, tile_size=16, um_per_px=0.3).info.um_per_px == 0.3


def test_folder_reads_npy_images_and_hovernet_mat_labels_with_type_maps(tmp_path: Path) -> None:
    image = np.arange(16 * 16 * 3, dtype=np.float64).reshape(16, 16, 3) % 256
    inst = np.zeros((16, 16), np.int32)
    inst[2:6, 2:6] = 40
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    np.save(tmp_path / "images" / "p.npy", image)
    scipy.io.savemat(tmp_path / "labels" / "p.mat", {"inst_map": inst, "type_map": (inst > 0) * 3})
    (t,) = all_tiles(get_dataset("folder", tmp_path, tile_size=16, classes="a,b,c"))
    assert np.array_equal(t.image, image.astype(np.uint8))
    assert np.array_equal(t.cls, ((inst > 0) * 3).astype(np.uint8))
    assert t.instance.max() == 1


# ----------------------------------------------------------------------------------------------- pannuke
def write_pannuke(root: Path, tissues_per_fold: dict[int, list[str]], size: int = 32) -> Path:
    rng = np.random.default_rng(1)
    for fold, tissues in tissues_per_fold.items():
        n = len(tissues)
        images = rng.integers(0, 256, (n, size, size, 3)).astype(np.float64)
        masks = np.zeros((n, size, size, 6))
        masks[:, 2:8, 2:8, 0] = 5  # a neoplastic cell
        masks[:, 20:26, 20:26, 1] = 5  # an inflammatory cell with the same raw id
        masks[..., 5] = (masks[..., :5].sum(-1) == 0).astype(float)
        img_dir = root / f"Fold {fold}" / "images" / f"fold{fold}"
        mask_dir = root / f"Fold {fold}" / "masks" / f"fold{fold}"
        img_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        np.save(img_dir / "images.npy", images)
        np.save(img_dir / "types.npy", np.array(tissues))
        np.save(mask_dir / "masks.npy", masks)
    return root


def test_pannuke_masks_to_maps_gives_class_from_channel_and_later_channel_wins() -> None:
    masks = np.zeros((8, 8, 6))
    masks[0:4, 0:4, 0] = 3
    masks[2:6, 2:6, 4] = 3  # same raw id, class 5, overlapping the class-1 cell
    masks[6:8, 6:8, 2] = 9
    instance, cls = masks_to_maps(masks)
    assert cls[0, 0] == 1 and cls[3, 3] == 5 and cls[7, 7] == 3 and cls[5, 0] == 0
    assert instance[0, 0] != instance[3, 3]
    assert len(np.unique(instance[instance > 0])) == 3


def test_pannuke_folds_give_splits_tissue_groups_and_cisca_ids(tmp_path: Path) -> None:
    root = write_pannuke(tmp_path, {1: ["Breast", "Colon"], 2: ["Adrenal_gland"], 3: ["Bile-duct", "Breast"]})
    ds = get_dataset("pannuke", root, tile_size=32)
    tiles = all_tiles(ds)
    assert [t.sample_id for t in tiles] == [
        "pannuke_breast_fold1_0", "pannuke_colon_fold1_1", "pannuke_adrenal_gland_fold2_0",
        "pannuke_bile-duct_fold3_0", "pannuke_breast_fold3_1",
    ]
    assert [t.split for t in tiles] == ["train", "train", "val", "test", "test"]
    assert [t.group for t in tiles] == ["Breast", "Colon", "Adrenal_gland", "Bile-duct", "Breast"]
    raw = np.load(root / "Fold 1" / "images" / "fold1" / "images.npy")
    assert tiles[0].image.dtype == np.uint8 and np.array_equal(tiles[0].image, raw[0].astype(np.uint8))
    assert tiles[0].instance.max() == 2
    assert tiles[0].cls[4, 4] == 1 and tiles[0].cls[22, 22] == 2
    assert ds.info.classes == ("Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial")


def test_pannuke_split_folds_option_leaves_out_unlisted_folds(tmp_path: Path) -> None:
    root = write_pannuke(tmp_path, {1: ["Breast"], 2: ["Colon", "Colon"]})  # no fold 3 on disk
    ds = get_dataset("pannuke", root, tile_size=32, split_folds="2:train,1:test")
    assert [(t.sample_id, t.split) for t in all_tiles(ds)] == [
        ("pannuke_breast_fold1_0", "test"), ("pannuke_colon_fold2_0", "train"), ("pannuke_colon_fold2_1", "train")
    ]


def test_pannuke_split_csv_assigns_the_pooled_split_and_ignores_repeated_rows(tmp_path: Path) -> None:
    root = write_pannuke(tmp_path, {1: ["Breast"], 2: ["Colon"], 3: ["Skin"]})
    csv = tmp_path / "folds.csv"
    csv.write_text("img_id,fold\npannuke_skin_fold3_0,0\npannuke_skin_fold3_0,0\npannuke_breast_fold1_0,2\n"
                   "pannuke_colon_fold2_0,1\n")
    ds = get_dataset("pannuke", root, tile_size=32, split_csv=str(csv))
    assert {t.sample_id: t.split for t in all_tiles(ds)} == {
        "pannuke_breast_fold1_0": "test", "pannuke_colon_fold2_0": "val", "pannuke_skin_fold3_0": "train"
    }


def test_pannuke_split_csv_with_an_unknown_id_names_the_table(tmp_path: Path) -> None:
    root = write_pannuke(tmp_path, {1: ["Breast"], 2: ["Colon"], 3: ["Skin"]})
    csv = tmp_path / "folds.csv"
    csv.write_text("img_id,fold\npannuke_breast_1_0,0\npannuke_breast_fold1_0,0\npannuke_colon_fold2_0,1\n"
                   "pannuke_skin_fold3_0,2\n")
    with pytest.raises(EmbedstoreError, match=r"folds\.csv.*pannuke_breast_1_0"):
        get_dataset("pannuke", root, split_csv=str(csv))


# ----------------------------------------------------------------------------------------------- conic
def write_conic(root: Path, names: list[str], size: int = 16) -> Path:
    n = len(names)
    rng = np.random.default_rng(2)
    labels = np.zeros((n, size, size, 2), np.int32)
    labels[:, 2:6, 2:6] = (4, 6)
    labels[:, 9:13, 9:13] = (9, 3)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "images.npy", rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    np.save(root / "labels.npy", labels)
    (root / "patch_info.csv").write_text("patch_info\n" + "\n".join(names) + "\n")
    return root


CONIC_NAMES = [f"{cohort}_{image}-{patch:04d}" for cohort in ("crag", "dpath", "glas") for image in range(1, 11)
               for patch in range(2)]


def test_conic_splits_by_source_image_within_each_cohort(tmp_path: Path) -> None:
    ds = get_dataset("conic", write_conic(tmp_path, CONIC_NAMES), tile_size=16, val_fraction=0.1, test_fraction=0.2)
    tiles = all_tiles(ds)
    split_of_group: dict[str, set[str]] = {}
    for t in tiles:
        split_of_group.setdefault(t.group, set()).add(t.split)
        assert t.group == t.sample_id.split("-")[0]
    assert all(len(s) == 1 for s in split_of_group.values())
    for cohort in ("crag", "dpath", "glas"):
        splits = [next(iter(s)) for g, s in split_of_group.items() if g.startswith(cohort)]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (7, 1, 2)


def test_conic_split_is_reproducible_for_a_seed_and_changes_with_it(tmp_path: Path) -> None:
    root = write_conic(tmp_path, CONIC_NAMES)

    def splits(seed: int) -> list[str]:
        return [t.split for t in all_tiles(get_dataset("conic", root, tile_size=16, seed=seed))]

    assert splits(3) == splits(3)
    assert splits(3) != splits(4)


def test_conic_tiles_carry_instance_and_class_labels(tmp_path: Path) -> None:
    ds = get_dataset("conic", write_conic(tmp_path, CONIC_NAMES[:2]), tile_size=16)
    t = ds.tile(1)
    assert t.sample_id == "crag_1-0001" and t.source_shape == (16, 16)
    assert t.instance.max() == 2 and t.cls[3, 3] == 6 and t.cls[10, 10] == 3 and t.cls[0, 0] == 0
    assert ds.info.magnification == "20x" and len(ds.info.classes) == 6


# ----------------------------------------------------------------------------------------------- cytodark0
def write_cytodark0(root: Path, real_data: Path) -> Path:
    """The real CytoDArk0 sample converted to the Zenodo layout (png image, tiff label) as a 256x256 folder."""
    folder = root / "cytoDArk0" / "20x" / "256x256"
    image = np.load(real_data / "cytodark0" / "img_cyto_boss.npy")
    label = np.asarray(Image.open(real_data / "cytodark0" / "ID14_Aud_Cortex_Tursiops_14_masks.png"))
    save_png(folder / "image" / "ID14_Aud_Cortex_Tursiops_14.png", image)
    (folder / "label").mkdir()
    tifffile.imwrite(folder / "label" / "ID14_Aud_Cortex_Tursiops_14.tiff", label.astype(np.uint16))
    (folder / "folds.csv").write_text("img_id,fold\nID14_Aud_Cortex_Tursiops_14,2\n")
    return root


def test_cytodark0_reads_the_real_sample_in_zenodo_layout_with_its_28_cells(tmp_path: Path, real_data: Path) -> None:
    label = np.asarray(Image.open(real_data / "cytodark0" / "ID14_Aud_Cortex_Tursiops_14_masks.png"))
    expected = len(np.unique(label)) - 1
    ds = get_dataset("cytodark0", write_cytodark0(tmp_path, real_data), raw_size=256)
    (t,) = all_tiles(ds)
    assert expected == 28 and t.instance.max() == expected
    assert np.array_equal(t.instance > 0, label > 0)
    assert (t.split, t.group, t.cls) == ("test", "Auditory Cortex", None)
    assert ds.info.um_per_px == 0.548 and ds.info.classes == ()


def test_cytodark0_tiles_full_size_images_and_groups_by_brain_area(tmp_path: Path) -> None:
    folder = tmp_path / "40x" / "2048x2048"
    label = np.zeros((96, 64), np.uint16)
    label[10:20, 10:20] = 1
    for stem in ("ID55_Cerebellum_Chimpanzee", "ID3_Aud_Cortex_Tursiops"):
        save_png(folder / "image" / f"{stem}.png", np.zeros((96, 64, 3), np.uint8))
        (folder / "label").mkdir(exist_ok=True)
        tifffile.imwrite(folder / "label" / f"{stem}.tiff", label)
    (folder / "folds.csv").write_text("img_id,fold\nID55_Cerebellum_Chimpanzee,1\nID3_Aud_Cortex_Tursiops,0\n")
    ds = get_dataset("cytodark0", tmp_path, tile_size=32, magnification="40x")
    tiles = all_tiles(ds)
    assert len(tiles) == 2 * 3 * 2
    assert [t.source for t in tiles[:6]] == ["ID3_Aud_Cortex_Tursiops"] * 6  # natural order: ID3 before ID55
    assert {(t.source, t.group, t.split) for t in tiles} == {
        ("ID3_Aud_Cortex_Tursiops", "Auditory Cortex", "train"), ("ID55_Cerebellum_Chimpanzee", "Cerebellum", "val")
    }
    assert ds.info.magnification == "40x" and ds.info.um_per_px == 0.274


def test_folder_reads_the_real_cytodark0_sample_through_links(tmp_path: Path, real_data: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "images" / "ID14.npy").symlink_to(real_data / "cytodark0" / "img_cyto_boss.npy")
    (tmp_path / "labels" / "ID14.png").symlink_to(real_data / "cytodark0" / "ID14_Aud_Cortex_Tursiops_14_masks.png")
    (t,) = all_tiles(get_dataset("folder", tmp_path, magnification="20x", um_per_px=0.548))
    assert t.instance.max() == 28
    assert np.array_equal(t.image, np.load(real_data / "cytodark0" / "img_cyto_boss.npy"))


# ----------------------------------------------------------------------------------------------- consep
def write_consep(root: Path) -> Path:
    inst = np.zeros((40, 40), np.int32)
    types = np.zeros((40, 40), np.int32)
    for k, t in enumerate(range(1, 8), start=1):  # one nucleus of each original type 1..7
        inst[2:5, 5 * k - 4 : 5 * k - 1] = k
        types[2:5, 5 * k - 4 : 5 * k - 1] = t
    for part, stems in (("Train", ("train_1", "train_2", "train_10")), ("Test", ("test_1",))):
        for stem in stems:
            rgba = np.zeros((40, 40, 4), np.uint8)
            rgba[..., 3] = 255
            save_png(root / part / "Images" / f"{stem}.png", rgba)
            (root / part / "Labels").mkdir(exist_ok=True)
            scipy.io.savemat(root / part / "Labels" / f"{stem}.mat", {"inst_map": inst, "type_map": types})
    return root


def test_consep_merges_types_as_hovernet_and_splits_train_val_test(tmp_path: Path) -> None:
    ds = get_dataset("consep", write_consep(tmp_path), tile_size=40, val_images="train_10")
    tiles = all_tiles(ds)
    assert [(t.source, t.split) for t in tiles] == [
        ("train_1", "train"), ("train_2", "train"), ("train_10", "val"), ("test_1", "test")
    ]
    t = tiles[0]
    assert t.image.shape == (40, 40, 3)
    merged = [int(t.cls[3, 5 * k - 3]) for k in range(1, 8)]
    assert merged == [1, 2, 3, 3, 4, 4, 4]
    assert ds.info.classes == ("Other", "Inflammatory", "Epithelial", "Spindle")


def test_consep_val_images_naming_no_training_image_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError, match="train_99"):
        get_dataset("consep", write_consep(tmp_path), val_images=["train_1", "train_99"])


def consep_table(real_data: Path) -> dict[str, tuple[int, int]]:
    """image -> (nuclei, instances summed over its 16 crops), from the per-image table of SOURCE.md."""
    text = (real_data / "consep" / "SOURCE.md").read_text()
    rows = re.findall(r"^\| (t\w+_\d+) \| \w+ \| ([\d,]+) \|.*\| ([\d,]+) \|$", text, re.M)
    return {name: (int(n.replace(",", "")), int(c.replace(",", ""))) for name, n, c in rows}


@pytest.mark.parametrize("images", [4, pytest.param(37, marks=pytest.mark.slow)])
def test_real_consep_tiles_cover_every_nucleus_of_every_image(real_data: Path, images: int) -> None:
    """Stride == size: the union of source ids under each image's tiles is all its nuclei (SOURCE.md table),
    the 16 tiles sit on HoVer-Net's crop grid (per-crop id counts match), and every tile instance is one nucleus."""
    table = consep_table(real_data)
    assert len(table) == 37
    ds = get_dataset("consep", real_data / "consep", merge_types=False)
    assert len(ds) == 37 * 16
    seen: dict[str, set[int]] = {}
    per_crop: dict[str, int] = {}
    raw: dict[str, np.ndarray] = {}
    for t in map(ds.tile, range(16 * images)):  # 16 tiles per 1000x1000 image, image by image
        if t.source not in raw:
            part = "Test" if t.source.startswith("test") else "Train"
            raw[t.source] = scipy.io.loadmat(real_data / "consep" / part / "Labels" / f"{t.source}.mat")["inst_map"]
        y, x = t.origin
        window = raw[t.source][y : y + 256, x : x + 256]
        assert len(pairs(t.instance, window)) == t.instance.max()  # each tile instance lies in one nucleus
        ids = set(np.unique(window[t.instance > 0]).tolist())
        seen.setdefault(t.source, set()).update(ids)
        per_crop[t.source] = per_crop.get(t.source, 0) + len(ids)
    assert len(seen) == images
    assert {name: (len(ids), per_crop[name]) for name, ids in seen.items()} == {n: table[n] for n in seen}
    assert {name: len(np.unique(inst)) - 1 for name, inst in raw.items()} == {n: table[n][0] for n in seen}


def test_real_consep_class_maps_hold_the_four_merged_classes(real_data: Path) -> None:
    ds = get_dataset("consep", real_data / "consep", merge_types=False, tile_size=1000)
    t = ds.tile(0)  # train_1: other 9, inflammatory 95, epithelial 287, spindle 459
    counts = [len(np.unique(t.instance[t.cls == c])) for c in range(1, 5)]
    assert (t.source, counts) == ("train_1", [9, 95, 287, 459])


# ----------------------------------------------------------------------------------------------- monuseg
XML_HEAD = '<Annotations MicronsPerPixel="0.25"><Annotation Id="1"><Regions>'
XML_TAIL = "</Regions></Annotation></Annotations>"


def region_xml(points: list[tuple[float, float]]) -> str:
    vertices = "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in points)
    return f'<Region Id="1"><Attributes/><Vertices>{vertices}</Vertices></Region>'


def test_monuseg_rasterises_polygons_with_later_regions_on_top(tmp_path: Path) -> None:
    square = [(2, 2), (12, 2), (12, 12), (2, 12)]  # x, y
    bar = [(6, 0), (8, 0), (8, 20), (6, 20)]  # cuts the square in two
    far = [(30, 30), (36, 30), (36, 36), (30, 36)]
    (tmp_path / "img.xml").write_text(XML_HEAD + "".join(region_xml(p) for p in (square, bar, far)) + XML_TAIL)
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((40, 40, 3), np.uint8))
    regions = read_regions(tmp_path / "img.xml")
    raw = rasterise(regions, (40, 40))
    assert len(regions) == 3 and raw[4, 4] == 1 and raw[4, 7] == 2 and raw[33, 33] == 3
    (t,) = all_tiles(get_dataset("monuseg", tmp_path, tile_size=40))
    assert t.instance.max() == 4  # the square's two sides of the bar are separate pieces
    assert (t.split, t.cls, t.group) == ("test", None, "img")


@pytest.mark.parametrize("images", [2, pytest.param(10, marks=pytest.mark.slow)])
def test_real_monuseg_tiles_cover_every_annotated_region(real_data: Path, images: int) -> None:
    """Expected count = number of <Region> elements in the XML text; each tile instance lies in one region."""
    ds = get_dataset("monuseg", real_data / "monuseg", split="train")
    assert len(ds) == 10 * 16
    seen: dict[str, set[int]] = {}
    raw: dict[str, np.ndarray] = {}
    for t in map(ds.tile, range(16 * images)):
        if t.source not in raw:
            raw[t.source] = rasterise(read_regions(real_data / "monuseg" / f"{t.source}.xml"), t.source_shape)
        y, x = t.origin
        window = raw[t.source][y : y + 256, x : x + 256]
        assert len(pairs(t.instance, window)) == t.instance.max()
        seen.setdefault(t.source, set()).update(np.unique(window[t.instance > 0]).tolist())
        assert t.split == "train"
    expected = {p.stem: len(re.findall(r"<Region ", p.read_text())) for p in (real_data / "monuseg").glob("*.xml")}
    assert len(seen) == images
    assert {name: len(ids) for name, ids in seen.items()} == {n: expected[n] for n in seen}



def test_real_monuseg_val_images_holds_the_named_image_out_as_val(real_data: Path) -> None:
    root = real_data / "monuseg"
    held = sorted(p.stem for p in root.glob("*.xml"))[1]
    ds = get_dataset("monuseg", root, split="train", val_images=held)
    splits = {s.id: s.split for s in ds.sources}
    assert splits.pop(held) == "val"
    assert len(splits) == 9 and set(splits.values()) == {"train"}
    tiles = [ds.tile(i) for i in range(16, 33)]  # image 1's 16 tiles and the first of image 2
    assert [(t.source, t.split) for t in tiles[:16]] == [(held, "val")] * 16
    assert tiles[16].split == "train" and all(t.instance.max() > 0 for t in tiles)


def test_real_monuseg_test_images_give_train_val_test_from_one_folder(real_data: Path) -> None:
    root = real_data / "monuseg"
    stems = sorted(p.stem for p in root.glob("*.xml"))
    ds = get_dataset("monuseg", root, split="train", val_images=stems[0], test_images=f"{stems[1]}, {stems[2]}")
    splits = {s.id: s.split for s in ds.sources}
    assert [splits.pop(s) for s in stems[:3]] == ["val", "test", "test"]
    assert set(splits.values()) == {"train"} and len(splits) == len(stems) - 3


def test_monuseg_an_image_in_val_and_test_is_an_error(real_data: Path) -> None:
    stem = sorted(p.stem for p in (real_data / "monuseg").glob("*.xml"))[0]
    with pytest.raises(EmbedstoreError, match="both name"):
        get_dataset("monuseg", real_data / "monuseg", split="train", val_images=stem, test_images=stem)


def test_monuseg_val_images_naming_no_image_is_an_error(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((40, 40, 3), np.uint8))
    (tmp_path / "img.xml").write_text(XML_HEAD + XML_TAIL)
    with pytest.raises(EmbedstoreError, match="TCGA-none"):
        get_dataset("monuseg", tmp_path, tile_size=40, val_images="img,TCGA-none")

# ----------------------------------------------------------------------------------------------- folder on real samples
def test_real_nucls_loads_through_folder_with_pickled_label_dicts(real_data: Path) -> None:
    root = real_data / "nucls" / "test"
    raw = [np.load(p, allow_pickle=True).item() for p in sorted((root / "labels").glob("*.npy"))]
    expected = [len(np.unique(r["inst_map"])) - 1 for r in raw]
    ds = get_dataset("folder", root, classes="Non-Tumor,Tumor", allow_pickle=True)
    tiles = all_tiles(ds)
    assert sum(expected) == 182
    assert sorted(t.instance.max() for t in tiles) == sorted(expected)
    per_class = [sum(len(np.unique(t.instance[t.cls == c])) for t in tiles) for c in (1, 2)]
    assert per_class == [97, 85]


def test_real_pannuke_like_patches_load_through_folder_with_mat_labels(tmp_path: Path, real_data: Path) -> None:
    src = real_data / "pannuke_like_cellseg_models"
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for k in (1, 2, 3):
        (tmp_path / "images" / f"patch{k}.png").symlink_to(src / "imgs" / f"patch{k}.png")
        (tmp_path / "labels" / f"patch{k}.mat").symlink_to(src / "masks" / f"patch{k}.mat")
    expected = [len(np.unique(scipy.io.loadmat(src / "masks" / f"patch{k}.mat")["inst_map"])) - 1 for k in (1, 2, 3)]
    ds = get_dataset("folder", tmp_path, classes="Neoplastic,Inflammatory,Connective,Dead,Epithelial")
    assert expected == [20, 47, 58]
    assert [ds.tile(i).instance.max() for i in range(3)] == expected


# ----------------------------------------------------------------------------------------------- synthetic
def test_synthetic_same_options_give_bit_identical_tiles() -> None:
    a = get_dataset("synthetic", n=4, seed=7)
    b = get_dataset("synthetic", n=4, seed=7)
    for i in (3, 0):  # access order does not matter
        ta, tb = a.tile(i), b.tile(i)
        assert np.array_equal(ta.image, tb.image) and np.array_equal(ta.instance, tb.instance)
        assert np.array_equal(ta.cls, tb.cls)
    assert not np.array_equal(get_dataset("synthetic", n=1, seed=8).tile(0).image, a.tile(0).image)


def touching_pairs(instance: np.ndarray) -> int:
    """Number of 4-neighbour pixel pairs that belong to two different cells."""
    a, b = instance[:, :-1], instance[:, 1:]
    c, d = instance[:-1, :], instance[1:, :]
    return int(((a > 0) & (b > 0) & (a != b)).sum() + ((c > 0) & (d > 0) & (c != d)).sum())


def test_synthetic_he_has_touching_cells_all_classes_and_a_60_20_20_split() -> None:
    ds = get_dataset("synthetic", n=10)
    tiles = all_tiles(ds)
    assert sum(touching_pairs(t.instance) > 0 for t in tiles) >= 5
    assert set(np.unique(np.concatenate([t.cls.ravel() for t in tiles]))) == {0, 1, 2, 3}
    assert [t.split for t in tiles].count("train") == 6 and [t.split for t in tiles].count("test") == 2
    for t in tiles:  # classes are per cell, and only on cells
        assert np.array_equal(t.cls > 0, t.instance > 0)
        assert len(pairs(t.instance, t.cls)) == t.instance.max()


def test_synthetic_cells_are_darker_than_the_background() -> None:
    for stain in ("he", "nissl"):
        t = get_dataset("synthetic", n=1, stain=stain).tile(0)
        grey = t.image.mean(axis=2)
        assert grey[t.instance > 0].mean() < grey[t.instance == 0].mean() - 60


def test_synthetic_nissl_has_no_classes_and_touching_cells() -> None:
    ds = get_dataset("synthetic", n=6, stain="nissl")
    tiles = all_tiles(ds)
    assert ds.info.classes == () and ds.info.magnification == "20x"
    assert all(t.cls is None for t in tiles)
    assert sum(touching_pairs(t.instance) > 0 for t in tiles) >= 3


def test_synthetic_image_size_makes_sources_larger_than_tiles() -> None:
    ds = get_dataset("synthetic", n=2, image_size=96, tile_size=64, stride=32)
    assert len(ds) == 2 * 2 * 2
    assert {t.source_shape for t in all_tiles(ds)} == {(96, 96)}


def test_demo_settings_file_builds_the_synthetic_dataset() -> None:
    settings = json.loads((ROOT / "data" / "synthetic.json").read_text())
    ds = get_dataset(settings["dataset"], tile_size=settings["tile_size"], **settings["options"])
    assert len(ds) == settings["options"]["n"] and ds.info.name == "synthetic"


# ----------------------------------------------------------------------------------------------- registry
def test_list_datasets_describes_every_adapter_with_its_options() -> None:
    rows = dict(list_datasets())
    assert set(rows) == {"pannuke", "conic", "cytodark0", "consep", "monuseg", "folder", "synthetic"}
    assert "split_csv=None" in rows["pannuke"] and "stain='he'" in rows["synthetic"]


def test_string_options_are_converted_to_the_option_types() -> None:
    ds = get_dataset("synthetic", tile_size="32", n="2", seed="1", stain="nissl")
    assert len(ds) == 2 and ds.tile(0).image.shape == (32, 32, 3)


def test_info_to_dict_is_json_able() -> None:
    info = get_dataset("synthetic", n=1).info
    assert json.loads(json.dumps(info.to_dict())) == {
        "name": "synthetic", "magnification": "40x", "um_per_px": 0.25,
        "classes": ["Epithelial", "Inflammatory", "Connective"], "source": info.source,
    }


# ----------------------------------------------------------------------------------------------- errors
def test_unknown_dataset_name_lists_the_valid_ones() -> None:
    with pytest.raises(EmbedstoreError, match="no-such.*pannuke.*synthetic"):
        get_dataset("no-such")


def test_unknown_option_is_named_with_the_valid_ones() -> None:
    with pytest.raises(EmbedstoreError, match="'colour'.*n, seed, stain, image_size"):
        get_dataset("synthetic", colour="red")


def test_option_of_the_wrong_type_is_named() -> None:
    with pytest.raises(EmbedstoreError, match="n='many'"):
        get_dataset("synthetic", n="many")


def test_stride_larger_than_the_tile_is_refused() -> None:
    with pytest.raises(EmbedstoreError, match="stride"):
        get_dataset("synthetic", n=1, tile_size=32, stride=40)


def test_missing_data_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(EmbedstoreError, match=str(tmp_path / "nowhere")):
        get_dataset("consep", tmp_path / "nowhere")


def test_missing_expected_file_is_named(tmp_path: Path) -> None:
    root = write_pannuke(tmp_path, {1: ["Breast"], 2: ["Colon"], 3: ["Skin"]})
    (root / "Fold 2" / "masks" / "fold2" / "masks.npy").unlink()
    with pytest.raises(EmbedstoreError, match=re.escape(str(root / "Fold 2" / "masks" / "fold2" / "masks.npy"))):
        get_dataset("pannuke", root)


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    labels = {"ok": np.zeros((8, 8), np.int32), "bad": np.zeros((8, 8), np.int32)}
    root = write_folder(tmp_path, {"ok": np.zeros((8, 8, 3), np.uint8)}, labels)
    (root / "images" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(EmbedstoreError, match=re.escape(str(root / "images" / "bad.png"))):
        get_dataset("folder", root)


def test_truncated_image_is_named_when_its_tile_is_read(tmp_path: Path) -> None:
    root = write_folder(tmp_path, {"a": np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)},
                        {"a": np.zeros((64, 64), np.int32)})
    data = (root / "images" / "a.png").read_bytes()
    (root / "images" / "a.png").write_bytes(data[: len(data) // 2])
    ds = get_dataset("folder", root, tile_size=64)
    with pytest.raises(EmbedstoreError, match=re.escape(str(root / "images" / "a.png"))):
        ds.tile(0)


def test_image_and_label_size_mismatch_names_the_sample(tmp_path: Path) -> None:
    root = write_folder(tmp_path, {"odd": np.zeros((20, 20, 3), np.uint8)}, {"odd": np.zeros((20, 24), np.int32)})
    ds = get_dataset("folder", root, tile_size=20)
    label = re.escape(str(root / "labels" / "odd.tif"))
    with pytest.raises(EmbedstoreError, match=label + r".*\(20, 20\).*\(20, 24\)"):
        ds.tile(0)


def test_pickled_label_without_allow_pickle_is_refused_with_a_hint(real_data: Path) -> None:
    ds = get_dataset("folder", real_data / "nucls" / "test")
    with pytest.raises(EmbedstoreError, match="test_1.npy.*allow_pickle=True"):
        ds.tile(0)


def test_image_without_a_label_is_named(tmp_path: Path) -> None:
    root = write_folder(tmp_path, {"lonely": np.zeros((8, 8, 3), np.uint8)}, {})
    with pytest.raises(EmbedstoreError, match="lonely"):
        get_dataset("folder", root)


def test_class_id_beyond_the_named_classes_is_refused(tmp_path: Path) -> None:
    root = write_folder(tmp_path, {"a": np.zeros((8, 8, 3), np.uint8)}, {"a": np.ones((8, 8), np.int32)})
    save_png(root / "classes" / "a.png", np.full((8, 8), 3, np.uint8))
    with pytest.raises(EmbedstoreError, match="class id 3"):
        get_dataset("folder", root, tile_size=8, classes="x,y").tile(0)
