"""The bundled model follows an anchor the user recolours in the web UI, by a measured amount.

Headless Chromium against the API on the bundled demo model (what `disco serve` runs): upload a
photo the model never trained on, give one anchor a far-away colour in the editor, re-colorize,
and measure how far the mean ab around that anchor moved toward the chosen colour.
"""

from __future__ import annotations

import numpy as np
import pytest

from service.colorspace import lab_to_srgb_uint8, srgb_to_lab

pytestmark = pytest.mark.slow

PHOTO = "chelsea.jpg"  # scikit-image's cat: held out from the demo model's training photos
MIN_RESPONSE = 0.35  # fraction of the way from the old colour to the chosen one

# The result's RGBA pixels in a box around (x, y) (fractions of the image), half-size in pixels.
BOX_PIXELS_JS = """async ([x, y, half]) => {
  const img = document.querySelector('#after-img');
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const cx = Math.round(x * canvas.width), cy = Math.round(y * canvas.height);
  const x0 = Math.max(0, cx - half), y0 = Math.max(0, cy - half);
  const w = Math.min(canvas.width, cx + half) - x0, h = Math.min(canvas.height, cy + half) - y0;
  const px = ctx.getImageData(x0, y0, w, h).data;
  return Array.from(px);
}"""


def _box_lab(page, x: float, y: float, half: int) -> np.ndarray:
    """Mean Lab of the result's pixels in the box (L, a, b)."""
    px = np.asarray(page.evaluate(BOX_PIXELS_JS, [x, y, half]), np.uint8).reshape(-1, 4)[:, :3]
    return srgb_to_lab(px[None])[0].mean(0)


def _far_colour(ab: np.ndarray, lightness: float) -> tuple[str, np.ndarray]:
    """A saturated colour far from `ab` that sRGB can show at this lightness, as hex and ab."""
    best = None
    for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
        target = 45.0 * np.array([np.cos(angle), np.sin(angle)], np.float32)
        l_plane = np.full((1, 1), lightness, np.float32)
        rgb = lab_to_srgb_uint8(l_plane, target.reshape(2, 1, 1))[0, 0]
        shown = srgb_to_lab(rgb[None, None])[0, 0, 1:]  # what the hex really encodes
        dist = float(np.linalg.norm(shown - ab))
        if best is None or dist > best[0]:
            best = (dist, "#" + "".join(f"{int(c):02x}" for c in rgb), shown)
    return best[1], best[2]


def test_recoloured_anchor_steers_its_region(browser, bundled_server, photos_dir, artifacts_dir):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(bundled_server)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.set_input_files("#file", photos_dir / PHOTO)
    expect(page.locator("#result-label")).to_have_text("Automatic", timeout=60_000)
    markers = page.locator("#anchor-layer .anchor")
    expect(markers).to_have_count(8)
    width = page.evaluate("document.querySelector('#after-img').naturalWidth")
    half = max(2, width // 32)  # half a token cell of the 16 x 16 grid

    # The anchor to recolour: the first one; its position from the marker's style (percent).
    x, y = (
        float(markers.nth(0).evaluate(f"m => parseFloat(m.style.{side})")) / 100
        for side in ("left", "top")
    )
    lab = _box_lab(page, x, y, half)
    before = lab[1:]
    hex_colour, target = _far_colour(before, float(lab[0]))

    markers.nth(0).click()
    expect(page.locator("#editor")).to_be_visible()
    page.locator("#custom-color").fill(hex_colour)
    expect(page.locator("#pending")).to_contain_text("1 anchor changed")
    page.click("#apply-hints")
    expect(page.locator("#result-label")).to_have_text("Your anchors", timeout=60_000)
    after = _box_lab(page, x, y, half)[1:]
    page.screenshot(path=artifacts_dir / "steer-anchor.png", full_page=True)
    context.close()

    wanted = target - before
    response = float(np.dot(after - before, wanted) / np.dot(wanted, wanted))
    print(
        f"\nanchor at ({x:.3f}, {y:.3f}): ab {before.round(1)} -> {after.round(1)}, "
        f"chosen {hex_colour} ab {target.round(1)}: moved {response:.2f} of the way"
    )
    assert response >= MIN_RESPONSE, (
        f"the region moved only {response:.2f} of the way toward the chosen colour "
        f"(need >= {MIN_RESPONSE})"
    )
