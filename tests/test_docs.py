"""The docs as a newcomer meets them: a short README with the two commands on top, relative
links that resolve on a forge (the site's own build, `mkdocs build --strict`, runs in CI),
and every page and notebook in the site's navigation."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")


def broken_links(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
  """Relative links of a Markdown file whose target is not in the tree, as 'file: link'."""
  text = path.read_text(encoding="utf-8")
  text = re.sub(r"```.*?```", "", text, flags=re.S)    # code blocks hold no links
  out = []
  for link in LINK.findall(text):
    if "://" in link or link.startswith(("mailto:", "/")):
      continue
    if not (path.parent / link).exists():
      out.append(f"{path.relative_to(root)}: {link}")
  return out


def pages() -> list[pathlib.Path]:
  return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_is_short_and_starts_with_the_two_commands():
  lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
  assert len(lines) <= 250, len(lines)
  top = "\n".join(lines[:12])
  assert "python -m experiments.cognimuse_loo --config.dataset=synthetic" in top
  assert "python -m pytest -q -n 2 --ignore=tests/datasets" in top
  for section in ("## Predict your own film", "## Reproduce a table", "## Models in a notebook",
                  "## Layout", "## Citing"):
    assert section in lines, section


def test_relative_links_resolve():
  assert [b for p in pages() for b in broken_links(p)] == []


def test_every_page_and_notebook_is_in_the_site():
  yaml = pytest.importorskip("yaml")
  # mkdocs.yml may hold python tags in general; this one is plain YAML.
  nav = str(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
  docs = ROOT / "docs"
  missing = [p.relative_to(docs).as_posix() for p in sorted(docs.rglob("*.md"))
             if f"'{p.relative_to(docs).as_posix()}'" not in nav]
  missing += [f"notebooks/{p.name}" for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
              if f"'notebooks/{p.name}'" not in nav]
  assert missing == [], f"add to mkdocs.yml's nav: {missing}"


def test_a_broken_link_is_found(tmp_path):
  (tmp_path / "docs").mkdir()
  (tmp_path / "docs" / "there.md").write_text("# there\n")
  page = tmp_path / "docs" / "page.md"
  page.write_text("[ok](there.md) [ok too](there.md#a) [web](https://x.org/a.md)\n"
                  "```\n[in code](nowhere.md)\n```\n[gone](../notebooks/gone.ipynb)\n")
  assert broken_links(page, tmp_path) == ["docs/page.md: ../notebooks/gone.ipynb"]
