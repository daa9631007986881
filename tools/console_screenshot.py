"""Screenshots of a running console's pages in Debian's headless Chromium (Playwright through
`executable_path`), for the docs: `docs/console-dashboard.png` is
`python tools/console_screenshot.py --credentials var/demo/demo-credentials` taken during
`make demo` after a few minutes of traffic.

    python tools/console_screenshot.py [--base URL] [--credentials FILE] [--out DIR] [PATH ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["/"])
    parser.add_argument("--base", default="http://127.0.0.1:8090")
    parser.add_argument("--credentials", default="var/demo/demo-credentials")
    parser.add_argument("--out", default=".")
    parser.add_argument("--width", type=int, default=1366)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()
    lines = Path(args.credentials).read_text().splitlines()
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(args.base + "/login")
        page.get_by_label("User name").fill(fields["user"])
        page.get_by_label("Password").fill(fields["password"])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(args.base + "/")
        for path in args.paths:
            page.goto(args.base + path)
            # charts drawn, htmx fragments swapped in (the exchange's panel, the registry's)
            page.wait_for_load_state("networkidle")
            # (locators, not page scripts: the pages' CSP forbids evaluating strings)
            expect(page.locator(".versions:not([data-loaded])")).to_have_count(0, timeout=90_000)
            expect(page.locator("[hx-trigger*=every] > p.empty")).to_have_count(0, timeout=30_000)
            page.wait_for_timeout(1500)
            name = "console-" + (path.strip("/").replace("/", "-") or "dashboard") + ".png"
            target = Path(args.out) / name
            page.screenshot(path=str(target), full_page=True)
            print(target)
        browser.close()


if __name__ == "__main__":
    main()
