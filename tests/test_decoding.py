"""The fast decoders and OpenCV's resize rules (`data.resample`), each against an independent
reference: PIL's decoders and filters, `cv2.resize` called on PIL's planes, PIL's DCT-scaled
draft decode, a numpy brute force of area averaging; and one rule for the config, the tools and
a packed store."""

import inspect
import io
import math
import shutil
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, PngImagePlugin

from configs import default
from hpa_jax.config import validate
from hpa_jax.data import kaggle, pack, pipeline, sources, stats
from hpa_jax.data.sources import read_sample
from hpa_jax.errors import ConfigError, DataError

COLORS = ("red", "green", "blue", "yellow")
ENLARGE = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}
PIL_FILTERS = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR,
               "box": Image.Resampling.BOX}


def _pil_planes(folder, image_id, ext=".png"):
    return [np.asarray(Image.open(folder / f"{image_id}_{c}{ext}")) for c in COLORS]


def _kaggle(shared_data):
    folder = shared_data / "hpa_kaggle_sample" / "train"
    return folder, list(sources.scan_folder(folder, "png")[0])


def _jpegs(shared_data):
    folder = shared_data / "hpav18_sample" / "raw_jpg"
    return folder, list(sources.scan_folder(folder, "jpg")[0])


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in): output pixel o is the mean of the input over [o, o + 1) * n_in / n_out."""
    weights, scale = np.zeros((n_out, n_in)), n_in / n_out
    for o in range(n_out):
        low, high = o * scale, (o + 1) * scale
        for i in range(math.floor(low), math.ceil(high)):
            weights[o, i] = max(0.0, min(high, i + 1) - max(low, i)) / scale
    return weights


def test_png_decoding_is_pils_bit_for_bit(shared_data, monkeypatch):
    folder, ids = _kaggle(shared_data)
    calls = []
    monkeypatch.setattr(kaggle, "pil_png_plane", lambda *a: calls.append(a))   # the fast path decodes them all
    for image_id in ids:
        for color, reference in zip(COLORS, _pil_planes(folder, image_id)):
            plane = kaggle.open_png_plane(folder / f"{image_id}_{color}.png", color)
            assert plane.dtype == np.uint8
            np.testing.assert_array_equal(plane, reference)
    assert calls == []


def _png_with_text(plane: np.ndarray) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("note", "written by a test")
    out = io.BytesIO()
    Image.fromarray(plane).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def _pil_outcome(path):
    try:
        return kaggle.pil_png_plane(path, "blue")
    except DataError as e:
        return str(e)


def test_pngs_opencv_might_read_otherwise_are_pils(shared_data, tmp_path):
    folder, ids = _kaggle(shared_data)
    data = (folder / f"{ids[0]}_blue.png").read_bytes()
    plane = np.asarray(Image.open(folder / f"{ids[0]}_blue.png"))
    path = tmp_path / "x_blue.png"
    cases = {"truncated": data[: len(data) // 2], "cut in the header": data[:30], "no image data": data[:33],
             "garbage": b"\x89PNG\r\n\x1a\n garbage", "empty": b""}
    # An ancillary chunk with a wrong checksum: PIL refuses the file, libpng would only warn.
    text = bytearray(_png_with_text(plane))
    at = text.index(b"tEXt")
    text[at + 6] ^= 1
    cases["bad tEXt checksum"] = bytes(text)
    rng = np.random.default_rng(0)
    for k in range(12):                                  # bit flips in the image data and the chunks
        flipped = bytearray(data)
        flipped[int(rng.integers(8, len(data)))] ^= 1 << int(rng.integers(8))
        cases[f"flip {k}"] = bytes(flipped)
    for mode, array in {"I;16": plane.astype(np.uint16) * 257, "RGB": np.stack([plane] * 3, -1),
                        "LA": np.stack([plane] * 2, -1)}.items():
        out = io.BytesIO()
        Image.fromarray(array).save(out, "PNG")
        cases[mode] = out.getvalue()
    out = io.BytesIO()
    Image.fromarray(plane).convert("P").save(out, "PNG")
    cases["palette"] = out.getvalue()
    for name, content in cases.items():
        path.write_bytes(content)
        expected = _pil_outcome(path)
        try:
            got = kaggle.open_png_plane(path, "blue")
        except DataError as e:
            got = str(e)
        if isinstance(expected, str):
            assert got == expected, name
        else:
            np.testing.assert_array_equal(got, expected, err_msg=name)
    path.write_bytes(_png_with_text(plane))              # intact ancillary chunks: decoded, PIL's pixels
    np.testing.assert_array_equal(kaggle.open_png_plane(path, "blue"), plane)
    assert isinstance(_pil_outcome(tmp_path / "gone_blue.png"), str)
    with pytest.raises(DataError, match=r"gone_blue\.png: missing blue channel file"):
        kaggle.open_png_plane(tmp_path / "gone_blue.png", "blue")


@pytest.mark.parametrize("rule", ["linear", "cubic", "area"])
def test_opencv_rules_are_cv2_resize_on_pils_planes(shared_data, rule):
    folder, ids = _kaggle(shared_data)
    for image_id in ids[::5]:       # linear and area resize the 4 channels in one call: the pixels of one per plane
        planes = _pil_planes(folder, image_id)
        enlarged = np.stack([cv2.resize(p, (768, 768), interpolation=ENLARGE[rule]) for p in planes], -1)
        np.testing.assert_array_equal(read_sample(folder, image_id, size=768, resample=rule), enlarged)
        shrunk = np.stack([cv2.resize(p, (300, 300), interpolation=cv2.INTER_AREA) for p in planes], -1)
        np.testing.assert_array_equal(read_sample(folder, image_id, size=300, resample=rule), shrunk)
        np.testing.assert_array_equal(read_sample(folder, image_id, size=512, resample=rule), np.stack(planes, -1))


def test_linear_at_the_papers_size_is_the_2018_winners_reader(shared_data):
    folder, ids = _kaggle(shared_data)
    for image_id in ids[:3]:
        winner = np.stack([cv2.resize(cv2.imread(str(folder / f"{image_id}_{c}.png"), cv2.IMREAD_GRAYSCALE),
                                      (768, 768)) for c in COLORS], -1)
        np.testing.assert_array_equal(read_sample(folder, image_id, size=768), winner)   # the default rule


def test_area_is_the_area_weighted_mean(shared_data):
    folder, ids = _kaggle(shared_data)
    planes = _pil_planes(folder, ids[5])
    for size in (768, 300, 128):                          # enlarging, shrinking, an integer factor
        weights = _area_weights(512, size)
        expected = np.stack([weights @ p.astype(np.float64) @ weights.T for p in planes], -1)
        got = read_sample(folder, ids[5], size=size, resample="area")
        assert np.abs(got - expected).max() <= 0.501, size   # rounded to the nearest grey level


@pytest.mark.parametrize("rule", ["lanczos", "bilinear", "box"])
def test_pils_rules_are_pils_filters(shared_data, rule):
    folder, ids = _kaggle(shared_data)
    for image_id in ids[:2]:
        for size in (768, 300):
            expected = np.stack([np.asarray(Image.open(folder / f"{image_id}_{c}.png").resize((size, size),
                                                                                           PIL_FILTERS[rule]))
                                 for c in COLORS], -1)
            np.testing.assert_array_equal(read_sample(folder, image_id, size=size, resample=rule), expected)
    jpegs, jpeg_ids = _jpegs(shared_data)
    for image_id in (jpeg_ids[0], jpeg_ids[-1]):          # 2048 and 1728 px: PIL decodes at full size
        rgb = [np.asarray(Image.open(jpegs / f"{image_id}_{c}.jpg")) for c in COLORS]
        planes = [rgb[0][..., 0], rgb[1][..., 1], rgb[2][..., 2],
                  ((rgb[3][..., 0].astype(np.uint16) + rgb[3][..., 1]) // 2).astype(np.uint8)]
        expected = np.stack([np.asarray(Image.fromarray(p).resize((512, 512), PIL_FILTERS[rule])) for p in planes], -1)
        np.testing.assert_array_equal(read_sample(jpegs, image_id, fmt="jpg", size=512, resample=rule), expected)


@pytest.mark.parametrize("yellow", sources.YELLOW_RULES)
def test_jpeg_decoding_at_full_size_is_pils(shared_data, yellow):
    folder, ids = _jpegs(shared_data)
    pil = sources.jpeg_plane_opener(yellow, decoder="pil")
    fast = sources.jpeg_plane_opener(yellow)
    for image_id in ids:
        for color in COLORS:
            path = folder / f"{image_id}_{color}.jpg"
            np.testing.assert_array_equal(fast(path, color), pil(path, color))


def _dct_size(stored: int, size: int) -> int:
    """The side libjpeg decodes at: the smallest ceil(stored * M / 8), M = 1..8, that is >= size."""
    return min((math.ceil(stored * m / 8) for m in range(1, 9) if math.ceil(stored * m / 8) >= size), default=stored)


def test_jpegs_decode_at_the_smallest_dct_scale_not_below_the_size(shared_data):
    folder, ids = _jpegs(shared_data)
    for image_id in (ids[0], ids[-1]):
        path = folder / f"{image_id}_green.jpg"
        stored = Image.open(path).size[0]
        assert stored in (2048, 1728)
        for size in (100, 256, 511, 512, 513, 700, 768, 769, 864, 1000, 1024, stored - 1, stored, stored + 100):
            plane, shape = sources.jpeg_plane_opener(size=size)(path, "green")
            assert shape == (stored, stored)
            assert plane.shape == (_dct_size(stored, size),) * 2, (stored, size)
            assert min(plane.shape) >= min(size, stored)
    assert _dct_size(2048, 768) == 768 and _dct_size(1728, 768) == 864


def test_dct_scaled_jpegs_against_pils_draft_and_full_decode(shared_data):
    folder, ids = _jpegs(shared_data)
    small, large = ids[-1], ids[0]                        # 1728 px: 4/8 is PIL's draft scale (1/2)
    planes = []
    for color in COLORS:
        with Image.open(folder / f"{small}_{color}.jpg") as img:
            img.draft("RGB", (768, 768))
            rgb = np.asarray(img)
        assert rgb.shape == (864, 864, 3)
        planes.append(sources._jpeg_plane(rgb, color, "mean_rg"))
    expected = cv2.resize(np.stack(planes, -1), (768, 768), interpolation=cv2.INTER_AREA)
    for rule in ("linear", "cubic", "area"):              # all shrink 864 -> 768 by area
        np.testing.assert_array_equal(read_sample(folder, small, fmt="jpg", size=768, resample=rule), expected)
    # 2048 px at 3/8 is 768, no resize; close to the full decode shrunk by area averaging.
    full = read_sample(folder, large, fmt="jpg")
    reference = cv2.resize(full, (768, 768), interpolation=cv2.INTER_AREA).astype(np.int16)
    scaled = read_sample(folder, large, fmt="jpg", size=768, resample="area")
    assert np.abs(scaled - reference).mean() < 1.0
    lanczos = read_sample(folder, large, fmt="jpg", size=768, resample="lanczos")
    assert np.abs(scaled - lanczos.astype(np.int16)).mean() < 1.0


def test_dct_scaling_still_finds_channels_of_different_sizes(tmp_path):
    rng = np.random.default_rng(0)
    for color, side in zip(COLORS, (16, 16, 15, 16)):     # 3/8 of 16 and of 15 are both 6 px
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(tmp_path / f"a_{color}.jpg")
    for rule in ("linear", "lanczos"):
        with pytest.raises(DataError, match=r"a_blue\.jpg: size 15x15 differs from the red channel's 16x16"):
            read_sample(tmp_path, "a", fmt="jpg", size=6, resample=rule)


def test_bad_jpegs_are_named_at_a_reduced_scale(tmp_path):
    for color in COLORS:
        Image.new("RGB", (64, 64)).save(tmp_path / f"a_{color}.jpg")
    assert read_sample(tmp_path, "a", fmt="jpg", size=16).shape == (16, 16, 4)
    (tmp_path / "a_green.jpg").write_bytes((tmp_path / "a_green.jpg").read_bytes()[:300])
    with pytest.raises(DataError, match=r"a_green\.jpg: cannot decode JPEG"):
        read_sample(tmp_path, "a", fmt="jpg", size=16)
    Image.new("CMYK", (64, 64)).save(tmp_path / "a_green.jpg")
    with pytest.raises(DataError, match=r"a_green\.jpg: expected an RGB \(or grayscale\) JPEG, got PIL mode CMYK"):
        read_sample(tmp_path, "a", fmt="jpg", size=16)


def test_tifs_by_opencvs_rules(tmp_path):
    rng = np.random.default_rng(1)
    planes8 = [rng.integers(0, 255, (96, 96), dtype=np.uint8) for _ in COLORS]
    planes16 = [rng.integers(0, 65535, (96, 96), dtype=np.uint16) for _ in COLORS]
    for color, p8, p16 in zip(COLORS, planes8, planes16):
        tifffile.imwrite(tmp_path / f"e_{color}.tif", p8)
        tifffile.imwrite(tmp_path / f"s_{color}.tif", p16)
    for rule in ("linear", "cubic", "area"):
        for size, flag in ((40, cv2.INTER_AREA), (200, ENLARGE[rule])):
            expected = np.stack([cv2.resize(p, (size, size), interpolation=flag) for p in planes8], -1)
            np.testing.assert_array_equal(read_sample(tmp_path, "e", fmt="tif", size=size, resample=rule), expected)
            # 16-bit: resized in float32, then round(x / 257) once
            expected = np.stack([np.clip(np.rint(cv2.resize(p.astype(np.float32), (size, size), interpolation=flag)
                                                 / 257.0), 0, 255).astype(np.uint8) for p in planes16], -1)
            np.testing.assert_array_equal(read_sample(tmp_path, "s", fmt="tif", size=size, resample=rule), expected)


def test_one_rule_for_the_config_the_tools_and_the_readers():
    config = default.get_config()
    assert config.data.resample == sources.DEFAULT_RESAMPLE == "linear"
    assert sources.RESAMPLE_RULES == ("linear", "cubic", "area", "lanczos", "bilinear", "box")
    for function in (read_sample, pack.pack_folder, pack.pack_images, stats.entries_stats, kaggle.resize_image):
        assert inspect.signature(function).parameters["resample"].default == sources.DEFAULT_RESAMPLE, function
    assert pipeline.ImageSource(None, np.array([]), np.zeros((0, 28))).resample == sources.DEFAULT_RESAMPLE
    for rule in sources.RESAMPLE_RULES:
        config.data.resample = rule
        validate.validate(config)
    config.data.resample = "nearest"
    with pytest.raises(ConfigError, match="data.resample='nearest': expected one of linear, cubic, area, lanczos"):
        validate.validate(config)
    with pytest.raises(ConfigError, match="unknown resample filter 'nearest'"):
        read_sample(".", "a", resample="nearest")


def test_stats_read_with_the_rule_given(shared_data):
    folder, ids = _kaggle(shared_data)
    entries = [(folder, "png", i) for i in ids[:3]]
    for rule in ("linear", "lanczos"):
        got = stats.entries_stats(entries, size=300, resample=rule, num_threads=1, progress=False).mean_std()
        expected = stats.channel_stats(read_sample(folder, i, size=300, resample=rule) for i in ids[:3])
        np.testing.assert_array_equal(got, expected)


def test_a_store_packed_with_another_rule_is_refused(shared_data, tmp_path):
    folder, ids = _kaggle(shared_data)
    (tmp_path / "train").mkdir()
    for image_id in ids[:3]:
        for color in COLORS:
            shutil.copy(folder / f"{image_id}_{color}.png", tmp_path / "train")
    labels = np.zeros((3, 28), np.uint8)
    config = default.get_config()
    lanczos = pack.pack_folder(tmp_path / "train", ids[:3], tmp_path / "lanczos", size=64, resample="lanczos",
                               progress=False)
    assert pack.read_meta(lanczos)["resample"] == "lanczos"
    with pytest.raises(ConfigError) as info:
        pipeline.PackedSource.from_config(config.data, lanczos, ids[:3], labels)
    assert str(info.value) == (f"{lanczos}: packed with --resample=lanczos but data.resample is 'linear': repack with "
                               f"--resample=linear or set data.resample=lanczos")
    config.data.resample = "lanczos"
    source = pipeline.PackedSource.from_config(config.data, lanczos, ids[:3], labels)
    np.testing.assert_array_equal(source[1]["image"], read_sample(tmp_path / "train", ids[1], size=64,
                                                                  resample="lanczos"))
    # A store of the images as they are (no --size) was resized by no rule: any config reads it.
    pack.pack_folder(tmp_path / "train", ids[:3], tmp_path / "as_is", progress=False)
    config.data.resample = "cubic"
    pipeline.PackedSource.from_config(config.data, tmp_path / "as_is", ids[:3], labels)


def test_the_decoders_load_lazily_and_opencv_runs_in_the_readers_thread(shared_data):
    folder, ids = _kaggle(shared_data)
    probe = (f"import sys; from hpa_jax.data import sources, pack, stats, check\n"
             f"assert 'cv2' not in sys.modules and 'simplejpeg' not in sys.modules\n"
             f"sources.read_sample({str(folder)!r}, {ids[0]!r}, size=64)\n"
             f"import cv2; print(cv2.getNumThreads())")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_png_header_parser_on_written_files(tmp_path):
    plane = np.arange(12 * 7, dtype=np.uint8).reshape(7, 12)
    Image.fromarray(plane).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    assert kaggle._gray8_png_shape(data) == (7, 12)
    assert kaggle._gray8_png_shape(_png_with_text(plane)) == (7, 12)
    header = bytearray(data)
    header[16:20] = struct.pack(">I", 13)                # IHDR no longer matches its checksum
    assert kaggle._gray8_png_shape(bytes(header)) is None
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
