"""Hand-built SVG charts: valid SVG, one line per series, log axes, embeddable as markdown."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

from tledit_pipeline.charts import line_chart_svg, svg_markdown

NS = "{http://www.w3.org/2000/svg}"


def test_loglog_chart_has_a_polyline_per_series_and_decade_ticks():
    series = {
        "raw": [(1, 0.1), (10, 0.01), (100, 0.001)],
        "synthetic": [(1, 0.3), (10, 0.02), (50, 0.0)],  # the zero cannot be drawn on a log axis
        "edited": [],
    }
    svg = line_chart_svg(series, "Rank & frequency", "rank", "frequency", log_x=True, log_y=True)
    root = ET.fromstring(svg)
    lines = root.findall(f"{NS}polyline")
    assert len(lines) == 2
    assert [len(pl.get("points").split()) for pl in lines] == [3, 2]
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "Rank &amp; frequency" in svg and "Rank & frequency" in texts  # escaped in the XML
    assert {"1", "10", "100", "raw", "synthetic", "edited"} <= set(texts)
    # Larger values are drawn higher (smaller y): raw at rank 1 above raw at rank 100.
    pts = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    assert pts[0][1] < pts[-1][1] and pts[0][0] < pts[-1][0]


def test_linear_chart_starts_at_zero_and_handles_no_data():
    root = ET.fromstring(line_chart_svg({"raw": [(2.0, 0.5), (4.0, 0.25)]}, "t", "x", "y"))
    assert "0" in [t.text for t in root.iter(f"{NS}text")]
    empty = ET.fromstring(line_chart_svg({}, "empty", "x", "y", log_x=True))
    assert not empty.findall(f"{NS}polyline")


def test_svg_markdown_is_a_data_uri_image():
    md = svg_markdown("<svg xmlns='http://www.w3.org/2000/svg'/>", "alt text")
    prefix = "![alt text](data:image/svg+xml;base64,"
    assert md.startswith(prefix) and md.endswith(")")
    assert base64.b64decode(md[len(prefix) : -1]) == b"<svg xmlns='http://www.w3.org/2000/svg'/>"


def test_series_beyond_the_variants_get_distinct_colours_and_given_ticks():
    series = {f"edited_g{g}": [(0.0, 1.0), (3.0, float(g))] for g in range(2, 6)} | {"raw": [(0.0, 1.0), (3.0, 2.0)]}
    root = ET.fromstring(line_chart_svg(series, "generations", "generation", "y", x_ticks=[0, 1, 2, 3]))
    colours = [line.get("stroke") for line in root.iter(f"{NS}polyline")]
    assert len(colours) == 5 and len(set(colours)) == 5  # raw keeps its colour, each later generation its own
    labels = [t.text for t in root.iter(f"{NS}text")]
    assert {"0", "1", "2", "3"} <= set(labels) and "0.5" not in labels  # whole generations only
