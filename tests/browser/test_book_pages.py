"""The built book as a reader's browser shows it, with no network but the book's own server.

Every page in ``_toc.yml`` is opened in headless Chromium (Debian's ``/usr/bin/chromium``, driven by
Playwright; nothing downloads a browser) from a local HTTP server over ``_build/html``. Any request that
leaves localhost is aborted and recorded. On each page:

* the math is typeset: every Sphinx math element holds MathJax output (``mjx-container``), MathJax reports
  no TeX error, no raw TeX (``$$``, ``\\(``, ``\\[``, ``$\\alpha$``...) is left in the visible text, and
  MathJax came from the site itself (a MathJax request to anywhere else fails the page);
* no raw TeX commands either (``\\operatorname``, ``\\alpha``, ``\\gamma``, ... in plain text: what a broken
  ``$$`` block leaves behind);
* every ``<img>`` loaded (``naturalWidth > 0``) and no request to the local server failed;
* nothing the page needs comes from a CDN (require.js, the Jupyter widget manager, Font Awesome): an interactive
  output works offline. Chapter 1's slider (``.ddpm-slider``) is dragged and its picture and label must change; every
  button of a matplotlib animation (``.anim-buttons``) must show its icon;
* on a notebook page, the launch menu is shown and its Binder and Colab links open *this* notebook.

A full-page screenshot of each page goes to ``ci-artifacts/screenshots/``, and a summary of what each page
loaded (and what it tried to fetch from outside) to ``ci-artifacts/browser-report.json``.

A last test breaks a copy of a chapter page in each of those ways and checks that every break is reported.

Not part of the plain ``pytest`` run (it needs a built book and Chromium): ``.ci/run`` runs it as

    DDPM_BROWSER_TEST=1 pytest tests/browser

Environment: ``BOOK_HTML`` (default ``_build/html``), ``CHROMIUM`` (default ``/usr/bin/chromium``),
``CI_ARTIFACTS`` (default ``ci-artifacts``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

if os.environ.get("DDPM_BROWSER_TEST") != "1":
    pytest.skip("browser test of the built book: build it, then run `DDPM_BROWSER_TEST=1 pytest tests/browser`",
                allow_module_level=True)

import yaml  # noqa: E402  (Jupyter Book depends on PyYAML)
from playwright.sync_api import sync_playwright  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("BOOK_HTML", REPO / "_build" / "html")).resolve()
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("CI_ARTIFACTS", REPO / "ci-artifacts")).resolve()
SCREENSHOTS = ARTIFACTS / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
VIEWPORT = {"width": 1280, "height": 900}
MATHJAX_TIMEOUT_MS = 30_000

# Text that MathJax should have turned into math: display or inline delimiters left as they were written.
RAW_TEX = [
    ("$$", re.compile(r"\$\$")),
    ("\\(", re.compile(r"\\\(")),
    ("\\[", re.compile(r"\\\[")),
    ("\\begin{", re.compile(r"\\begin\{")),
    ("$...$", re.compile(r"\$[^$\s][^$\n]{0,120}?[\\_^{}][^$\n]{0,120}?\$")),
    ("\\operatorname", re.compile(r"\\operatorname")),
    ("\\command", re.compile(r"\\(alpha|beta|gamma|delta|epsilon|sigma|theta|mu|bar|hat|tilde|frac|sqrt|mathbf|"
                              r"mathcal|left|right|cdot|sum|prod|log|exp)(?![A-Za-z])")),
]
# Hosts of scripts and styles a page must not need: what an offline reader's browser cannot fetch.
CDN_ASSETS = re.compile(r"require(\.min)?\.js|html-manager|embed-amd|font-?awesome|jupyter-widgets", re.IGNORECASE)


# --- what the book says it has ------------------------------------------------------------------------

def _toc_files(entry) -> list[str]:
    """The ``file:`` entries of a _toc.yml node, depth first, in reading order."""
    found = []
    if isinstance(entry, dict):
        if "file" in entry:
            found.append(entry["file"])
        for key in ("parts", "chapters", "sections"):
            for child in entry.get(key, []) or []:
                found.extend(_toc_files(child))
    return found


def book_pages() -> list[dict]:
    """One record per page listed in _toc.yml: docname, source file and, for a notebook, its repo path."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    book_dir = (config.get("repository", {}).get("path_to_book") or "").strip("/")
    pages = []
    for docname in [toc["root"], *_toc_files(toc)]:
        docname = re.sub(r"\.(md|ipynb)$", "", docname)
        sources = [REPO / f"{docname}{ext}" for ext in (".ipynb", ".md")]
        source = next((s for s in sources if s.exists()), None)
        assert source is not None, f"_toc.yml lists {docname}, which has no .ipynb or .md"
        notebook = None
        if source.suffix == ".ipynb":
            notebook = "/".join(p for p in (book_dir, f"{docname}.ipynb") if p)
        pages.append({"docname": docname, "notebook": notebook})
    return pages


def launch_config() -> dict:
    """Where the launch buttons must send a reader, from _config.yml."""
    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    repo_url = config["repository"]["url"].rstrip("/")
    launch = config["launch_buttons"]
    return {
        "repo": urlsplit(repo_url).path.strip("/"),  # "org/name"
        "branch": config["repository"].get("branch", "main"),
        "binder": launch["binderhub_url"].rstrip("/"),
        "colab": launch["colab_url"].rstrip("/"),
    }


PAGES = book_pages()


# --- a local server and a browser that reaches nothing else -------------------------------------------

class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextmanager
def serve(directory: Path):
    """Serve ``directory`` on a free localhost port; yield its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def site_url():
    assert (SITE / "index.html").is_file(), f"no built book in {SITE}: run `jupyter-book build .` first"
    with serve(SITE) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).is_file(), f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def report():
    pages: dict = {}
    yield pages
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "browser-report.json").write_text(json.dumps(pages, indent=2, sort_keys=True) + "\n")


# --- the checks ---------------------------------------------------------------------------------------

_WAIT_FOR_MATHJAX = """
async (timeoutMs) => {
  const math = document.querySelectorAll('.math');
  if (math.length === 0) return 'no math';
  if (!(window.MathJax && window.MathJax.startup && window.MathJax.startup.promise)) return 'MathJax not loaded';
  const timeout = new Promise(resolve => setTimeout(() => resolve('MathJax timed out'), timeoutMs));
  return Promise.race([window.MathJax.startup.promise.then(() => 'typeset'), timeout]);
}
"""

_MATH_STATE = """
() => {
  const math = Array.from(document.querySelectorAll('.math'));
  const untypeset = math.filter(el => !el.querySelector('mjx-container'))
                        .map(el => el.textContent.trim().slice(0, 80));
  const errors = Array.from(document.querySelectorAll('mjx-merror'))
                      .map(el => (el.getAttribute('data-mjx-error') || el.textContent).slice(0, 80));
  return {math: math.length, typeset: document.querySelectorAll('mjx-container').length, untypeset, errors};
}
"""

# The visible text outside code and outside typeset math, one text node per line.
_VISIBLE_TEXT = """
() => {
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const parts = [];
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!el || el.closest(skip) || !el.checkVisibility()) continue;
    parts.push(walker.currentNode.nodeValue);
  }
  return parts.join('\\n');
}
"""

_LOAD_IMAGES = """
async () => {
  const images = Array.from(document.images);
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.complete ? null : new Promise(resolve => {
    img.addEventListener('load', resolve, {once: true});
    img.addEventListener('error', resolve, {once: true});
    setTimeout(resolve, 15000);
  })));
  return images.map(img => ({src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0}));
}
"""


# Chapter 1's offline slider: drag it to its last frame, then its first; the picture and the label must follow.
_SLIDERS = """
async () => {
  const out = [];
  for (const box of document.querySelectorAll('.ddpm-slider')) {
    const range = box.querySelector('input.ddpm-slider-range');
    const img = box.querySelector('img.ddpm-slider-image');
    const label = box.querySelector('.ddpm-slider-label');
    if (!range || !img || !label) { out.push({ok: false, why: 'slider without range, image or label'}); continue; }
    const seen = [];
    for (const value of [range.max, range.min]) {
      range.value = value;
      range.dispatchEvent(new Event('input', {bubbles: true}));
      await new Promise(resolve => setTimeout(resolve, 50));
      seen.push([img.getAttribute('src'), label.textContent]);
    }
    const ok = seen[0][0] !== seen[1][0] && seen[0][1] !== seen[1][1] && img.naturalWidth > 0;
    out.push({ok, why: ok ? '' : 'moving the slider did not change its picture and label',
              labels: seen.map(s => s[1])});
  }
  return out;
}
"""

# The buttons of matplotlib's to_jshtml animations: the theme's Font Awesome (served by the site) turns each
# <i class="fa fa-play"> into an inline SVG icon; an icon it does not know becomes its "missing" placeholder, and an
# <i> left as it was (no Font Awesome) shows nothing.
_ANIMATION_ICONS = """
() => Array.from(document.querySelectorAll('.anim-buttons button')).map(b => {
  const icon = b.querySelector('svg, i');
  const ok = !!icon && icon.tagName.toLowerCase() === 'svg' && icon.getBoundingClientRect().width > 0 &&
             !icon.querySelector('.missing');
  return {ok, html: b.innerHTML.trim().slice(0, 80)};
})
"""


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in LOCAL_HOSTS


def check_launch_links(hrefs: list[str], notebook: str, launch: dict) -> list[str]:
    """Problems with the Binder and Colab links of the page of ``notebook`` (empty: all good)."""
    problems = []
    binder = [h for h in hrefs if h.startswith(launch["binder"] + "/")]
    colab = [h for h in hrefs if h.startswith(launch["colab"] + "/")]
    binder_prefix = f"{launch['binder']}/v2/gh/{launch['repo']}/{launch['branch']}"
    if len(binder) != 1:
        problems.append(f"expected one Binder launch link, found {binder}")
    else:
        parts = urlsplit(binder[0])
        urlpath = parse_qs(parts.query).get("urlpath", [""])[0]
        base = f"{parts.scheme}://{parts.netloc}{parts.path}"
        if base != binder_prefix or not (urlpath == f"tree/{notebook}" or urlpath.endswith(f"/tree/{notebook}")):
            problems.append(f"Binder link {binder[0]} does not open {binder_prefix} at {notebook}")
    expected_colab = f"{launch['colab']}/github/{launch['repo']}/blob/{launch['branch']}/{notebook}"
    if len(colab) != 1:
        problems.append(f"expected one Colab launch link, found {colab}")
    elif colab[0] != expected_colab:
        problems.append(f"Colab link {colab[0]} is not {expected_colab}")
    return problems


def inspect_page(browser, base_url: str, page_info: dict, launch: dict, screenshot: Path | None):
    """Open one page offline; return (problems, summary). No problems means the page is as a reader needs."""
    context = browser.new_context(viewport=VIEWPORT, service_workers="block")
    page = context.new_page()
    external, local_failures, js_errors, mathjax_loaded = [], [], [], []

    def route(route):
        if _is_local(route.request.url):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort("internetdisconnected")

    def on_response(response):
        if not _is_local(response.url):
            return
        if response.status >= 400:
            local_failures.append(f"{response.status} {response.url}")
        elif re.search(r"/mathjax/.*\.js", urlsplit(response.url).path):
            mathjax_loaded.append(response.url)

    page.route("**/*", route)
    page.on("response", on_response)
    page.on("requestfailed", lambda r: _is_local(r.url) and local_failures.append(f"{r.failure} {r.url}"))
    page.on("pageerror", lambda error: js_errors.append(str(error)[:200]))

    url = f"{base_url}/{page_info['docname']}.html"
    problems = []
    try:
        response = page.goto(url, wait_until="load")
        if response is None or response.status != 200:
            return [f"{url} answered {response.status if response else 'nothing'}"], {}

        mathjax_state = page.evaluate(_WAIT_FOR_MATHJAX, MATHJAX_TIMEOUT_MS)
        math = page.evaluate(_MATH_STATE)
        if math["math"] and mathjax_state != "typeset":
            problems.append(f"{math['math']} equations but {mathjax_state}")
        if math["untypeset"]:
            problems.append(f"{len(math['untypeset'])} of {math['math']} equations not typeset, "
                            f"first: {math['untypeset'][0]!r}")
        if math["errors"]:
            problems.append(f"MathJax errors: {math['errors'][:3]}")
        if math["math"] and not mathjax_loaded:
            problems.append("equations on the page, but no MathJax came from the site")

        text = page.evaluate(_VISIBLE_TEXT)
        for name, pattern in RAW_TEX:
            for match in list(pattern.finditer(text))[:2]:
                start = max(match.start() - 30, 0)
                problems.append(f"raw TeX {name} in the visible text: {text[start:match.end() + 30]!r}")

        sliders = page.evaluate(_SLIDERS)
        for slider in sliders:
            if not slider["ok"]:
                problems.append(f"slider: {slider['why']}")
        page.wait_for_timeout(300)  # Font Awesome replaces the icons just after load
        icons = page.evaluate(_ANIMATION_ICONS)
        blank = [i["html"] for i in icons if not i["ok"]]
        if blank:
            problems.append(f"animation icons: {len(blank)} of {len(icons)} buttons show no icon, first {blank[0]!r}")
        widgets = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
        if widgets:
            problems.append(f"{widgets} Jupyter widget views, which need require.js and the widget manager "
                            "from a CDN and a kernel to move")

        images = page.evaluate(_LOAD_IMAGES)
        broken = [img["src"] for img in images if not img["ok"]]
        if broken:
            problems.append(f"{len(broken)} of {len(images)} images did not load: {broken[:5]}")

        if page_info["notebook"]:
            toggle = page.locator(".dropdown-launch-buttons button")
            if toggle.count() == 0 or not toggle.first.is_visible():
                problems.append("no launch button (rocket menu) shown")
            hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
            problems += check_launch_links(hrefs, page_info["notebook"], launch)

        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)

        if page_info["notebook"] and toggle.count():
            toggle.first.click()
            for name in ("binder", "colab"):
                item = page.locator(f'.dropdown-launch-buttons a[href^="{launch[name]}/"]')
                if item.count() == 0 or not item.first.is_visible():
                    problems.append(f"the {name} launch link is not shown when the launch menu is opened")

        mathjax_external = [u for u in external if "mathjax" in u.lower()]
        if mathjax_external:
            problems.append(f"MathJax requested from outside the site: {mathjax_external}")
        if local_failures:
            problems.append(f"requests to the site failed: {local_failures[:5]}")
        cdn = sorted({u for u in external if CDN_ASSETS.search(u)})
        if cdn:
            problems.append(f"assets requested from a CDN: {cdn[:3]}")

        summary = {
            "equations": math["math"], "typeset": math["typeset"], "images": len(images),
            "sliders": sliders, "animation_buttons": len(icons),
            "mathjax": sorted(set(urlsplit(u).path for u in mathjax_loaded))[:1],
            "external_requests_blocked": sorted(set(external)), "javascript_errors": js_errors,
            "problems": problems,
        }
        return problems, summary
    finally:
        context.close()


# --- the tests ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("page_info", PAGES, ids=[p["docname"] for p in PAGES])
def test_page_reads_offline(page_info, browser, site_url, report):
    screenshot = SCREENSHOTS / (page_info["docname"].replace("/", "_") + ".png")
    problems, summary = inspect_page(browser, site_url, page_info, launch_config(), screenshot)
    report[page_info["docname"]] = summary
    assert not problems, f"{page_info['docname']}:\n  " + "\n  ".join(problems)


def test_every_notebook_in_the_toc_was_built():
    notebooks = [p for p in PAGES if p["notebook"]]
    assert notebooks, "_toc.yml lists no notebook"
    for p in notebooks:
        assert (SITE / f"{p['docname']}.html").is_file(), f"{p['docname']} is in _toc.yml but was not built"


# One way to break a chapter page each: (regex, replacement, what the checks must then report).
BREAKS = {
    "raw_tex": (r'(class="headerlink"[^>]*>[^<]*</a></h1>)', r"\1<p>Raw: $$x_t = \\sqrt{\\bar\\alpha_t}\\,x_0$$</p>",
                ["raw TeX $$"]),
    "raw_tex_command": (r'(class="headerlink"[^>]*>[^<]*</a></h1>)',
                        r"\1<p>\\operatorname{LN}(h)\\,(1 + \\gamma) + \\beta, with \\alpha = 0</p>",
                        ["raw TeX \\operatorname", "raw TeX \\command"]),
    "frozen_slider": (r'class="ddpm-slider-range"([^>]*?) oninput=', r'class="ddpm-slider-range"\1 data-oninput=',
                      ["slider: moving the slider did not change"]),
    "blank_icons": (r'class="fa fa-play"', 'class="fa fa-no-such-icon-at-all"', ["animation icons"]),
    "cdn_widgets": (r"(</head>)", r'<script src="https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/'
                    r'dist/embed-amd.js"></script>\1', ["assets requested from a CDN"]),
    "missing_image": (r'(class="headerlink"[^>]*>[^<]*</a></h1>)', r'\1<img src="../_images/no-such-figure.png">',
                      ["images did not load"]),
    "cdn_mathjax": (r'src="[^"]*mathjax/tex-mml-chtml\.js[^"]*"',
                    'src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"',
                    ["MathJax requested from outside the site", "not typeset"]),
    "binder_elsewhere": (r"urlpath=tree/[^\"&]*\.ipynb", "urlpath=tree/book/99_elsewhere.ipynb", ["Binder link"]),
    "colab_elsewhere": (r'(colab\.research\.google\.com/github/[^"]*/)[^"/]*\.ipynb"', r'\g<1>99_elsewhere.ipynb"',
                        ["Colab link"]),
    "no_launch_menu": (r"dropdown-launch-buttons", "dropdown-something-else", ["no launch button"]),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_checks_catch_a_broken_page(name, browser, tmp_path):
    """A copy of a chapter page broken in one way is reported for that break."""
    pattern, replacement, expected = BREAKS[name]
    chapter = next(p for p in PAGES if p["notebook"])
    original = (SITE / f"{chapter['docname']}.html").read_text(encoding="utf-8")
    html, count = re.subn(pattern, replacement, original, count=1)
    assert count == 1, f"{name}: the chapter page no longer has {pattern!r}"

    broken_site = tmp_path / "site"  # the real site, but for this one page
    broken_site.mkdir()
    for child in SITE.iterdir():
        (broken_site / child.name).symlink_to(child, target_is_directory=child.is_dir())
    page_dir = Path(chapter["docname"]).parent
    if str(page_dir) != ".":
        (broken_site / page_dir).unlink()
        shutil.copytree(SITE / page_dir, broken_site / page_dir, symlinks=True)
    (broken_site / f"{chapter['docname']}.html").write_text(html, encoding="utf-8")

    with serve(broken_site) as url:
        problems, _ = inspect_page(browser, url, chapter, launch_config(), screenshot=None)
    text = "\n".join(problems)
    print(f"\n{name}: the broken copy of {chapter['docname']} was reported for:\n  " + "\n  ".join(problems))
    for message in expected:
        assert message in text, f"{name}: the break was not reported as {message!r}; got:\n{text}"
