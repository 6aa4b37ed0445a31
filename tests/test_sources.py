"""The format readers (PNG, full-size TIFF, HPAv18 JPEG) on real files and on TIFFs written here."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from hpa_jax.data import kaggle, sources
from hpa_jax.data.sources import read_sample
from hpa_jax.errors import ConfigError, DataError

COLORS = ("red", "green", "blue", "yellow")


def test_png_path_is_the_kaggle_reader(shared_data):
    folder = shared_data / "hpa_kaggle_sample" / "train"
    ids = list(sources.scan_folder(folder, "png")[0])
    assert len(ids) == 101
    for image_id in ids:
        image = read_sample(folder, image_id, fmt="png")
        assert image.shape == (512, 512, 4) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, kaggle.read_image(folder, image_id))
    for image_id in ids[:3]:
        np.testing.assert_array_equal(read_sample(folder, image_id, size=200, resample="lanczos"),
                                      kaggle.read_image(folder, image_id, size=200))


def _png_stack(folder, image_id):
    return np.stack([np.asarray(Image.open(folder / f"{image_id}_{c}.png")) for c in COLORS], axis=-1)


def test_hpav18_jpegs_match_the_shared_512_conversion(shared_data):
    root = shared_data / "hpav18_sample"
    ids = list(sources.scan_folder(root / "raw_jpg", "jpg")[0])
    assert len(ids) == 8
    diffs = []
    for image_id in ids:
        reference = _png_stack(root / "train", image_id)
        # The conversion's own resize (bilinear): the plane rules reproduce it bit for bit,
        # including floor((R + G) / 2) for yellow.
        exact = read_sample(root / "raw_jpg", image_id, fmt="jpg", size=512, resample="bilinear")
        np.testing.assert_array_equal(exact, reference)
        # Lanczos (the PNGs' filter before OpenCV's rules): the same images up to the filter.
        default = read_sample(root / "raw_jpg", image_id, fmt="jpg", size=512, resample="lanczos")
        diffs.append(np.abs(default.astype(np.int16) - reference).reshape(-1, 4).mean(0))
    # Measured: 1.18, 0.86, 0.35, 0.91 grey levels (R, G, B, Y) on average, at most 1.81 on one image.
    assert np.max(diffs) < 2.5 and np.mean(diffs) < 1.2, diffs
    # The other yellow rules are measurably different from the conversion.
    image_id = ids[-1]
    reference = _png_stack(root / "train", image_id)[..., 3].astype(np.int16)
    for rule in ("red", "green"):
        yellow = read_sample(root / "raw_jpg", image_id, fmt="jpg", size=512, resample="bilinear", yellow=rule)[..., 3]
        assert np.abs(yellow - reference).mean() > 0.2


def test_jpeg_plane_rules_on_a_written_file(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 101, 30
    for color in COLORS:
        Image.fromarray(rgb).save(tmp_path / f"a_{color}.jpg", quality=100)
    decoded = np.asarray(Image.open(tmp_path / "a_red.jpg")).astype(np.int32)
    image = read_sample(tmp_path, "a", fmt="jpg")
    np.testing.assert_array_equal(image[..., 0], decoded[..., 0])
    np.testing.assert_array_equal(image[..., 1], decoded[..., 1])
    np.testing.assert_array_equal(image[..., 2], decoded[..., 2])
    np.testing.assert_array_equal(image[..., 3], (decoded[..., 0] + decoded[..., 1]) // 2)
    np.testing.assert_array_equal(read_sample(tmp_path, "a", fmt="jpg", yellow="green")[..., 3], decoded[..., 1])
    Image.fromarray(np.full((8, 8), 77, np.uint8)).save(tmp_path / "a_blue.jpg")  # grayscale JPEG: as is
    assert (read_sample(tmp_path, "a", fmt="jpg")[..., 2] == np.asarray(Image.open(tmp_path / "a_blue.jpg"))).all()


def _smooth(size, scale, offset):
    """A smooth plane: a ramp plus a slow sinusoid, within [offset, offset + scale]."""
    y, x = np.mgrid[0:size, 0:size] / size
    return offset + scale * (0.5 * x + 0.3 * y + 0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * (x + 2 * y))))


def _block_mean(plane, factor):
    h, w = plane.shape
    return plane.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _write_tifs(folder, image_id, planes):
    for color, plane in zip(COLORS, planes):
        tifffile.imwrite(folder / f"{image_id}_{color}.tif", plane)


def test_16bit_tif_linear_rule_and_resize(tmp_path):
    size = 2048
    # Distinct planes per channel, so the order R, G, B, Y is checked too.
    planes = [_smooth(size, 60000, 1000 * c).round().astype(np.uint16) for c in range(3)]
    planes.append(np.full((size, size), 120 * 257, np.uint16))  # 8-bit 120 saved as 16-bit
    _write_tifs(tmp_path, "t16", planes)

    full = read_sample(tmp_path, "t16", fmt="tif")
    assert full.shape == (size, size, 4) and full.dtype == np.uint8
    for c in range(4):  # the documented rule: round(x / 257), 0..65535 -> 0..255
        np.testing.assert_array_equal(full[..., c], np.rint(planes[c] / 257.0).astype(np.uint8))
    assert (full[..., 3] == 120).all()

    for resample in ("box", "lanczos"):
        small = read_sample(tmp_path, "t16", fmt="tif", size=512, resample=resample)
        assert small.shape == (512, 512, 4)
        assert (small[..., 3] == 120).all()  # a constant stays that constant
        for c in range(3):
            expected = _block_mean(planes[c].astype(np.float64), 4) / 257.0
            err = np.abs(small[..., c] - expected)
            # box is area averaging: the block mean, rounded; Lanczos on a smooth image agrees
            # away from the border (where it extrapolates)
            assert err.max() <= (0.51 if resample == "box" else 1.0), (resample, c, err.max())

    stretched = read_sample(tmp_path, "t16", fmt="tif", depth16="percentile")[..., 0]
    low, high = np.percentile(planes[0], (0.1, 99.9))
    expected = np.clip(np.rint((planes[0] - low) * 255.0 / (high - low)), 0, 255)
    np.testing.assert_array_equal(stretched, expected)
    assert (stretched == 0).mean() == pytest.approx(0.001, abs=5e-4)


def test_8bit_tif_is_read_like_a_png(tmp_path):
    size = 2048
    planes = [_smooth(size, 200, 10 * c).round().astype(np.uint8) for c in range(4)]
    _write_tifs(tmp_path, "t8", planes)
    np.testing.assert_array_equal(read_sample(tmp_path, "t8", fmt="tif"), np.stack(planes, -1))
    small = read_sample(tmp_path, "t8", fmt="tif", size=512, resample="box")
    for c in range(4):  # PIL's 8-bit filters use fixed-point weights: within one grey level
        assert np.abs(small[..., c] - _block_mean(planes[c].astype(np.float64), 4)).max() <= 1.0
    # Also an (H, W, 1) TIFF is a grayscale plane.
    tifffile.imwrite(tmp_path / "t8_blue.tif", planes[2][..., None], photometric="minisblack")
    np.testing.assert_array_equal(read_sample(tmp_path, "t8", fmt="tif")[..., 2], planes[2])


def test_bad_tifs_are_named(tmp_path):
    plane = np.zeros((32, 32), np.uint16)
    _write_tifs(tmp_path, "ok", [plane] * 4)
    assert read_sample(tmp_path, "ok", fmt="tif", size=16).shape == (16, 16, 4)

    _write_tifs(tmp_path, "miss", [plane] * 4)
    (tmp_path / "miss_yellow.tif").unlink()
    with pytest.raises(DataError, match=r"miss_yellow\.tif: missing yellow channel file"):
        read_sample(tmp_path, "miss", fmt="tif")

    _write_tifs(tmp_path, "cut", [np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)] * 4)
    data = (tmp_path / "cut_green.tif").read_bytes()
    (tmp_path / "cut_green.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut_green\.tif: cannot decode TIFF") as info:
        read_sample(tmp_path, "cut", fmt="tif")
    assert "\n" not in str(info.value)

    _write_tifs(tmp_path, "junk", [plane] * 4)
    (tmp_path / "junk_red.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match=r"junk_red\.tif: cannot decode TIFF"):
        read_sample(tmp_path, "junk", fmt="tif")

    _write_tifs(tmp_path, "rgb", [plane] * 4)
    tifffile.imwrite(tmp_path / "rgb_blue.tif", np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    with pytest.raises(DataError, match=r"rgb_blue\.tif: expected a grayscale 8- or 16-bit TIFF, got shape 32x32x3"):
        read_sample(tmp_path, "rgb", fmt="tif")

    _write_tifs(tmp_path, "float", [plane] * 4)
    tifffile.imwrite(tmp_path / "float_red.tif", np.zeros((32, 32), np.float32))
    with pytest.raises(DataError, match=r"float_red\.tif: .*dtype float32"):
        read_sample(tmp_path, "float", fmt="tif")

    _write_tifs(tmp_path, "shape", [plane, plane, np.zeros((16, 32), np.uint16), plane])
    with pytest.raises(DataError, match=r"shape_blue\.tif: size 32x16 differs from the red channel's 32x32"):
        read_sample(tmp_path, "shape", fmt="tif")


def test_bad_jpegs_are_named(tmp_path):
    for color in COLORS:
        Image.new("RGB", (16, 16)).save(tmp_path / f"a_{color}.jpg")
    (tmp_path / "a_green.jpg").write_bytes((tmp_path / "a_green.jpg").read_bytes()[:100])
    with pytest.raises(DataError, match=r"a_green\.jpg: cannot decode JPEG"):
        read_sample(tmp_path, "a", fmt="jpg")
    Image.new("CMYK", (16, 16)).save(tmp_path / "a_green.jpg")
    with pytest.raises(DataError, match=r"a_green\.jpg: expected an RGB \(or grayscale\) JPEG, got PIL mode CMYK"):
        read_sample(tmp_path, "a", fmt="jpg")
    with pytest.raises(DataError, match=r"b_red\.jpg: missing red channel file"):
        read_sample(tmp_path, "b", fmt="jpg")


@pytest.mark.parametrize("option, message", [
    ({"fmt": "bmp"}, "unknown image format 'bmp'"),
    ({"fmt": "jpg", "yellow": "blue"}, "unknown yellow rule 'blue'"),
    ({"resample": "nearest"}, "unknown resample filter 'nearest'"),
    ({"depth16": "log"}, "unknown 16-bit rule 'log'"),
])
def test_unknown_options_are_config_errors(tmp_path, option, message):
    with pytest.raises(ConfigError, match=message):
        read_sample(tmp_path, "a", **option)
