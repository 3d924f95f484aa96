"""Check the built site in a real browser: ``python docs/check_site.py docs/_build/html`` (``make docs-check``).

Headless Chromium from Debian's packages (``/usr/bin/chromium`` driven through ``/usr/bin/chromedriver`` by
Selenium; no browser download):

* the index, an API page and a gallery page load, with every image loaded (``naturalWidth > 0``), and the
  gallery page has at least one figure;
* every internal link of every page of the site resolves to a file (anchors excepted);
* the search page, run by the browser (``searchindex.js``), finds ``latent_graph``.

Screenshots of the index and the API page are written to ``docs/_build/screenshots/``. Exit status 1 with the
list of problems when any check fails.
"""
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

PAGES = {"index": "index.html", "api": "api/graphs.html", "gallery": "auto_examples/plot_spectral.html"}


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and ((tag == "a" and name == "href") or (tag in ("img", "script") and name == "src")
                          or (tag == "link" and name == "href")):
                self.links.append(value)


def broken_links(site: Path) -> list[str]:
    broken = []
    for page in site.rglob("*.html"):
        parser = Links()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        for link in parser.links:
            url = urlparse(link)
            if url.scheme or url.netloc or link.startswith(("mailto:", "javascript:", "data:")):
                continue  # external: not checked (offline)
            path = unquote(urldefrag(url.path)[0]) if url.path else ""
            if not path:
                continue  # an anchor on the same page
            target = (page.parent / path).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)} -> {link}")
    return broken


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--allow-file-access-from-files"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def check_page(driver, site: Path, name: str, rel: str, shots: Path, problems: list[str]) -> None:
    driver.get((site / rel).as_uri())
    time.sleep(0.5)
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
    bad = [src for src, ok in images if not ok]
    if bad:
        problems.append(f"{rel}: images not loaded: {bad}")
    title = driver.title
    if not title or "geomlat" not in title:
        problems.append(f"{rel}: unexpected title {title!r}")
    if name == "gallery" and not any("sphx_glr" in (src or "") for src, _ in images):
        problems.append(f"{rel}: no gallery figure")
    if name in ("index", "api"):
        driver.save_screenshot(str(shots / f"{name}.png"))
    print(f"{rel}: {len(images)} images loaded, title {title!r}")


def check_search(driver, site: Path, problems: list[str]) -> None:
    driver.get((site / "search.html").as_uri() + "?q=latent_graph")
    found = []
    for _ in range(60):
        found = driver.execute_script(
            "return Array.from(document.querySelectorAll('#search-results li a')).map(a => a.textContent)")
        if found:
            break
        time.sleep(0.5)
    if not any("latent_graph" in text for text in found):
        problems.append(f"search for latent_graph: results {found[:5]}")
    print(f"search latent_graph: {len(found)} results, first {found[:3]}")


def main(site: str) -> int:
    site = Path(site).resolve()
    shots = site.parent / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    problems = [f"broken link: {b}" for b in broken_links(site)]
    driver = browser()
    try:
        for name, rel in PAGES.items():
            check_page(driver, site, name, rel, shots, problems)
        check_search(driver, site, problems)
    finally:
        driver.quit()
    for p in problems:
        print("FAIL", p)
    print("docs-check:", "FAILED" if problems else f"passed; screenshots in {shots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html"))
