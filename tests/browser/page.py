"""The web page in a real browser: Debian's Chromium, headless, driven by
Selenium through Debian's chromedriver (the W3C WebDriver reference client,
from PyPI, pinned in scripts/octoprint-dev.sh; no browser is downloaded).

Run by tests/it/browser.rs, which starts the agents, OctoPrint and the
bridge's process, and answers this script's checkpoints: a line `@NAME`
on stdout, answered by one line on stdin once the test has done or
checked what NAME stands for. Arguments: one JSON object (see main)."""

import http.server
import json
import os
import socket
import sys
import threading
import time

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

WAIT = 60  # seconds any one expected change may take


def checkpoint(name):
    """Tells the test NAME and waits for its answer (a line)."""
    print(f"@{name}", flush=True)
    answer = sys.stdin.readline().strip()
    assert answer != "", f"the test did not answer {name}"
    return answer


def browser(dark=False, extra=()):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1700",
                *extra]:
        options.add_argument(arg)
    if dark:
        options.add_argument("--force-dark-mode")
        options.add_argument("--blink-settings=preferredColorScheme=0")
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def until(driver, what, check):
    """Waits until CHECK(driver) is true; fails with WHAT and the page's text."""
    deadline = time.time() + WAIT
    while time.time() < deadline:
        try:
            if check(driver):
                return
        except Exception:  # the page is being redrawn
            pass
        time.sleep(0.1)
    raise AssertionError(f"never: {what}\n--- page ---\n{driver.find_element(By.TAG_NAME, 'body').text}")


def jobs(driver):
    """The transfer rows: (file, printer, state, outcome text), read at once
    (the page redraws them on every change)."""
    rows = driver.execute_script("""
        return [...document.querySelectorAll('tr[data-job]')].map((r) => {
          const td = r.querySelectorAll('td');
          return [td[0].firstChild.textContent, td[1].textContent, r.dataset.state, td[5].textContent];
        });""")
    return [tuple(r) for r in rows]


def press(driver, selector):
    """Clicks the button SELECTOR finds, if there is one, in one step."""
    return driver.execute_script(
        "const b = document.querySelector(arguments[0]); if (b) b.click(); return !!b;", selector)


def card(driver, agent):
    return driver.find_element(By.CSS_SELECTOR, f'article[data-agent="{agent}"]')


def badge(driver, agent):
    """A printer card's badge, read at once (the board is redrawn on every change)."""
    return driver.execute_script(
        "const b = document.querySelector(`article[data-agent=\"${arguments[0]}\"] .badge`);"
        "return b ? b.textContent : null;", agent)


def count(driver, selector):
    """How many elements SELECTOR finds now, in one step."""
    return driver.execute_script("return document.querySelectorAll(arguments[0]).length", selector)


def choose(driver, printers, print_too):
    """Ticks exactly PRINTERS and the print choice."""
    for label in driver.find_elements(By.CSS_SELECTOR, "fa-send fieldset label"):
        box = label.find_element(By.TAG_NAME, "input")
        name = label.text.split(" ")[0]
        if box.get_attribute("type") == "checkbox" and box.is_selected() != (name in printers):
            box.click()
        if box.get_attribute("type") == "radio":
            wanted = ("print" in label.text) == print_too
            if wanted and not box.is_selected():
                box.click()


def pick(driver, paths):
    """Chooses files with the page's file picker."""
    driver.find_element(By.ID, "files").send_keys("\n".join(paths))


def no_alert(driver):
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def evil_site():
    """A page of another origin that tries to send a file and to listen."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            page = ATTACK.replace("BASE", self.server.base).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


ATTACK = """<!doctype html><title>attack</title>
<form id=f method=POST enctype=text/plain action="BASE/ui/send?to=a:pi1&name=evil.gcode&print=true">
<input name=G1 value=X></form>
<script>
const results = {};
const es = new EventSource("BASE/ui/events");
es.onmessage = () => { results.es = "message"; };
es.addEventListener("state", () => { results.es = "state"; });
es.onerror = () => { results.es = results.es || "error"; es.close(); };
fetch("BASE/ui/send?to=a:pi1&name=evil2.gcode&print=true", {method: "POST", mode: "no-cors", credentials: "include", body: "G28"})
  .then(() => { results.fetch = "sent"; }, () => { results.fetch = "failed"; });
window.results = results;
setTimeout(() => document.getElementById("f").submit(), 1500);
</script>"""


def main():
    args = json.loads(sys.argv[1])
    base, shots = args["base"], args["shots"]
    os.makedirs(shots, exist_ok=True)
    driver = browser()
    try:
        # Without the launch link: told how to get in, nothing else.
        driver.get(f"{base}/ui/")
        assert "fileagent ui" in driver.find_element(By.TAG_NAME, "body").text
        driver.get(checkpoint("link"))
        until(driver, "the page is live", lambda d: d.find_element(By.ID, "link").text == "live")
        until(driver, "two printers on the board",
              lambda d: len(d.find_elements(By.CSS_SELECTOR, "article.card")) == 2)

        # Two files (one named to break a careless page) onto two printers,
        # to print.
        choose(driver, {"pi1", "pi2"}, True)
        pick(driver, [args["hostile"], args["part"]])
        hostile = os.path.basename(args["hostile"])
        until(driver, "four transfers, each stored",
              lambda d: len(jobs(d)) == 4 and all(j[2] in ("started", "waiting") for j in jobs(d)))
        rows = jobs(driver)
        print("transfers:", rows, flush=True)
        assert sorted(j[1] for j in rows) == ["pi1", "pi1", "pi2", "pi2"], rows
        assert [j[2] for j in rows if j[1] == "pi1"].count("started") == 1, rows
        assert all(j[2] == "waiting" and "forwarding is off" in j[3] for j in rows if j[1] == "pi2"), rows
        assert "2 of 4 stored" not in driver.find_element(By.CSS_SELECTOR, ".summary").text
        assert driver.find_element(By.CSS_SELECTOR, ".summary").text.startswith("4 of 4 stored, 1 started, 3 waiting")
        # The file name is text: no image was made of it, no script ran.
        assert any(j[0] == hostile for j in rows), rows
        assert driver.execute_script("return document.querySelectorAll('main img').length") == 0
        assert no_alert(driver)

        # The board: pi1 printing, with its progress; pi2 (no printer to
        # forward to) holding both files.
        until(driver, "pi1 printing", lambda d: badge(d, "pi1") == "Printing")
        assert count(driver, 'article[data-agent="pi1"] progress') == 1
        until(driver, "pi2's two files on its card", lambda d: len(
            card(d, "pi2").find_elements(By.CSS_SELECTOR, "li[data-file]")) == 2)
        assert badge(driver, "pi2") == "no printer"
        until(driver, "the other file waiting on pi1's card", lambda d: len(
            card(d, "pi1").find_elements(By.CSS_SELECTOR, "li[data-file]")) == 1)
        if badge(driver, "pi1") != "Printing":
            # A loaded machine: the picture shows the print ended instead.
            print("note: the first print ended before the screenshot", flush=True)
        driver.save_screenshot(os.path.join(shots, "ui-light.png"))

        # The other file waits for a person (the bed holds the last part);
        # "Print now" starts it.
        until(driver, "a waiting file on pi1 to start once its print ended",
              lambda d: "ended" in card(d, "pi1").text
              and press(d, 'article[data-agent="pi1"] button[data-action="print"]'))
        until(driver, "pi1 printing the waiting file",
              lambda d: badge(d, "pi1") == "Printing" and not card(d, "pi1").find_elements(
                  By.CSS_SELECTOR, 'button[data-action="print"]'))

        # A file dropped on the page (the drop a file manager makes).
        choose(driver, {"pi2"}, False)
        driver.execute_script("""
            const data = new DataTransfer();
            data.items.add(new File(['G28\\nG4 P100\\n'], 'dropped.gcode'));
            for (const type of ['dragenter', 'dragover', 'drop']) {
              document.body.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
            }""")
        until(driver, "the dropped file stored on pi2",
              lambda d: ("dropped.gcode", "pi2", "stored") in [j[:3] for j in jobs(d)])

        # Cancel a transfer under way (pi2 is behind a slow link): nothing lands.
        choose(driver, {"pi2"}, False)
        pick(driver, [args["big"]])
        big = os.path.basename(args["big"])
        until(driver, "the big file on its way",
              lambda d: any(j[0] == big and j[2] == "sending" for j in jobs(d)))
        assert press(driver, 'tr[data-state=sending] button[data-action="cancel"]')
        until(driver, "the transfer cancelled",
              lambda d: any(j[0] == big and j[2] == "cancelled" for j in jobs(d)))
        assert "nothing was stored" in [j for j in jobs(driver) if j[0] == big][0][3]
        checkpoint("cancelled")

        # An agent that goes away shows as unreachable, then recovers.
        checkpoint("stop-pi2")
        until(driver, "pi2 unreachable", lambda d: badge(d, "pi2") == "unreachable")
        checkpoint("start-pi2")
        until(driver, "pi2 back", lambda d: badge(d, "pi2") != "unreachable")
    finally:
        driver.quit()

    # Dark, on a phone-sized window.
    dark = browser(dark=True, extra=["--window-size=420,900"])
    try:
        dark.get(checkpoint("link"))
        until(dark, "the dark page is live", lambda d: d.find_element(By.ID, "link").text == "live")
        until(dark, "the board", lambda d: len(d.find_elements(By.CSS_SELECTOR, "article.card")) == 2)
        background = dark.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 20, 24)", background
        dark.save_screenshot(os.path.join(shots, "ui-dark-narrow.png"))
        # Keyboard: Tab reaches the file picker's button first.
        dark.find_element(By.TAG_NAME, "body").send_keys("\t")
        assert dark.switch_to.active_element.text == "Choose files…"

        # A page of another site (another port is another origin): its
        # form and fetch reach no agent, its event stream gets nothing.
        evil = evil_site()
        evil.base = base
        dark.get(f"http://127.0.0.1:{evil.server_port}/attack.html")
        until(dark, "the attack ran", lambda d: d.execute_script(
            "return window.results && window.results.es && window.results.fetch") or "attack" not in d.title)
        checkpoint("attacked")
    finally:
        dark.quit()

    # DNS rebinding: another name for 127.0.0.1 gets nothing.
    port = base.rsplit(":", 1)[1]
    rebound = browser(extra=["--host-resolver-rules=MAP evil.example 127.0.0.1"])
    try:
        rebound.get(f"http://evil.example:{port}/ui/")
        text = rebound.find_element(By.TAG_NAME, "body").text
        assert "answers only at 127.0.0.1" in text, text
    finally:
        rebound.quit()
    checkpoint("done")


if __name__ == "__main__":
    main()
