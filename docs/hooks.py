"""MkDocs hook: the pages keep the links that work on a forge, the site gets the same targets.

Some files the docs show live outside docs/: the notebooks (notebooks/*.ipynb, rendered by
mkdocs-jupyter), CONTRIBUTING.md, CITATION.cff and the JSON schemas. They are added to the
site at their repository path (CONTRIBUTING.md as contributing.md), and a page's relative link
is rewritten from the repository's layout to the site's, so that `../notebooks/models.ipynb`
in docs/index.md, or `docs/training.md` in CONTRIBUTING.md, works in both places. Any other
link is left alone for MkDocs to check (strict mode fails on a broken one).
"""

from __future__ import annotations

import pathlib
import posixpath
import re

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

# repository path (glob) -> site path ("{name}": the file's name; None: the same path)
OUTSIDE = {
    "notebooks/*.ipynb": None,
    "schemas/*.json": None,
    "CONTRIBUTING.md": "contributing.md",
    "CITATION.cff": None,
}
_LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")
_site_of: dict[str, str] = {}   # repository path -> site path, for every file the site has


def _root(config) -> pathlib.Path:
  return pathlib.Path(config["config_file_path"]).resolve().parent


@event_priority(100)  # before mkdocs-jupyter looks for notebooks among the files
def on_files(files, config):
  root = _root(config)
  docs = pathlib.Path(config["docs_dir"]).resolve().relative_to(root).as_posix()
  _site_of.clear()
  for f in files:
    _site_of[posixpath.join(docs, f.src_uri)] = f.src_uri
  for pattern, site_path in OUTSIDE.items():
    for path in sorted(root.glob(pattern)):
      rel = path.relative_to(root).as_posix()
      if site_path:   # a file read from elsewhere, shown under another name
        f = File.generated(config, site_path, abs_src_path=str(path))
      else:           # a file of the repository root as src_dir (mkdocs-jupyter reads it so)
        f = File(rel, src_dir=str(root), dest_dir=config["site_dir"],
                 use_directory_urls=config["use_directory_urls"])
      _site_of[rel] = f.src_uri
      files.append(f)
  return files


def _repo_path(site_uri: str) -> str:
  for repo, site in _site_of.items():
    if site == site_uri:
      return repo
  return site_uri


def on_page_markdown(markdown, page, config, files):
  here_repo = posixpath.dirname(_repo_path(page.file.src_uri))
  here_site = posixpath.dirname(page.file.src_uri)

  def fix(m):
    link = m.group(2)
    if "://" in link or link.startswith(("/", "mailto:")):
      return m.group(0)
    target = posixpath.normpath(posixpath.join(here_repo, link))
    if target not in _site_of:
      return m.group(0)
    new = posixpath.relpath(_site_of[target], here_site or ".")
    return f"{m.group(1)}{new}{m.group(3) or ''}{m.group(4)}"

  return _LINK.sub(fix, markdown)
