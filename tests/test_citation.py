"""CITATION.cff: a Citation File Format 1.2.0 file that cites AttendAffectNet and the seeds'
works. (The full schema check is `cffconvert --validate`, in a virtualenv of its own: its
jsonschema pin is older than the suite's; see CONTRIBUTING.md.)"""

import pathlib

import pytest

CFF = pathlib.Path(__file__).resolve().parents[1] / "CITATION.cff"


def problems(doc) -> list[str]:
  """What a CFF 1.2.0 reader would reject or a citer would miss, one line each."""
  out = []
  if not isinstance(doc, dict):
    return ["not a mapping"]
  if doc.get("cff-version") != "1.2.0":
    out.append(f"cff-version is {doc.get('cff-version')!r}, not '1.2.0'")
  for key in ("message", "title"):
    if not isinstance(doc.get(key), str) or not doc[key].strip():
      out.append(f"{key} missing or empty")
  works = [("the software", doc)]
  if "preferred-citation" in doc:
    works.append(("preferred-citation", doc["preferred-citation"]))
  works += [(f"references[{i}]", r) for i, r in enumerate(doc.get("references") or [])]
  for where, work in works:
    authors = work.get("authors")
    if not isinstance(authors, list) or not authors:
      out.append(f"{where}: no authors")
      continue
    for a in authors:
      if not (isinstance(a, dict) and (a.get("family-names") or a.get("name"))):
        out.append(f"{where}: an author without family-names or name: {a!r}")
    if work is not doc and not (work.get("type") and work.get("title")):
      out.append(f"{where}: type and title are required")
  cited = [w for _, w in works[1:]]
  if not any("AttendAffectNet" in str(w.get("title")) for w in cited):
    out.append("AttendAffectNet is not cited")
  return out


def _load():
  yaml = pytest.importorskip("yaml")
  return yaml.safe_load(CFF.read_text(encoding="utf-8"))


def test_citation_file_is_valid_and_cites_attendaffectnet():
  doc = _load()
  assert problems(doc) == []
  paper = doc["preferred-citation"]
  assert "AttendAffectNet" in paper["title"] and paper["year"] == 2020
  assert {"Thao", "Herremans", "Roig"} <= {a.get("family-names") for a in paper["authors"]}


def test_the_seeds_works_are_referenced():
  titles = " | ".join(r["title"] for r in _load()["references"])
  assert "Visual-Audio Attention Network" in titles       # VAANet (seed 004)
  assert "Predicting emotion in movies" in titles         # the thesis (seed 002)
  assert "VTT video emotion recognition" in titles        # VTT (seed 003)


def test_the_check_finds_what_is_wrong():
  doc = _load()
  bad = dict(doc, **{"cff-version": "1.1.0"})
  bad.pop("title")
  bad["preferred-citation"] = dict(doc["preferred-citation"], title="Another paper", authors=[])
  bad["references"] = [r for r in doc["references"] if "AttendAffectNet" not in r["title"]]
  found = problems(bad)
  assert "cff-version is '1.1.0', not '1.2.0'" in found
  assert "title missing or empty" in found
  assert "preferred-citation: no authors" in found
  assert "AttendAffectNet is not cited" in found
