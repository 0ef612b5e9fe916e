"""Data sets the project had not seen: unusual but valid files in every format klayer reads."""

import numpy as np
import pytest

from klayer.data.images import read_image

Image = pytest.importorskip("PIL.Image")


def test_16bit_grey_images_are_scaled_not_clipped(tmp_path):
    # a 16-bit PNG opens as mode "I;16"; Pillow's convert("L") clips it at 255, so every value
    # above 255 became white and the image's content was lost
    a = np.array([[0, 257, 32896, 65535]], np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode == "I;16"
    np.testing.assert_array_equal(read_image(path, (1, 1, 4)), [0, 1, 128, 255])
    np.testing.assert_array_equal(read_image(path, (3, 1, 4)), [0, 1, 128, 255] * 3)
