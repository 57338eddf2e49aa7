"""Check that the built book typesets its mathematics offline, in a real headless browser.

    python .ci/check_math.py book/_build/html/chapters/02_ddpm.html [...]

Chromium (Debian's ``chromium``) loads each page from disk with the network disabled and dumps the DOM
after MathJax has run; the check fails if a page loads MathJax from anywhere but the book itself, if no
typeset formula (``mjx-container``) appears, or if raw display-math delimiters are left in the text.
"""

import re
import subprocess
import sys
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--proxy-server=127.0.0.1:9", "--virtual-time-budget=15000", "--dump-dom"]


def check(page: Path, tmp: str) -> list[str]:
    html = page.read_text()
    problems = []
    sources = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', html, flags=re.I)
    if not sources or any(s.startswith(("http:", "https:", "//")) for s in sources):
        problems.append(f"{page}: MathJax is not served from the book ({sources})")
    dom = subprocess.run(["chromium", *FLAGS, f"--user-data-dir={tmp}", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    typeset = dom.count("<mjx-container")
    text = re.sub(r"<[^>]+>", " ", dom)
    if typeset == 0:
        problems.append(f"{page}: no typeset formula in the rendered page")
    if "\\[" in text or "$$" in text:
        problems.append(f"{page}: raw display-math delimiters left in the rendered text")
    print(f"{page}: {typeset} typeset formulas")
    return problems


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        problems = [p for arg in sys.argv[1:] for p in check(Path(arg), tmp)]
    print("\n".join(problems) or "math renders offline")
    sys.exit(1 if problems else 0)
