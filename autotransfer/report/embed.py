"""Figures on the page, small: plotly.js once, gzipped; each figure as compact JSON.

plotly.js is 4.8 MB of text, most of a report. It is inlined once, gzipped and base64-encoded
(2.0 MB), and the page unpacks it with the browser's own ``DecompressionStream`` (Chrome 80,
Firefox 113, Safari 16.4): no CDN, no network. Each figure is its JSON with floats rounded
to 6 significant digits, NumPy's base64 arrays written as numbers, and the layout template
(the same ``plotly_white`` in every figure, 7 kB) stored once.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
import math
from typing import Any

import numpy as np

DIGITS = 6  # significant digits kept in a figure's numbers: more than any axis shows
_CONFIG = {"displaylogo": False, "responsive": True}

# Unpack plotly.js, then draw every figure; a browser that cannot unpack says so in place
# of the figures, and nothing is logged.
_LOADER = """
(() => {
  const figures = Array.from(document.querySelectorAll("script.plotly-figure"));
  if (!figures.length) return;
  const unpack = async () => {
    const packed = document.getElementById("plotly-js-gz").textContent.trim();
    const bytes = Uint8Array.from(atob(packed), c => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    (0, eval)(await new Response(stream).text());  // global scope: defines window.Plotly
    return window.Plotly;
  };
  const templates = JSON.parse(document.getElementById("plotly-templates").textContent);
  const config = JSON.parse(document.getElementById("plotly-config").textContent);
  unpack().then(Plotly => figures.forEach(s => {
    const fig = JSON.parse(s.textContent);
    if (s.dataset.template !== undefined) fig.layout.template = templates[+s.dataset.template];
    Plotly.newPlot(s.dataset.div, fig.data, fig.layout, config);
  }), err => figures.forEach(s => {
    document.getElementById(s.dataset.div).textContent = "This browser cannot unpack the " +
      "page's plotting library (it needs DecompressionStream: Chrome 80, Firefox 113, " +
      "Safari 16.4 or later): " + err;
  }));
})();
"""


@functools.lru_cache(maxsize=1)
def plotly_packed() -> str:
    """plotly.js gzipped (the same bytes every time: no timestamp) and base64-encoded."""
    import plotly.offline

    raw = plotly.offline.get_plotlyjs().encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")


class Figures:
    """The page's figures: each one's div and JSON, and the templates they share."""

    def __init__(self) -> None:
        self.templates: list[Any] = []
        self.count = 0

    def html(self, fig: Any, div_id: str) -> str:
        """The figure's empty div and its JSON, drawn by :meth:`scripts` once loaded."""
        spec = compact(json.loads(fig.to_json(validate=False, remove_uids=True)))
        template = spec.get("layout", {}).pop("template", None)
        ref = ""
        if template is not None:
            if template not in self.templates:
                self.templates.append(template)
            ref = f' data-template="{self.templates.index(template)}"'
        self.count += 1
        height = spec.get("layout", {}).get("height")
        style = f"height:{int(height)}px; width:100%;" if height else "width:100%;"
        return (f'<div id="{html.escape(div_id)}" class="plotly-graph-div" '
                f'style="{style}"></div>\n<script type="application/json" '
                f'class="plotly-figure" data-div="{html.escape(div_id)}"{ref}>'
                f"{script_json(spec)}</script>\n")

    def scripts(self) -> str:
        """plotly.js (packed), the shared templates and config, and the loader: once per
        page, nothing when the page has no figure."""
        if not self.count:
            return ""
        return (f'<script type="application/octet-stream" id="plotly-js-gz">'
                f"{plotly_packed()}</script>\n"
                f'<script type="application/json" id="plotly-templates">'
                f"{script_json(self.templates)}</script>\n"
                f'<script type="application/json" id="plotly-config">'
                f"{script_json(_CONFIG)}</script>\n"
                f"<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};{_LOADER}</script>\n")


def script_json(value: Any) -> str:
    """JSON that is safe inside ``<script>``: no ``<`` (so no ``</script>`` a backbone
    name or a plugin's text could carry), no NaN (which ``JSON.parse`` refuses)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029",
                                                                           "\\u2029")


def compact(value: Any) -> Any:
    """``value`` (a figure's JSON) with NumPy's base64 arrays as numbers and floats rounded
    to :data:`DIGITS` significant digits (NaN and infinities as null)."""
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            return compact(_decoded(value))
        return {k: compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.{DIGITS}g}") if math.isfinite(value) else None
    return value


def _decoded(spec: dict) -> list:
    """Plotly's typed array (``{"dtype": "f8", "bdata": ..., "shape": "3, 4"}``) as lists."""
    array = np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"])
                          .newbyteorder("<"))
    shape = spec.get("shape")
    if shape:
        array = array.reshape([int(n) for n in str(shape).split(",")])
    return array.tolist()
