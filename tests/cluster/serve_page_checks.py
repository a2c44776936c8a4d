"""The playground page in a real browser, and the spritesheet variant through the openai SDK, against the serving
tests' app.

Imported by `tests/cluster/test_serve.py`, which owns the deployment (`server`): a module of its own would deploy a
second app. The browser is Debian's headless Chromium (`tests/browser.py`).
"""

import io

import numpy as np
import pytest
import requests

from tests.browser import chromium, console_errors, video_duration
from tests.cluster.videos_sdk_checks import client, sdk_warnings
from tests.serving import AUTH, PROMPT, TOKEN


@pytest.mark.slow
def test_the_playground_renders_a_prompt_into_a_playing_video_and_deletes_it(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base, cfg = server
    served = requests.get(f"{base}/", timeout=10)  # no key: the page holds no data
    assert served.status_code == 200 and "default-src 'none'" in served.headers["Content-Security-Policy"]
    assert requests.get(f"{base}/v1/models", timeout=10).status_code == 401  # every /v1 route still needs one
    with chromium() as driver:
        wait = WebDriverWait(driver, 120, poll_frequency=0.2)
        driver.get(f"{base}/")
        assert driver.title == "vidgen playground"
        driver.find_element(By.ID, "key").send_keys(TOKEN)
        driver.find_element(By.ID, "use-key").click()
        wait.until(lambda d: Select(d.find_element(By.ID, "seconds")).options)  # filled from GET /v1/models
        tiers = [o.get_attribute("value") for o in Select(driver.find_element(By.ID, "model")).options]
        assert tiers == ["", *cfg.tiers]  # auto, then each tier
        assert Select(driver.find_element(By.ID, "width")).first_selected_option.text == "32"
        Select(driver.find_element(By.ID, "quality")).select_by_value("draft")  # the edge tier, 2 steps
        driver.find_element(By.ID, "seed").send_keys("7")
        driver.find_element(By.ID, "prompt").send_keys(PROMPT)
        driver.find_element(By.ID, "submit").click()
        player = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#player[data-video]"))
        duration = video_duration(driver, player)
        assert isinstance(duration, float) and duration == pytest.approx(1.0, abs=0.2), duration  # 8 frames, 8 fps
        video_id = player.get_attribute("data-video")
        assert driver.find_element(By.ID, "progress").get_attribute("value") == "100"
        video = requests.get(f"{base}/v1/videos/{video_id}", headers=AUTH, timeout=10).json()
        assert (video["status"], video["tier"], video["size"], video["prompt"]) == ("completed", "edge", "32x32",
                                                                                    PROMPT)
        row = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"tr[data-id='{video_id}']"))
        assert PROMPT in row.text and "completed" in row.text
        assert console_errors(driver) == []  # the page, its API calls, its player: nothing the console objects to
        row.find_element(By.XPATH, ".//button[text()='Delete']").click()
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, f"tr[data-id='{video_id}']"))
        assert requests.get(f"{base}/v1/videos/{video_id}", headers=AUTH, timeout=10).status_code == 404
        assert not driver.find_element(By.ID, "player").is_displayed()  # the deleted video is not left playing
        driver.find_element(By.ID, "prompt").send_keys(" and then" * 20)  # past this deployment's 120 characters
        driver.find_element(By.ID, "submit").click()
        shown = wait.until(lambda d: d.find_element(By.ID, "error").text)
        assert shown.startswith("prompt:") and "120" in shown, shown  # the envelope's message, as the API wrote it


@sdk_warnings
def test_sdk_downloads_a_spritesheet_of_the_videos_frames(server):
    from PIL import Image

    from storage.video import decode

    base, _ = server
    videos = client(base).videos
    video = videos.create_and_poll(prompt=PROMPT, size="32x32", seconds="1", poll_interval_ms=100,
                                   extra_body={"quality": "draft", "seed": 9})
    frames = decode(videos.download_content(video.id).read()).astype(np.float64)
    download = videos.download_content(video.id, variant="spritesheet")
    assert download.response.headers["content-type"] == "image/jpeg"
    assert download.response.headers["x-vidgen-spritesheet"] == "4x2 tiles of 32x32, frames 0,1,2,3,4,5,6,7"
    sheet = np.asarray(Image.open(io.BytesIO(download.read())).convert("RGB"), dtype=np.float64)
    assert sheet.shape == (64, 128, 3)  # 8 frames of 32x32, four to a row
    tiles = [sheet[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32] for r in range(2) for c in range(4)]
    errors = [np.abs(tile - frame).mean() for tile, frame in zip(tiles, frames, strict=True)]
    assert max(errors) < 8, errors  # tile i is frame i (JPEG and H.264 both lossy)
