"""Headless Chromium driven by selenium: the tests of the pages people use (the playground, the render report).

Debian's `chromium` and `chromium-driver` (.ci/run installs them when missing). A missing browser fails the test
with what to install; it never skips, so CI cannot pass without having looked at the pages.
"""

from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@contextmanager
def chromium():
    """A headless Chromium whose console (every level) `console_errors` reads; quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: install Debian's browser with `apt-get install -y chromium "
                    "chromium-driver` (as .ci/run does)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    # root in a container: no sandbox; /dev/shm is small there
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[str]:
    """The console's errors since the last call (CSP violations, failed loads, uncaught exceptions)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


DURATION = """
const [video, done] = [arguments[0], arguments[arguments.length - 1]];
const answer = () => done(video.error ? `error ${video.error.code}: ${video.error.message}` : video.duration);
if (video.readyState >= 1 || video.error) answer();
else { video.addEventListener("loadedmetadata", answer); video.addEventListener("error", answer); }
"""


def video_duration(driver, video) -> float | str:
    """The duration in seconds of a <video> element once its metadata has loaded, or its media error."""
    answer = driver.execute_async_script(DURATION, video)
    return float(answer) if isinstance(answer, int | float) else answer  # JSON makes a whole 1.0 an int
