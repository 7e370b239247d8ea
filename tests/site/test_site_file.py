"""Site files: the example loads; every mistake is refused at load naming file, entry and
field."""

from __future__ import annotations

import copy

import pytest

from powerflow.model.site import SiteError, load_site, parse_site
from powerflow.tomlfile import read_toml
from tests.conftest import ROOT

EXAMPLES = sorted((ROOT / "examples" / "sites").glob("*.toml"))
RAW = read_toml(ROOT / "examples" / "sites" / "two-pdus.toml", SiteError)
for _r in RAW["rack"]:  # parsed below as "x.toml", where the relative rack files are not
    _r.pop("rack", None)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_load(path) -> None:
    site = load_site(path)
    assert site.racks and site.feeds
    assert sorted(p for c in site.classes for p in c.priorities) == list(range(1, 11))


def edit(fn) -> dict:
    raw = copy.deepcopy(RAW)
    fn(raw)
    return raw


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["breaker"][1].update(parent="nowhere"),
     r"x\.toml: \[\[breaker\]\] #2: field 'parent': expected the id of a feed or a breaker"),
    (lambda r: r["breaker"][0].update(parent="pdu-1"), r"\[\[breaker\]\] #1: field 'parent'"),
    (lambda r: r["rack"][0].update(floor_w=3000.0), r"\[\[rack\]\] #1: field 'floor_w'"),
    (lambda r: [x.update(floor_w=2000.0) for x in r["rack"][:2]],
     r"breaker 'pdu-1': the floors of the racks under it add up to 4000 W, above its limit"),
    (lambda r: r["rack"][1].update(client="rack-r1"), r"\[\[rack\]\] #2: field 'client'"),
    (lambda r: r["rack"][1].update(client="a/b#"), r"\[\[rack\]\] #2: field 'client'"),
    (lambda r: r["rack"][1].update(id="pdu-1"), r"\[\[rack\]\] #2: field 'id'.*a breaker has it"),
    (lambda r: r["feed"][0].update(backup="utility-a"), r"\[\[feed\]\] #1: field 'backup'"),
    (lambda r: r["feed"][1].update(overload_s=0.0), r"\[\[feed\]\] #2: field 'overload_s'"),
    (lambda r: r["site"].update(period_s=-1), r"\[site\]: field 'period_s'"),
    (lambda r: r["site"].update(redistribute="share"), r"\[site\]: field 'redistribute'"),
    (lambda r: r["site"].update(lease_s=0.5), r"\[site\]: field 'lease_s'"),
    (lambda r: r["site"].update(colour="red"), r"\[site\]: unknown field 'colour'"),
    (lambda r: r["class"][2].update(priorities=[6, 7]), r"rack priorities \[8, 9, 10\] are in no"),
    (lambda r: r["class"][2].update(priorities=[5, 6, 7, 8, 9, 10]), r"\[\[class\]\] #3.*in class"),
    (lambda r: r["class"].reverse(), r"most important first"),
    (lambda r: r.update(rack=[]), r"no \[\[rack\]\]"),
    (lambda r: r["rack"][0].update(rack="nope.toml"),
     r"\[\[rack\]\] #1: field 'rack': expected a rack file \(relative to the site file\); got 'nope.toml'"),
    (lambda r: r.update(pdu={}), r"unknown section \[pdu\]"),
])
def test_mistakes_are_refused_naming_file_entry_and_field(change, message) -> None:
    with pytest.raises(SiteError, match=message):
        parse_site(edit(change), "x.toml")


def test_a_file_that_is_not_toml_is_refused(tmp_path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[site\n")
    with pytest.raises(SiteError, match=r"bad\.toml: not valid TOML"):
        load_site(p)
