"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium.

Skipped, with the reason, where Chromium, chromedriver or Selenium is missing
(``make test`` installs Chromium through the Makefile's system-deps).  The
screenshot of the demo dashboard is kept in ``build/test-output/``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import queries
from dashboards import browser
from tests import dashboard_data as D

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))

OUTPUT = Path(__file__).resolve().parents[1] / "build" / "test-output"

#: Marks of the FPU-operation traces the timeline shows (those of the picked policy).
VISIBLE_OPS = """
var gd = document.getElementById(arguments[0]), n = 0, policies = {};
gd._fullData.forEach(function (t) {
  if (t.visible === true && (t.legendgroup || "").indexOf("ops-") === 0) {
    n += t._length; policies[t.meta] = true;
  }
});
return [n, Object.keys(policies)];
"""
#: Record dialogs instead of opening them, from before any script of the page runs.
RECORD_DIALOGS = """
window.__dialogs = [];
["alert", "confirm", "prompt"].forEach(function (name) {
  window[name] = function (m) { window.__dialogs.push(name + ":" + m); };
});
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "dashboards"


@pytest.fixture(scope="module")
def chrome():
    with browser.chromium(1400, 1000) as driver:
        yield driver


def spec_traces(html: Path) -> dict[str, int]:
    text = html.read_text()
    specs = re.findall(
        r'<script type="application/json" id="spec-([^"]+)">(.*?)</script>', text, re.S
    )
    return {fig: len(json.loads(body)["figure"]["data"]) for fig, body in specs}


def test_demo_renders_every_figure_offline(chrome, base):
    html = D.dashboard("demo", base)
    result = browser.load(chrome, html)
    assert result.errors == []
    assert result.resources == []  # nothing fetched: no network, no file but the page
    expected = spec_traces(html)
    assert result.figures == len(expected) == 8
    assert result.traces == expected and min(expected.values()) > 0
    OUTPUT.mkdir(parents=True, exist_ok=True)
    png = browser.screenshot(chrome, OUTPUT / "dashboard-demo.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100_000


def test_policy_dropdown_switches_the_timeline_data(chrome, base):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    html = D.dashboard("demo", base)
    browser.load(chrome, html)
    ops = dict(
        queries.run(D.dataset("demo", base), "policy_summary").select("policy", "ops").rows()
    )
    assert chrome.execute_script(VISIBLE_OPS, "timeline-0") == [ops["legacy"], ["legacy"]]
    seen = {}
    for policy in ("vcpu_run", "deferred", "legacy"):
        header = chrome.find_element(By.CSS_SELECTOR, "#timeline-0 g.updatemenu-header-group")
        chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})", header)
        ActionChains(chrome).move_to_element(header).click().perform()
        items = chrome.find_elements(By.CSS_SELECTOR, "#timeline-0 g.updatemenu-dropdown-button")
        assert [i.text for i in items] == ["legacy", "vcpu_run", "deferred"]
        ActionChains(chrome).move_to_element(
            items[["legacy", "vcpu_run", "deferred"].index(policy)]
        ).click().perform()
        seen[policy] = chrome.execute_script(VISIBLE_OPS, "timeline-0")
    assert seen == {p: [ops[p], [p]] for p in ("vcpu_run", "deferred", "legacy")}
    assert ops["legacy"] > ops["vcpu_run"]  # the switch shows different data
    assert browser.load(chrome, html).errors == []


def test_tables_sort_by_a_header_click(chrome, base):
    from selenium.webdriver.common.by import By

    browser.load(chrome, D.dashboard("demo", base))
    table = chrome.find_element(By.ID, "vcpu-table")
    heads = table.find_elements(By.CSS_SELECTOR, "thead th")
    column = [th.text for th in heads].index("ops")
    chrome.execute_script("arguments[0].click()", heads[column])
    assert heads[column].get_attribute("aria-sort") == "ascending"
    values = chrome.execute_script(
        "return Array.from(arguments[0].tBodies[0].rows).map(r => Number(r.cells[arguments[1]]"
        ".getAttribute('data-v')))",
        table,
        column,
    )
    assert values == sorted(values) and values[0] < values[-1]
    chrome.execute_script("arguments[0].click()", heads[column])
    assert heads[column].get_attribute("aria-sort") == "descending"
    first = chrome.execute_script(
        "return arguments[0].tBodies[0].rows[0].cells[arguments[1]].getAttribute('data-v')",
        table,
        column,
    )
    assert first == str(max(values))


def test_hostile_names_are_shown_as_text_and_run_nothing(chrome, base):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    html = D.dashboard("hostile", base)
    hook = chrome.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_DIALOGS}
    )
    try:
        result = browser.load(chrome, html)
        with pytest.raises(NoAlertPresentException):
            chrome.switch_to.alert  # noqa: B018 - the property raises when no dialog is open
        assert chrome.execute_script("return window.__dialogs") == []
        # No console errors: a CSP violation (an inline handler that got through) would be one.
        assert result.errors == [] and result.resources == []
        elements = chrome.execute_script(
            "return [document.querySelectorAll('img, iframe, svg[onload], b').length,"
            " document.querySelectorAll('script').length]"
        )
        assert elements == [0, len(re.findall(r"<script", html.read_text()))]
        ds = D.dataset("hostile", base)
        vcpus, checks = queries.run(ds, "vcpu_summary"), queries.run(ds, "validation")
        cells = chrome.execute_script(
            "return Array.from(document.querySelectorAll("
            "'#vcpu-table td, #validation-table td')).map(td => td.textContent)"
        )
        for name in D.HOSTILE:
            # a row per policy in the vCPU table, a row per check in the validation table
            rows = (vcpus["comm"] == name).sum() + (checks["comm"] == name).sum()
            assert cells.count(name) == rows >= 3 + 2
            # SVG text of plotly's tick labels: the name itself, markup and all
            for selector, least in (("#vcpu-bars .xtick text", 1), ("#validation .ytick text", 1)):
                ticks = chrome.execute_script(
                    "return Array.from(document.querySelectorAll(arguments[0]))"
                    ".map(t => t.textContent)",
                    selector,
                )
                assert sum(t.startswith(name + " · ") for t in ticks) >= least, (selector, ticks)
        header = chrome.find_element(By.ID, "sources").text
        assert D.HOSTILE_FILE in header
        shown = chrome.execute_script("return document.getElementById('manifest-text').textContent")
        assert all(json.dumps(n)[1:-1] in shown for n in D.HOSTILE)  # the vCPU threads
    finally:
        chrome.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", hook)
