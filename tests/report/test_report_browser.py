"""The report in a real browser: headless Chromium (Debian's chromium + chromium-driver, which
scripts/_browser.sh installs) driven by Selenium opens the page from disk, must log no console
error, and its class filter and IoU sort must show / order the items as their data attributes
say. A screenshot is saved and its path printed."""

import shutil
import tempfile

import pytest

from gcfeat.report import build_run_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1366,900",
)


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip(
            "no headless Chromium here (chromium / chromedriver not on PATH): "
            "scripts/_browser.sh installs Debian's chromium and chromium-driver"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e .[test]")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="gcfeat-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS + (f"--user-data-dir={profile}",):
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _visible(driver):
    """``(order, iou or None)`` of the displayed items, top to bottom."""
    from selenium.webdriver.common.by import By

    out = []
    for el in driver.find_elements(By.CSS_SELECTOR, "#items .item"):
        if el.is_displayed():
            iou = el.get_attribute("data-iou")
            out.append(
                (
                    int(el.get_attribute("data-order")),
                    float(iou) if iou else None,
                    el.get_attribute("data-classes").split(),
                )
            )
    return out


def test_report_in_chromium(browser, tiny_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    r = build_run_report(tiny_run, out=tmp_path / "report.html", max_frames=None, progress=False)
    browser.get(r.html.resolve().as_uri())
    assert browser.find_element(By.ID, "controls").is_displayed()  # the script ran
    start = _visible(browser)
    assert [o for o, _, _ in start] == list(range(r.frames))
    assert browser.find_element(By.ID, "f-count").text == f"{r.frames} of {r.frames} frames shown"
    # every image loaded (a missing file would also be a console error below)
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => i.loading !== 'lazy' || i.complete)"
        ".filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)"
    )
    assert broken == []

    # class filter: a class present in some frames only
    counts = {}
    for _, _, cls in start:
        for c in cls:
            counts[c] = counts.get(c, 0) + 1
    some = sorted(c for c, n in counts.items() if 0 < n < len(start))
    assert some, counts  # the fixture is seeded: some classes are in some frames only
    c = some[0]
    Select(browser.find_element(By.ID, "f-class")).select_by_value(c)
    shown = _visible(browser)
    assert [o for o, _, _ in shown] == [o for o, _, cl in start if c in cl]
    assert browser.find_element(By.ID, "f-count").text == f"{len(shown)} of {len(start)} frames shown"

    # with the filter on, worst first sorts by that class's IoU (data-ious), unscored last
    browser.find_element(By.ID, "f-worst").click()
    per = {}
    for el in browser.find_elements(By.CSS_SELECTOR, "#items .item"):
        pairs = dict(kv.rsplit(":", 1) for kv in el.get_attribute("data-ious").split())
        per[int(el.get_attribute("data-order"))] = float(pairs[c]) if c in pairs else None
    got = [o for o, _, _ in _visible(browser)]
    assert sorted(got) == [o for o, _, cl in start if c in cl]
    assert got == sorted(got, key=lambda o: (per[o] is None, per[o] or 0, o))

    # sort: worst IoU first (frames without ground truth last), ties in frame order
    Select(browser.find_element(By.ID, "f-sort")).select_by_value("order")
    Select(browser.find_element(By.ID, "f-class")).select_by_value("")
    browser.find_element(By.ID, "f-worst").click()
    worst = _visible(browser)
    want = sorted(start, key=lambda t: (t[1] is None, t[1] if t[1] is not None else 0, t[0]))
    assert [o for o, _, _ in worst] == [o for o, _, _ in want]
    assert [o for o, _, _ in worst] != [o for o, _, _ in start]  # the order did change
    assert (
        Select(browser.find_element(By.ID, "f-sort")).first_selected_option.get_attribute("value")
        == "iou-asc"
    )
    Select(browser.find_element(By.ID, "f-sort")).select_by_value("iou-desc")
    best = [v for _, v, _ in _visible(browser) if v is not None]
    assert best == sorted(best, reverse=True)

    browser.find_element(By.ID, "gallery").location_once_scrolled_into_view
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"\nscreenshot of the report (gallery sorted worst IoU first, then best first): {shot}")

    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []
