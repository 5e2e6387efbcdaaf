"""User hints: validation, position/colour conversion and the model's hint arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from service.gamut import q_to_ab
from service.hints import (
    MAX_HINTS,
    Hint,
    _srgb_to_lab_numpy,
    hex_to_ab,
    hex_to_rgb,
    hints_field,
    hints_to_arrays,
    parse_hints,
)

# vectors/README.md, "Fixed anchors": token, Lab (a, b), bin index.
FIXED = [
    (18, (20, 60), 163),
    (29, (-30, 40), 73),
    (74, (0, -40), 116),
    (87, (50, 30), 219),
    (133, (10, 10), 140),
    (154, (-10, -20), 100),
    (200, (30, -50), 171),
    (237, (0, 70), 127),
]


def test_fixed_anchors_give_listed_bins() -> None:
    hints = parse_hints([{"token": t, "ab": list(ab)} for t, ab, _ in FIXED])
    mask, bins = hints_to_arrays(hints)
    assert mask.shape == (256,) and mask.dtype == np.float32
    assert bins.shape == (256,) and bins.dtype == np.int64
    tokens = [t for t, _, _ in FIXED]
    expected_mask = np.zeros(256, np.float32)
    expected_mask[tokens] = 1
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(bins[tokens], [163, 73, 116, 219, 140, 100, 171, 127])
    assert (bins[mask == 0] == 0).all()
    np.testing.assert_array_equal(q_to_ab()[bins[tokens]], [ab for _, ab, _ in FIXED])


def test_fixed_anchors_match_vectors(vectors_dir: Path) -> None:
    with np.load(vectors_dir / "coffee_seed0_fixed.npz") as z:
        vec_mask = z["hint_mask"].reshape(256)
        vec_ab = z["anchor_ab"].reshape(2, 256)
    mask, bins = hints_to_arrays(parse_hints([{"token": t, "ab": ab} for t, ab, _ in FIXED]))
    np.testing.assert_array_equal(mask, vec_mask)
    hinted = mask > 0
    np.testing.assert_array_equal((q_to_ab()[bins] / 110).T[:, hinted], vec_ab[:, hinted])


@pytest.mark.parametrize(
    ("x", "y", "token"),
    [
        (0.0, 0.0, 0),
        (1.0, 1.0, 255),  # the far edge belongs to the last cell
        (0.999, 0.0, 15),
        (0.0, 0.999, 240),
        (2 / 16 + 1e-9, 1 / 16 + 1e-9, 18),
        (0.5, 0.25, 4 * 16 + 8),
    ],
)
def test_xy_to_token(x: float, y: float, token: int) -> None:
    assert Hint(x=x, y=y, ab=(0, 0)).token_index() == token


def test_xy_other_grid_and_token_range() -> None:
    assert Hint(x=1.0, y=1.0, ab=(0, 0)).token_index(grid=8) == 63
    with pytest.raises(ValueError, match="out of range"):
        Hint(token=100, ab=(0, 0)).token_index(grid=8)


def test_hex_parsing() -> None:
    assert hex_to_rgb("#c03020") == (0xC0, 0x30, 0x20)
    assert hex_to_rgb("c03020") == hex_to_rgb("#C03020") == (192, 48, 32)
    assert hex_to_rgb("#c32") == (0xCC, 0x33, 0x22)
    ab = hex_to_ab(["#c03020", "c03020", "#ffffff", "#000000"])
    assert ab.shape == (4, 2)
    np.testing.assert_array_equal(ab[0], ab[1])
    np.testing.assert_allclose(ab[2:], 0, atol=1e-3)  # neutral colours have a = b = 0
    assert 50 < ab[0, 0] < 60 and 40 < ab[0, 1] < 48  # a reddish orange: a, b both positive
    # The exact-formula fallback agrees with OpenCV's interpolated float path.
    rgb = np.array([[0xC0, 0x30, 0x20], [10, 200, 30], [30, 60, 250]], np.float64) / 255
    np.testing.assert_allclose(
        _srgb_to_lab_numpy(rgb)[:, 1:],
        hex_to_ab(["#c03020", "#0ac81e", "#1e3cfa"]),
        atol=0.25,
    )


def test_hex_hint_to_bin() -> None:
    mask, bins = hints_to_arrays(parse_hints('[{"x": 0.5, "y": 0.5, "color": "#c03020"}]'))
    t = 8 * 16 + 8
    assert mask[t] == 1 and mask.sum() == 1
    a, b = hex_to_ab(["#c03020"])[0]
    np.testing.assert_array_equal(q_to_ab()[bins[t]], [round(a, -1), round(b, -1)])


def test_later_hint_overrides_earlier() -> None:
    hints = parse_hints(
        [
            {"token": 5, "ab": [20, 60]},
            {"x": 5.5 / 16, "y": 0.0, "ab": [0, 70]},  # same token 5
            {"token": 6, "ab": [10, 10]},
        ]
    )
    mask, bins = hints_to_arrays(hints)
    assert mask[5] == 1 and mask.sum() == 2
    assert bins[5] == 127 and bins[6] == 140


def test_empty_hints() -> None:
    mask, bins = hints_to_arrays(parse_hints("[]"))
    assert not mask.any() and not bins.any()


def test_parse_accepts_bytes_and_objects() -> None:
    data = [{"token": 1, "color": "#abc"}]
    assert parse_hints(json.dumps(data).encode()) == parse_hints(data)
    h = Hint(token=1, color="#abc")
    assert parse_hints([h]) == [h]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([{"token": 1, "x": 0.5, "y": 0.5, "ab": [0, 0]}], "either 'token' or 'x'/'y'"),
        ([{"token": 1}], "missing colour"),
        ([{"ab": [0, 0]}], "missing position"),
        ([{"x": 0.5, "ab": [0, 0]}], "together"),
        ([{"token": 1, "ab": [0, 0], "color": "#000"}], "either 'ab' or 'color'"),
        ([{"token": 300, "ab": [0, 0]}], "less than or equal to 255"),
        ([{"token": -1, "ab": [0, 0]}], "greater than or equal to 0"),
        ([{"x": 1.5, "y": 0.5, "ab": [0, 0]}], "less than or equal to 1"),
        ([{"token": 1, "color": "#12345"}], "sRGB hex"),
        ([{"token": 1, "color": "red"}], "sRGB hex"),
        ([{"token": 1, "color": "#abc\n"}], "sRGB hex"),
        ([{"token": 1, "ab": [0, 500]}], "less than or equal to 128"),
        ([{"token": 1, "ab": [0]}], "ab"),
        ([{"token": 1, "ab": [0, 0], "colour": "#000"}], "Extra inputs are not permitted"),
        ([5], "Hint"),
        ({"token": 1, "ab": [0, 0]}, "JSON array"),
        ('{"token": 1}', "JSON array"),
        ("[{", "not valid JSON"),
        ([{"token": 1, "ab": [0, 0]}] * (MAX_HINTS + 1), "too many hints"),
    ],
)
def test_invalid_hints(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hints(data)  # type: ignore[arg-type]


def test_validation_error_names_index() -> None:
    with pytest.raises(ValidationError) as info:
        parse_hints([{"token": 1, "ab": [0, 0]}, {"token": 300, "ab": [0, 0]}])
    assert info.value.errors()[0]["loc"] == (1, "token")


def test_bad_json_reads_the_same_from_the_api_and_the_cli() -> None:
    """The form-field validator (API, video jobs) and `parse_hints` (the CLI's --hints file)
    report broken JSON with one message, naming where it broke."""
    with pytest.raises(ValueError) as from_file:
        parse_hints('[{"token": 1,}]')
    with pytest.raises(ValueError) as from_field:
        hints_field('[{"token": 1,}]')
    assert str(from_file.value) == str(from_field.value)
    assert "hints are not valid JSON" in str(from_file.value)
    assert "line 1, column 14" in str(from_file.value)
