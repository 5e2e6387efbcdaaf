"""The web UI in headless Chromium (Playwright) against the API served for real by uvicorn.

The tiny test model's colours are random but deterministic: enough to see results change.
Screenshots are kept under tests/web/artifacts/ (or $DISCO_WEB_ARTIFACTS).
"""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.slow

PHOTO = "chelsea.jpg"
JSON = "application/json"

DIGEST_JS = """async () => {
  const img = document.querySelector('#after-img');
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let h = 2166136261;  // FNV-1a over the pixels (the page's CSP allows no fetch of blob: URLs)
  for (let i = 0; i < px.length; i++) h = Math.imul(h ^ px[i], 16777619);
  return `${canvas.width}x${canvas.height}:${(h >>> 0).toString(16)}`;
}"""


def _result_digest(page) -> str:
    return page.evaluate(DIGEST_JS)


def _watch_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


def _upload(page, photos_dir, expect) -> None:
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.set_input_files("#file", photos_dir / PHOTO)
    expect(page.locator("#result-label")).to_have_text("Automatic", timeout=30_000)
    expect(page.locator("#status")).to_contain_text("Colorized")


# Multipart bodies with a file are not visible to the browser's network log: record the form
# fields as the page hands them to fetch().
RECORD_FORMS_JS = """(() => {
  const fetch = window.fetch.bind(window);
  window.__forms = [];
  window.fetch = (url, init) => {
    if (init && init.body instanceof FormData) {
      const fields = Object.fromEntries([...init.body].filter(([, v]) => typeof v === 'string'));
      window.__forms.push({ url: String(url), fields });
    }
    return fetch(url, init);
  };
})();"""


def test_upload_compare_diverse_and_edit_anchors(browser, live_server, photos_dir, artifacts_dir):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    page = context.new_page()
    errors = _watch_errors(page)
    page.add_init_script(RECORD_FORMS_JS)
    page.goto(live_server)
    expect(page).to_have_title("DISCO colorization")

    # Upload -> the automatic result beside the input, with its anchors drawn on it.
    _upload(page, photos_dir, expect)
    markers = page.locator("#anchor-layer .anchor")
    expect(markers).to_have_count(8)
    expect(page.locator("#download")).to_have_attribute("download", "chelsea-automatic.png")
    auto = _result_digest(page)
    page.fill("#split", "30")
    page.screenshot(path=artifacts_dir / "desktop-1-result.png", full_page=True)

    # Diverse: K results, pick the second.
    page.fill("#count", "3")
    page.click("#diverse")
    thumbs = page.locator("#diverse-grid .thumb")
    expect(thumbs).to_have_count(3)
    thumbs.nth(1).click()
    expect(page.locator("#result-label")).to_have_text("Diverse #2")
    expect(thumbs.nth(1)).to_have_attribute("aria-pressed", "true")
    picked = _result_digest(page)
    assert picked != auto
    page.screenshot(path=artifacts_dir / "desktop-2-diverse.png", full_page=True)

    # Anchors: a lower-ranked candidate for one, a picked colour for another, re-colorize.
    markers.nth(0).click()
    expect(page.locator("#editor")).to_be_visible()
    candidates = page.locator("#candidates .candidate")
    expect(candidates).to_have_count(5)
    candidates.nth(4).click()
    expect(markers.nth(0)).to_have_class(re.compile(r"\bchanged\b"))
    markers.nth(1).click()
    expect(page.locator("#editor-title")).to_have_text("Anchor 2 of 8")
    page.locator("#custom-color").fill("#d02090")
    expect(page.locator("#pending")).to_contain_text("2 anchors changed")
    page.click('label:has(input[value="side"])')
    page.screenshot(path=artifacts_dir / "desktop-3-editing.png", full_page=True)
    page.click("#apply-hints")
    sent = page.evaluate("window.__forms.at(-1)")
    assert sent["url"] == "colorize" and set(sent["fields"]) == {"hints"}
    hints = json.loads(sent["fields"]["hints"])
    assert len(hints) == 8
    assert set(hints[0]) == {"token", "ab"} and hints[1]["color"] == "#d02090"
    assert all(set(h) == {"token", "ab"} for h in hints[2:])  # unchanged: the picked result's
    expect(page.locator("#result-label")).to_have_text("Your anchors", timeout=30_000)
    expect(page.locator("#pending")).to_be_hidden()
    edited = _result_digest(page)
    assert edited not in (auto, picked)
    page.screenshot(path=artifacts_dir / "desktop-4-edited.png", full_page=True)
    assert not errors, errors
    context.close()


def test_phone_width_and_keyboard(browser, live_server, photos_dir, artifacts_dir):
    from playwright.sync_api import expect

    phone = {"width": 390, "height": 844}
    context = browser.new_context(
        viewport=phone, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    errors = _watch_errors(page)
    page.goto(live_server)
    _upload(page, photos_dir, expect)
    expect(page.locator("#anchor-list .chip")).to_have_count(8)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at phone width"
    page.screenshot(path=artifacts_dir / "phone-1-result.png", full_page=True)

    # Keyboard only: open an anchor, step to another candidate, close with Escape.
    chip = page.locator("#anchor-list .chip").nth(2)
    chip.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#editor")).to_be_visible()
    expect(page.locator("#candidates input").first).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#anchor-list .chip").nth(2)).to_have_class(re.compile(r"\bchanged\b"))
    page.screenshot(path=artifacts_dir / "phone-2-editing.png", full_page=True)
    page.keyboard.press("Escape")
    expect(page.locator("#editor")).to_be_hidden()
    expect(page.locator("#anchor-list .chip").nth(2)).to_be_focused()

    page.fill("#count", "2")
    page.locator("#diverse").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#diverse-grid .thumb")).to_have_count(2)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at phone width"
    page.screenshot(path=artifacts_dir / "phone-3-diverse.png", full_page=True)
    assert not errors, errors
    context.close()


def test_errors_are_explained(browser, live_server, photos_dir, artifacts_dir):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1024, "height": 768}, color_scheme="dark")
    page = context.new_page()
    page.goto(live_server)

    def refuse(status: int, code: str, message: str, headers: dict[str, str] | None = None):
        body = json.dumps({"error": {"code": code, "message": message}})

        def answer(route) -> None:
            route.fulfill(status=status, body=body, headers=headers or {}, content_type=JSON)

        page.route("**/colorize", answer)

    busy = "the service is at capacity (64 jobs waiting); retry later"
    refuse(429, "queue_full", busy, {"Retry-After": "7"})
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.set_input_files("#file", photos_dir / PHOTO)
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("The service is busy")
    expect(error).to_contain_text("Try again in 7 s")
    expect(page.locator("#error-retry")).to_be_disabled()
    expect(page.locator("#error-retry")).to_contain_text("Retry in")
    page.screenshot(path=artifacts_dir / "error-429.png")

    page.unroute("**/colorize")
    refuse(413, "payload_too_large", "upload of 25000000 bytes exceeds the limit of 20971520 bytes")
    page.click("#colorize")
    expect(error).to_contain_text("The image is too large")
    expect(error).to_contain_text("exceeds the limit of 20971520 bytes")
    expect(page.locator("#error-retry")).to_be_hidden()  # retrying would not help

    # A service with API keys: the key field appears; the key then goes with every request.
    page.unroute("**/colorize")
    refuse(401, "missing_api_key", "this endpoint needs an API key in the X-API-Key header")
    page.click("#colorize")
    expect(error).to_contain_text("This service needs an API key")
    expect(page.locator("#api-key")).to_be_focused()
    page.keyboard.type("test-key-0123456789abcdef")

    page.unroute("**/colorize")
    sent_keys: list[str | None] = []

    def record_key(route) -> None:
        sent_keys.append(route.request.headers.get("x-api-key"))
        route.continue_()

    page.route("**/colorize", record_key)
    page.click("#error-retry")
    expect(page.locator("#result-label")).to_have_text("Automatic", timeout=30_000)
    expect(error).to_be_hidden()
    assert sent_keys == ["test-key-0123456789abcdef"]
    context.close()


VIDEO_META_JS = """async () => {
  const v = document.querySelector('#video-result');
  if (v.readyState < 1) await new Promise((r) => v.addEventListener('loadedmetadata', r));
  return { src: v.src, width: v.videoWidth, height: v.videoHeight, duration: v.duration };
}"""


def test_video_clip_is_colorized_and_played(browser, live_server, photos_dir, tmp_path):
    import numpy as np
    from PIL import Image
    from playwright.sync_api import expect

    from service.video import synthetic

    photo = np.asarray(Image.open(photos_dir / "retina.jpg").convert("RGB"))
    frames = synthetic.pan_frames(photo, n=12, size=64, width=96, step=1.0)
    clip = synthetic.write_clip(tmp_path / "clip.mp4", frames, fps=6)  # 2 s
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = _watch_errors(page)
    page.goto(live_server)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#video-go")).to_be_disabled()
    page.set_input_files("#video-file", clip)
    page.click("#video-go")
    expect(page.locator("#video-result")).to_be_visible(timeout=60_000)
    expect(page.locator("#video-status")).to_have_text("Done.")
    meta = page.evaluate(VIDEO_META_JS)
    assert meta["src"].startswith("blob:")
    assert (meta["width"], meta["height"]) == (96, 64)
    assert abs(meta["duration"] - 2.0) < 0.5
    expect(page.locator("#video-download")).to_be_visible()
    assert not errors, errors
    context.close()
