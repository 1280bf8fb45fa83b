"""Interactive dashboards: one self-contained HTML file per dataset.

Data comes only through :mod:`queries` (named queries and the manifest);
figure builders are pure functions from DataFrames to ``go.Figure``
(``policy``, ``vcpus``, ``timeline``, ``distributions``, ``sweep``,
``quality``); :mod:`dashboards.page` assembles figures and tables into one
HTML page with plotly.js inlined once and no external reference, so the
file opens on an air-gapped host.

Example::

    from dashboards.build import write_dashboard

    report = write_dashboard("ds", "report.html")
    print(report.figures, report.bytes, report.seconds)

Everything that comes from a trace (task names, paths, source ids) is
text: it is escaped for HTML, for plotly's label markup and for embedded
JSON (:mod:`dashboards.text`).  Importing this package loads neither
polars nor plotly.
"""
