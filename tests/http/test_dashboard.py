"""The dashboard in a real headless Chromium, driven over the DevTools protocol on a pipe
(--remote-debugging-pipe: NUL-separated JSON on fds 3 and 4, so the test needs nothing beyond the
standard library).  A daemon with a job that poolsim feeds with progress: the list shows the job row and
its progress, a click opens the job page, whose loss chart has points and grows; screenshots (light and
dark) are saved next to the test output."""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from httpkit import fixture, get_json, run, start, submit, wait_for  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OUT = os.path.join(os.environ.get("RADLADS_BUILD", tempfile.gettempdir()), "tests", "http")


class Browser:
    def __init__(self, root):
        self.profile = tempfile.mkdtemp(prefix="rl-chromium-")
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()

        def fds_3_and_4():
            a = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
            b = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.stderr = open(os.path.join(root, "chromium.stderr"), "w")
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, "--remote-debugging-pipe", "--user-data-dir=" + self.profile,
                                      "--window-size=1280,900", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr,
                                     preexec_fn=fds_3_and_4, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buf = b""
        self.next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=1280, height=900, deviceScaleFactor=1,
                  mobile=False)

    def call(self, method, session=False, timeout=20, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise AssertionError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.time()
            if left <= 0 or not select.select([self.from_child], [], [], left)[0]:
                raise AssertionError(f"{method}: no reply from Chromium in {timeout} s")
            chunk = os.read(self.from_child, 1 << 20)
            if not chunk:
                raise AssertionError("Chromium closed the DevTools pipe")
            self.buf += chunk

    def eval(self, expr):
        r = self.call("Runtime.evaluate", session=True, expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, timeout=20, what=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or expr}")

    def click(self, selector):
        """A real mouse click at the element's centre (scrolled into view first)."""
        box = self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
                        f" const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def screenshot(self, name):
        os.makedirs(OUT, exist_ok=True)
        png = base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000, len(png)
        path = os.path.join(OUT, name)
        with open(path, "wb") as f:
            f.write(png)
        print(f"  screenshot: {path}")
        return path

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_child)
        os.close(self.from_child)
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def test_dashboard_shows_live_job_and_charts(root):
    spec = fixture(root)
    # Enough planned tokens that poolsim's 1000 tokens a step keep the progress bar moving for minutes.
    text = open(spec).read().replace("tokens: 64K", "tokens: 8M")
    open(spec, "w").write(text)
    d = start(root)
    pool = d.poolsim("--steps", "4000", "--step-ms", "20")
    b = None
    try:
        jid = submit(d, spec)
        other = submit(d, spec, "--hold", "--name", "waiting")
        wait_for(lambda: get_json(d, f"/api/jobs/{jid}")["tokens_per_s"] > 0, timeout=30, what="progress")
        b = Browser(root)
        b.call("Page.navigate", session=True, url=d.base + "/")
        row = f'tr[data-job-id="{jid}"]'
        b.wait(f"!!document.querySelector('{row}')", what="the job row")
        assert b.eval(f"document.querySelector('{row}').dataset.state") == "RUNNING"
        assert b.eval(f"document.querySelector('tr[data-job-id=\"{other}\"]').dataset.state") == "HELD"
        # Progress moves on the list without a reload.
        p0 = float(b.wait(f"(() => {{ const v = +document.querySelector('{row} [role=progressbar]').getAttribute('aria-valuenow');"
                          f" return v > 0 && String(v); }})()", what="progress > 0"))
        b.wait(f"+document.querySelector('{row} [role=progressbar]').getAttribute('aria-valuenow') > {p0}", timeout=30,
               what="progress to grow")
        assert b.eval(f"document.querySelector('{row} td:nth-child(8)').textContent") not in ("", "—")  # ETA
        b.screenshot("dashboard-list-light.png")
        b.click(f"{row} td:first-child a")
        b.wait(f"location.hash === '#/job/{jid}'", what="the job page")
        pts = "+(document.querySelector('#chart-loss canvas')?.dataset.points || 0)"
        n1 = b.wait(f"{pts} > 3 && {pts}", what="chart points")
        b.wait(f"{pts} > {n1}", timeout=30, what="the chart to grow")
        assert b.eval("document.querySelectorAll('#timeline .stage').length") == 3
        assert b.eval("document.querySelector('#timeline .stage.sel .k').textContent") == "0 · transfer"
        # The chart's pixels are not blank: the loss line was drawn.
        drawn = b.eval("(() => { const c = document.querySelector('#chart-loss canvas'); const g = c.getContext('2d');"
                       " const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;"
                       " for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })()")
        assert drawn > 500, drawn
        # The memory chart follows the pool's reports, and the stage card shows its peak (poolsim: 3 MiB).
        assert b.eval("+document.querySelector('#chart-mem canvas').dataset.points") > 3
        assert "peak 3.00 MiB" in b.eval("document.querySelector('#timeline .stage.sel').textContent")
        # Zoom survives live updates: zoom in with the wheel, wait for two refreshes, the view is kept.
        b.call("Input.dispatchMouseEvent", session=True, type="mouseWheel", x=300, y=300, deltaX=0, deltaY=-300)
        scroll_before = b.eval("window.scrollY")
        b.eval("(() => { const c = document.querySelector('#chart-loss canvas'); const r = c.getBoundingClientRect();"
               " c.dispatchEvent(new WheelEvent('wheel', {deltaY: -200, clientX: r.x + r.width / 2, clientY: r.y + 50, bubbles: true, cancelable: true})); })()")
        t = b.eval("+document.body.dataset.updated")
        b.wait(f"+document.body.dataset.updated > {t} + 2500", timeout=15, what="two refreshes")
        assert b.eval("window.scrollY") == scroll_before
        b.screenshot("dashboard-job-light.png")
        # Without a token there are no buttons; with one, cancel works from the page.
        assert b.eval("document.querySelectorAll('[data-action]').length") == 0
        b.call("Emulation.setEmulatedMedia", session=True, features=[{"name": "prefers-color-scheme", "value": "dark"}])
        t = b.eval("+document.body.dataset.updated")
        b.wait(f"+document.body.dataset.updated > {t}", what="a refresh in dark mode")
        assert b.eval("getComputedStyle(document.body).backgroundColor") == "rgb(15, 18, 24)"
        b.screenshot("dashboard-job-dark.png")
        token = open(d.token_file).read().strip()
        b.eval(f"(() => {{ const t = document.querySelector('#token'); t.value = {json.dumps(token)};"
               " t.dispatchEvent(new Event('change')); })()")
        b.wait("!!document.querySelector('[data-action=cancel]')", what="the cancel button")
        b.click("[data-action=cancel]")
        wait_for(lambda: get_json(d, f"/api/jobs/{jid}")["state"] in ("CANCELLING", "CANCELLED"), what="cancel")
        b.wait("document.querySelector('#job-head .state').textContent.startsWith('CANCEL')", what="state on the page")
    finally:
        if b:
            b.close()
        pool.kill()
        d.stop()


if __name__ == "__main__":
    if not os.access(CHROMIUM, os.X_OK):
        print(f"SKIP: {CHROMIUM} is not installed (apt-get install chromium); the dashboard test needs a real browser")
        sys.exit(77)
    run([test_dashboard_shows_live_job_and_charts])
