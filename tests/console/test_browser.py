"""The console's pages in a real browser: Debian's Chromium (`make browser`), driven by
Playwright through `executable_path` (no browser download), against a real `openbid up
--demo` (exchange, simulated DSPs and traffic, console process). One browser for the module;
each test leaves screenshots under `var/test-artifacts/console/` (kept after the run)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "console"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _call(url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class Demo:
    def __init__(self, base: str, user: str, password: str, token: str) -> None:
        self.base, self.user, self.password, self.token = base, user, password, token

    def api(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        return _call(self.base + path, self.token, body)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A running `openbid up --demo`, its console's base URL and admin."""
    root = tmp_path_factory.mktemp("console-demo")
    console_port, server_port = _free_port(), _free_port()
    env = dict(os.environ)
    env.update(
        OPENBID_SERVER__PORT=str(server_port),
        # the trackers in the ads point here: the simulated users' impressions come back
        OPENBID_EXCHANGE__PUBLIC_URL=f"http://127.0.0.1:{server_port}",
        OPENBID_EVENTS__DIR=str(root / "var" / "events"),
        OPENBID_EVENTS__ROLL_INTERVAL_S="2",
        OPENBID_STORES__CATALOG_URL=f"sqlite:///{root}/var/catalog.db",
        OPENBID_CONSOLE__PORT=str(console_port),
        OPENBID_CONSOLE__PUBLIC_URL=f"http://127.0.0.1:{console_port}",
        OPENBID_CONSOLE__ROLLUP_INTERVAL_S="2",
        OPENBID_LOGGING__FORMAT="json",
        # no training job in these few seconds (one running delays the stop by tens of s)
        OPENBID_SCHEDULER__FIRST_RUN_S="86400",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "openbid.cli", "up", "--demo", "--rate", "60"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the teardown ends all of it
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
    base = f"http://127.0.0.1:{console_port}"
    credentials = root / "var" / "demo-credentials"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, "".join(lines)[-3000:]
            assert time.monotonic() < deadline, "no console: " + "".join(lines)[-3000:]
            if credentials.exists():
                fields = dict(
                    line.split(": ", 1) for line in credentials.read_text().splitlines() if line
                )
                if len(fields) == 3:
                    try:
                        with urllib.request.urlopen(base + "/healthz", timeout=2):
                            break
                    except OSError:
                        pass
            time.sleep(0.3)
        yield Demo(base, fields["user"], fields["password"], fields["token"])
    finally:
        # A clean stop rolls the whole event log (tens of seconds with traffic, and
        # tests/console/test_serve.py checks it): here the group is killed after a short
        # grace, and the console process, which watches its parent, stops by itself.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).close()
            except OSError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the console outlived its openbid up")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser, demo):
    context = browser.new_context(viewport={"width": 1366, "height": 860}, accept_downloads=True)
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


def shoot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def banner_png(width: int = 300, height: int = 250) -> bytes:
    image = Image.new("RGB", (width, height), "#1f5fa8")
    draw = ImageDraw.Draw(image)
    draw.rectangle((12, 12, width - 12, height - 12), outline="#ffffff", width=4)
    draw.text((30, height // 2 - 10), "Trailhead: spring sale", fill="#ffffff")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_wrong_password_is_refused_and_the_right_one_logs_in(page, demo):
    page.goto(demo.base + "/campaigns")
    expect(page).to_have_url(re.compile(r"/login\?next=/campaigns"))
    page.get_by_label("User name").fill(demo.user)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong user name or password")
    page.get_by_label("User name").fill(demo.user)
    page.get_by_label("Password").fill(demo.password)
    page.keyboard.press("Enter")  # the form works from the keyboard
    expect(page).to_have_url(demo.base + "/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Dashboard")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["openbid_session"]["httpOnly"] is True
    shoot(page, "01-dashboard")
    # The model health page opens the registry (MLflow) in the background: start it now.
    assert page.request.get(demo.base + "/health/models").status == 200


def test_a_form_post_without_the_csrf_token_is_refused(page, demo):
    status = page.evaluate(
        """async () => (await fetch('/campaigns/new', {method: 'POST',
             headers: {'content-type': 'application/x-www-form-urlencoded'},
             body: 'id=x&name=x'})).status"""
    )
    assert status == 403


def test_upload_a_creative_and_see_its_preview(page, demo):
    status, _ = demo.api(
        "/api/v1/advertisers",
        {"id": "adv-trail", "name": "Trailhead Outdoor", "domain": "trailhead.example"},
    )
    assert status == 201
    page.goto(demo.base + "/creatives")
    page.get_by_label("Id").fill("cr-trail-300x250")
    page.get_by_label("Name").fill("Trailhead spring 300x250")
    page.get_by_label("Advertiser").select_option("adv-trail")
    page.get_by_label("Kind").select_option("image")
    page.get_by_label("Landing page").fill("https://trailhead.example/spring")
    page.get_by_label("File").set_input_files(
        {"name": "spring.png", "mimeType": "image/png", "buffer": banner_png()}
    )
    page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(demo.base + "/creatives/cr-trail-300x250")
    frame = page.frame_locator("iframe.preview")
    image = frame.locator("img[src*='/assets/']")
    expect(image).to_be_visible()
    natural = image.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert natural == [True, 300, 250]  # the uploaded image, served from /assets, rendered
    page.get_by_role("button", name="Approve").click()  # only approved creatives serve
    expect(page.locator("h1 .status")).to_have_text("approved")
    shoot(page, "02-creative-preview")


def test_create_a_campaign_with_targeting_and_budget(page, demo):
    today = datetime.now(UTC).date()
    page.goto(demo.base + "/campaigns/new")
    page.get_by_role("textbox", name="Id", exact=True).fill("trail-spring")
    page.get_by_label("Name").fill("Trailhead spring sale")
    page.get_by_label("Advertiser").select_option("adv-trail")
    page.get_by_label("Start (UTC)").fill(str(today - timedelta(days=1)))
    page.get_by_label("End (UTC, inclusive)").fill(str(today + timedelta(days=29)))
    page.get_by_label("Total budget").fill("")  # required: refused with the field named
    page.get_by_role("button", name="Create campaign").click()
    expect(page.get_by_role("alert")).to_contain_text("total_budget: required")
    shoot(page, "03-campaign-editor-errors")
    page.get_by_label("Total budget").fill("3,000")
    page.get_by_label("Daily budget").fill("100")
    page.get_by_label("Goal", exact=True).select_option("cpm")
    page.get_by_label("Goal amount").fill("20")
    page.get_by_label("Countries").fill("USA, CAN, GBR")
    page.get_by_role("checkbox", name="phone", exact=True).check()
    page.get_by_role("checkbox", name="desktop", exact=True).check()
    page.get_by_role("checkbox", name="banner", exact=True).check()
    page.get_by_role("checkbox", name=re.compile("Trailhead spring 300x250")).check()
    page.get_by_role("button", name="Create campaign").click()
    expect(page).to_have_url(demo.base + "/campaigns/trail-spring")
    expect(page.locator(".tiles")).to_contain_text("$3,000")
    expect(page.locator("td.targeting")).to_contain_text("countries: USA, CAN, GBR")
    expect(page.locator("canvas#pacing")).to_have_attribute("data-drawn", "true")
    shoot(page, "04-campaign-pacing")
    status, line_items = demo.api("/api/v1/line-items?campaign_id=trail-spring")
    assert status == 200 and len(line_items) == 1
    assert line_items[0]["creative_ids"] == ["cr-trail-300x250"]
    assert line_items[0]["targeting"]["countries"] == ["USA", "CAN", "GBR"]
    assert line_items[0]["targeting"]["device_types"] == ["phone", "desktop"]
    status, campaign = demo.api("/api/v1/campaigns/trail-spring")
    assert campaign["total_budget_micros"] == 3_000_000_000
    assert campaign["daily_budget_micros"] == 100_000_000 and campaign["goal"] == "cpm"


def test_the_new_campaign_delivers(page, demo):
    """The exchange's house demand picks the campaign up from the catalog and wins with it:
    its spend reaches the rollups, and its page shows it against the plan."""
    deadline = time.monotonic() + 90
    while True:
        status, budget = demo.api("/api/v1/campaigns/trail-spring/budget")
        if status == 200 and budget["spent_micros"] > 0:
            break
        assert time.monotonic() < deadline, f"the campaign did not deliver in 90 s: {budget}"
        time.sleep(1.0)
    page.goto(demo.base + "/campaigns/trail-spring")
    spent = page.locator("#spent").inner_text()
    assert spent.startswith("$") and float(spent[1:].replace(",", "")) > 0
    shoot(page, "05-campaign-delivering")


def test_the_platform_delivers_and_the_reports_show_it(page, demo):
    """The running exchange's traffic reaches the reports: the dashboard's impressions tile
    fills once the rollups summarise the rolled segments."""
    deadline = time.monotonic() + 60
    while True:
        page.goto(demo.base + "/")
        totals = page.get_by_role("region", name="Totals")
        tile = totals.locator(".tile", has_text="Impressions").locator("strong").inner_text()
        if tile not in ("-", "0"):
            break
        assert time.monotonic() < deadline, "no delivery in the dashboard within 60 s"
        page.wait_for_timeout(1000)
    assert int(tile.replace(",", "")) > 0
    expect(page.locator("canvas#dashboard-hourly")).to_have_attribute("data-drawn", "true")
    shoot(page, "06-dashboard-delivering")
    page.get_by_role("link", name="Reports", exact=True).first.click()
    page.get_by_role("checkbox", name="Day", exact=True).uncheck()
    page.get_by_role("checkbox", name="DSP", exact=True).check()
    page.get_by_role("checkbox", name="Bid rate", exact=True).check()
    page.get_by_role("button", name="Run report").click()
    expect(page).to_have_url(re.compile(r"group_by=dsp"))
    rows = page.locator("table.report tbody tr")
    assert rows.count() >= 2
    shoot(page, "07-report-by-dsp")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    text = Path(download.value.path()).read_text()
    assert text.splitlines()[0].startswith("dsp,") and len(text.splitlines()) >= 3


def test_exchange_and_model_health(page, demo):
    page.goto(demo.base + "/health/exchange")
    table = page.locator("#exchange-panel table")
    expect(table).to_contain_text("closed")
    assert table.locator("tbody tr").count() >= 4  # the demo's simulated DSPs
    expect(page.locator("#exchange-panel")).to_contain_text("Auction p99")
    # htmx refreshes the panel in place with rates over the scrapes it saw
    expect(page.locator("#exchange-panel")).to_contain_text("rates over the last", timeout=15_000)
    shoot(page, "08-exchange-health")
    page.goto(demo.base + "/health/models")
    for purpose in ("shaping", "ctr", "cvr"):
        expect(page.get_by_role("heading", name=purpose, exact=True)).to_be_visible()
        section = page.get_by_role("region", name=purpose, exact=True)
        # the registry's section polls until MLflow is open (a new tracking database first)
        expect(section.locator("[data-loaded=true]")).to_be_visible(timeout=90_000)
    expect(page.get_by_role("heading", name=re.compile("Live calibration"))).to_be_visible()
    shoot(page, "09-model-health")


def test_keyboard_reaches_the_navigation(page, demo):
    page.goto(demo.base + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    focused = page.evaluate("[document.activeElement.textContent, document.activeElement.href]")
    assert focused == ["Dashboard", demo.base + "/"]  # the first navigation link, after the brand
