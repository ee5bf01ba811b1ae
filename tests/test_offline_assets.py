"""tools/offline_assets.py: the CDN stylesheet link of matplotlib's to_jshtml animations is dropped from the pages
(the book's theme serves Font Awesome itself); nothing else in an output is touched."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from offline_assets import strip_cdn_links  # noqa: E402


def test_the_animation_stylesheet_link_goes_and_the_rest_stays():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    line, = ax.plot([0, 1], [0, 1])
    html = FuncAnimation(fig, lambda i: (line,), frames=2).to_jshtml()
    plt.close(fig)
    assert "font-awesome" in html  # what matplotlib writes today: a stylesheet on a CDN
    cleaned = strip_cdn_links(html)
    assert "font-awesome" not in cleaned and "<link" not in cleaned
    assert cleaned.count('class="fa fa-play"') == html.count('class="fa fa-play"') == 1  # the buttons stay
    assert len(html) - len(cleaned) < 200


def test_other_links_are_kept():
    html = '<link rel="stylesheet" href="_static/local.css"><link rel="stylesheet" href="https://example.org/x.css">'
    assert strip_cdn_links(html) == html
