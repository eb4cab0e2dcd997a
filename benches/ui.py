"""The web page's figures (run by benches/ui.sh with the clients' venv):
from the file picked in the page to the row saying "stored" (timed in the
page), for each name given, in Debian's chromium (headless, Selenium, chromium-driver).
Prints one line per file: NAME SECONDS BUSY (the CPU seconds the whole
machine spent from picking the file to "stored"). Arguments: the launch link, then
the files (each sent to the printer "pi", upload only)."""

import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def busy_secs():
    """CPU seconds all CPUs have spent busy since boot (as benches/lib.sh's
    busy_secs): what the whole machine spent, whichever process spent it."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7)) / os.sysconf("SC_CLK_TCK")


link, files = sys.argv[1], sys.argv[2:]
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]:
    options.add_argument(arg)
driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
try:
    driver.set_script_timeout(600)
    driver.get(link)
    while driver.find_element(By.ID, "link").text != "live":
        time.sleep(0.05)
    driver.find_element(By.CSS_SELECTOR, "fa-send fieldset input[type=checkbox]").click()
    # Page weight and what it fetched: every resource from this origin.
    origin = link.split("/ui/")[0]
    entries = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => [e.name, e.decodedBodySize])")
    page = driver.execute_script(
        "return performance.getEntriesByType('navigation')[0].decodedBodySize")
    assert all(name.startswith(origin) for name, _ in entries), entries
    print("weight", page + sum(size for name, size in entries if "/events" not in name), flush=True)
    # Timed inside the page: from the picker's change event to the first
    # frame whose row says "stored" (a MutationObserver on the rows), so the
    # driver's own round trips do not count.
    driver.execute_script("""
        window.timing = {};
        document.getElementById('files').addEventListener('change', (e) => {
          for (const f of e.target.files) window.timing[f.name] = {picked: performance.now()};
        }, true);
        new MutationObserver(() => {
          for (const r of document.querySelectorAll('tr[data-job][data-state=stored]')) {
            const t = window.timing[r.querySelector('td').firstChild.textContent];
            if (t && !t.stored) t.stored = performance.now();
          }
        }).observe(document.querySelector('fa-jobs'), {subtree: true, childList: true, attributes: true});""")
    for path in files:
        name = path.rsplit("/", 1)[1]
        before = busy_secs()
        driver.find_element(By.ID, "files").send_keys(path)
        # One call that returns once the row says "stored", so no polling
        # round trips add to the machine's busy time measured around it.
        driver.execute_async_script("""
            const [name, done] = arguments;
            const check = () => (window.timing[name] || {}).stored ? done() : setTimeout(check, 5);
            check();""", name)
        busy = busy_secs() - before
        t = driver.execute_script("return window.timing[arguments[0]]", name)
        took = (t["stored"] - t["picked"]) / 1000
        xhr = driver.execute_script(
            "const e = performance.getEntriesByType('resource').filter((e) => e.name.includes('send?')).pop();"
            "return [e.startTime, e.responseEnd, performance.now()];")
        print(f"# {name}: the browser's request took {(xhr[1] - xhr[0]) / 1000:.3f} s "
              f"(to fileagent, spooled), seen stored {(xhr[2] - xhr[1]) / 1000:.3f} s after",
              file=sys.stderr, flush=True)
        print(name, f"{took:.3f}", f"{busy:.2f}", flush=True)
    print("ready", flush=True)
    # Idle with the page open, for the process's memory.
    sys.stdin.readline()
finally:
    driver.quit()
