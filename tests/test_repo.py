"""What the repository promises: two README commands, CI runs the test one, clean notebooks,
no dataset committed, pinned torch, a lock file for the whole environment; a README of at most
250 lines, a package map in docs/design.md that lists every module, links that resolve.

The checks of what runs may touch (notebooks, results, the README's generated tables) read what
is committed (``git show HEAD:…``), not the working tree, so they hold on a clone where someone
has run the notebooks or the study. The checks of the README's length, the package map and the
links read the working tree (no run writes those), so an edit is checked before its commit."""

import json
import re

import pytest

from conftest import ROOT, committed, committed_files


def readme_commands():
    text = committed("README.md")
    block = re.search(r"<!-- commands -->\s*```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md must have its two commands in a fenced block after <!-- commands -->"
    return [line for line in block[1].splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_has_exactly_two_commands_and_ci_runs_the_test_one():
    study, test = readme_commands()
    assert "dino-rnn study" in study and "pytest" in test
    ci = committed(".ci/run")
    assert test in ci.splitlines()


def test_the_commands_install_from_the_lock_file_and_this_environment_matches_it():
    """Every installed package is pinned in .ci/constraints.txt, at the version installed."""
    from importlib.metadata import distributions

    for command in readme_commands():
        assert "-c .ci/constraints.txt" in command
    pins = {}
    for line in committed(".ci/constraints.txt").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    assert pins["torch"] == "2.13.0" and pins["pytest"] and pins["filelock"]
    unpinned, wrong = [], []
    for d in distributions():
        name = d.metadata["Name"].lower().replace("_", "-")
        # the project itself, the venv's own tools, and the CUDA libraries torch pins for itself
        if name in ("dino-rnn", "pip", "setuptools", "wheel") or name.startswith(("nvidia-", "cuda-")) or name == "triton":
            continue
        if name not in pins:
            unpinned.append(name)
        elif d.version.split("+")[0] != pins[name]:
            wrong.append(f"{name} {d.version} (locked {pins[name]})")
    assert not unpinned and not wrong, (unpinned, wrong)


def test_dependencies_are_ranges_and_the_lock_file_is_inside_them():
    """pyproject.toml asks for compatible ranges (an install into someone's environment keeps their
    torch); .ci/constraints.txt pins the tested environment, and every pin lies in its range."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads(committed("pyproject.toml"))["project"]
    pins = dict(line.split("==") for line in committed(".ci/constraints.txt").splitlines()
                if line.strip() and not line.startswith("#"))
    pins = {k.lower().replace("_", "-"): v for k, v in pins.items()}
    wanted = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    assert len(wanted) > 20
    for line in wanted:
        req = Requirement(line)
        assert req.specifier and not any(s.operator == "==" for s in req.specifier), f"{line}: give a range"
        pinned = pins[req.name.lower().replace("_", "-")]
        assert req.specifier.contains(pinned), f"{line} leaves out the locked {pinned}"


def test_committed_notebooks_have_no_outputs():
    nbs = committed_files("notebooks/")
    assert len([p for p in nbs if p.endswith(".ipynb")]) >= 5
    for p in nbs:
        if not p.endswith(".ipynb"):
            continue
        nb = json.loads(committed(p))
        for c in nb["cells"]:
            if c["cell_type"] == "code":
                assert c["outputs"] == [] and c["execution_count"] is None, p


def test_notebook_outputs_are_stripped_by_a_git_filter():
    """nbstripout as a git filter keeps outputs out of commits (once `nbstripout --install` ran)."""
    attributes = committed(".gitattributes")
    assert re.search(r"^\*\.ipynb\s.*filter=nbstripout", attributes, re.M)
    assert "nbstripout" in committed("pyproject.toml")
    readme = committed("README.md")
    assert f"nbstripout --install --attributes .gitattributes && git config filter.nbstripout.extrakeys {EXTRA_KEYS}" in readme


@pytest.mark.slow
def test_the_readme_filter_setup_keeps_a_fresh_clone_clean(tmp_path):
    """The README's nbstripout steps, run in a fresh clone, leave `git status` empty.

    Every notebook is touched first, so that git runs the filter on it (it skips files whose
    timestamps it trusts). Without `--attributes .gitattributes`, nbstripout writes its own
    `*.ipynb filter=nbstripout` into .git/info/attributes, which outranks .gitattributes'
    exception for the reference's executed notebooks, and git shows them all modified.
    """
    import os
    import subprocess
    import sys

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    readme = committed("README.md")
    m = re.search(r"nbstripout (--install[^&]*?)\s*&& (git config filter\.nbstripout\.extrakeys \S+)", readme)
    assert m, "README.md must give the nbstripout set-up"
    subprocess.run([sys.executable, "-m", "nbstripout", *m[1].split()], cwd=clone, check=True)
    subprocess.run(m[2].split(), cwd=clone, check=True)
    for nb in clone.rglob("*.ipynb"):
        os.utime(nb, (nb.stat().st_atime + 5, nb.stat().st_mtime + 5))
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == ""


# What the README's Jupyter command configures the filter to strip besides outputs: JupyterLab
# writes the kernel's language_info (with the Python version) into every notebook it saves.
EXTRA_KEYS = "metadata.language_info"


@pytest.mark.slow
def test_committed_notebooks_are_what_the_filter_would_commit():
    """With the filter installed, a fresh clone's `git status` is clean: nbstripout leaves them as they are."""
    import subprocess
    import sys

    for p in committed_files("notebooks/"):
        if p.endswith(".ipynb"):
            text = committed(p)
            out = subprocess.run([sys.executable, "-m", "nbstripout", "--extra-keys", EXTRA_KEYS],
                                 input=text, capture_output=True, text=True)
            assert out.returncode == 0 and out.stdout == text, f"{p}: commit it as `nbstripout < {p}` writes it"


def test_dataset_is_not_committed():
    files = committed_files()
    assert files, "run the tests from a git checkout"
    assert not [f for f in files if re.search(r"(^|/)dino_?names\.txt$", f, re.I)]
    assert "data/README.md" in files and "dino_rnn/report/published_dino_names.csv" in files


def test_runs_write_only_ignored_folders():
    """What a study or a notebook run by hand writes is ignored by git; the reference is not."""
    import subprocess

    probe = ["results/study/comparison.md", "results/notebooks/metrics/lstm-seed0.json",
             "results/.study.dino-rnn/lock", "results/reference/html/comparison.html",
             "results/reference/html/index.html", "results/reference/executed/seed1/03_lstm.ipynb",
             "results/reference/checkpoints/lstm-seed0.pt", "results/.reference.dino-rnn/lock",
             "results/claims/points/lstm-L2-H64-lr0.0004-e40-nall/checkpoints/lstm-seed0.pt",
             "results/claims/points/lstm-L2-H64-lr0.0004-e40-nall/plots/lstm-seed0.png", "results/.claims.dino-rnn/lock"]
    p = subprocess.run(["git", "check-ignore", "--no-index", *probe], cwd=ROOT, capture_output=True, text=True)
    assert sorted(p.stdout.split()) == sorted(probe)
    tracked = ["results/reference/comparison.md", "results/reference/.dino-rnn.json", "results/report.png",
               "results/claims/claims.md", "results/claims/sweep.md", "results/claims/.dino-rnn.json",
               "results/claims/points/lstm-L2-H64-lr0.0004-e40-nall/metrics/lstm-seed0.json",
               "results/benchmark.md", "results/benchmark.json",
               "results/reference/executed/seed0/03_lstm.ipynb", "results/reference/executed/comparison.ipynb"]
    p = subprocess.run(["git", "check-ignore", "--no-index", *tracked], cwd=ROOT, capture_output=True, text=True)
    assert p.stdout == ""
    assert set(tracked) <= set(committed_files("results/"))


def _table(text: str) -> list[str]:
    """The first Markdown table in ``text``."""
    lines, started = [], False
    for line in text.splitlines():
        if line.startswith("|"):
            started = True
            lines.append(line)
        elif started:
            break
    return lines


def test_readme_table_is_the_generated_one():
    readme = committed("README.md")
    block = re.search(r"<!-- comparison:start -->(.*?)<!-- comparison:end -->", readme, re.S)
    assert block, "README.md must show the comparison table between its markers"
    generated = committed("results/reference/comparison.md")
    table = _table(generated)
    assert len(table) == 2 + 6  # header, rule, six models
    assert _table(block[1]) == table


def test_readme_claims_table_is_the_generated_one():
    """The README's verdicts are the ones the claims sweep computed (results/claims/claims.md)."""
    readme = committed("README.md")
    block = re.search(r"<!-- claims:start -->(.*?)<!-- claims:end -->", readme, re.S)
    assert block, "README.md must show the claims table between its markers"
    table = _table(committed("results/claims/claims.md"))
    assert len(table) == 2 + 5  # header, rule, five claims
    assert _table(block[1]) == table


def test_readme_shows_the_reports_screenshot_at_the_top():
    """The README opens on a screenshot of the committed results' index page (results/report.png)."""
    import subprocess

    head = committed("README.md").splitlines()[:12]
    assert any(re.search(r"!\[[^\]]+\]\(results/report\.png\)", line) for line in head)
    png = subprocess.run(["git", "show", "HEAD:results/report.png"], cwd=ROOT, capture_output=True).stdout
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1280
    assert len(png) < 400_000  # the top of the page, not a multi-MB full-page capture


def test_ci_installs_the_browser():
    ci = committed(".ci/run")
    assert "apt-get update" in ci and "apt-get install -y chromium" in ci
    assert "browser tests will be skipped" in ci  # never silently


def test_the_reference_keeps_what_its_report_needs_and_no_more():
    """Seed 0's executed notebooks and the comparison's, with their outputs; no HTML, no checkpoints."""
    files = committed_files("results/reference/")
    executed = sorted(f for f in files if f.startswith("results/reference/executed/"))
    model_notebooks = sorted(f.removeprefix("notebooks/") for f in committed_files("notebooks/")
                             if re.fullmatch(r"notebooks/\d\d_\w+\.ipynb", f))
    assert len(model_notebooks) >= 6
    assert executed == ["results/reference/executed/comparison.ipynb"] + [
        f"results/reference/executed/seed0/{n}" for n in model_notebooks]
    for f in executed:
        nb = json.loads(committed(f))
        assert any(c.get("outputs") for c in nb["cells"]), f  # not stripped by the nbstripout filter
    assert not [f for f in files if "/html/" in f or "/checkpoints/" in f]
    listed = json.loads(committed("results/reference/.dino-rnn.json"))["files"]
    assert {f.removeprefix("results/reference/") for f in files} - {".dino-rnn.json", ".dino-rnn-reference"} <= set(listed)



# ---------------------------------------------------------------------------
# The README and docs/: short, a package map that lists every module, links that resolve.
# These read the working tree, not HEAD: no run writes README.md, docs/ or the package, and
# whoever edits them sees a broken link or a module missing from the map before committing.
# ---------------------------------------------------------------------------

README_MAX_LINES = 250
FENCED = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)


def _pages() -> list:
    """README.md and every page of docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation (backticks too) dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page) -> set[str]:
    text = FENCED.sub("", page.read_text(encoding="utf-8"))
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M)}


def relative_links(page) -> list[str]:
    """Every link and image target of a Markdown page that is not a URL; code is not looked at."""
    text = re.sub(r"`[^`\n]*`", "", FENCED.sub("", page.read_text(encoding="utf-8")))
    targets = re.findall(r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    return [t for t in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


def broken_links(page, root=ROOT) -> list[str]:
    """The relative links of ``page`` that lead nowhere in a clone of ``root``: a missing file or
    folder, one git ignores (it exists only where something was run), a missing heading."""
    import subprocess

    broken, found = [], []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page.resolve()
        if not dest.exists():
            broken.append(f"{target} (no such file)")
            continue
        found.append((target, dest))
        if fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
            broken.append(f"{target} (no heading #{fragment} in {dest.name})")
    if found:
        p = subprocess.run(["git", "check-ignore", *(str(d) for _, d in found)], cwd=root, capture_output=True, text=True)
        ignored = set(p.stdout.splitlines())
        broken += [f"{t} (ignored by git: it exists only where a run wrote it)" for t, d in found if str(d) in ignored]
    return broken


def test_the_readme_is_at_most_250_lines():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; at most {README_MAX_LINES}: move the rest into docs/"


def package_modules() -> set[str]:
    """Every module file of the package, as ``dino_rnn/…/name.py`` (``__init__``/``__main__`` aside)."""
    package = ROOT / "dino_rnn"
    return {p.relative_to(ROOT).as_posix() for p in package.rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")
            and not any(part == "__pycache__" or part.startswith(".") for part in p.relative_to(package).parts)}


def package_map() -> str:
    """The section "The package map" of docs/design.md."""
    design = ROOT / "docs" / "design.md"
    assert design.is_file(), "docs/design.md must exist: the layers and the package map"
    m = re.search(r"^##\s+The package map\s*$(.*?)(?=^##\s|\Z)", design.read_text(encoding="utf-8"), re.S | re.M)
    assert m, "docs/design.md must have a section '## The package map'"
    return m[1]


def test_the_package_map_names_every_module_and_no_other():
    section = package_map()
    named = set(re.findall(r"\b(dino_rnn/[\w/]+\.py)\b", section))
    modules = package_modules()
    assert len(modules) >= 20  # the package, found
    missing = sorted(modules - named)
    assert not missing, f"docs/design.md's package map leaves out {missing}: add a line for each"
    stale = sorted(n for n in named if not (ROOT / n).is_file())
    assert not stale, f"docs/design.md's package map names modules that do not exist: {stale}"


def test_every_relative_link_in_the_readme_and_docs_resolves():
    pages = _pages()
    assert len(pages) >= 7, "README.md and the pages of docs/"
    assert any(t.startswith("docs/") for t in relative_links(ROOT / "README.md")), "the README links into docs/"
    broken = {p.relative_to(ROOT).as_posix(): b for p in pages if (b := broken_links(p))}
    assert not broken, broken


def test_the_link_checker_sees_what_it_should(tmp_path):
    """Links in code are not links, URLs are not checked; a missing file, a missing heading and
    a file git ignores are broken links."""
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("results/study/\n", encoding="utf-8")
    (tmp_path / "results" / "study").mkdir(parents=True)
    (tmp_path / "results" / "study" / "comparison.md").write_text("a run's\n", encoding="utf-8")
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Project\n\n## Two `dino-rnn` commands, and more\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# A page\n\n## The `dino_rnn` map\n\n"
        "[here](#the-dino_rnn-map) [![img](../README.md)](../README.md#two-dino-rnn-commands-and-more)\n"
        "[gone](nothing-here.md) [bad](#no-such-heading) [web](https://example.org/x) [folder](../docs/)\n"
        "```\n[in code](not-a-link.md)\n```\n`[inline](not-a-link-either.md)`\n"
        "[a run's](../results/study/comparison.md)\n", encoding="utf-8")
    assert relative_links(page) == ["#the-dino_rnn-map", "../README.md", "../README.md#two-dino-rnn-commands-and-more",
                                    "nothing-here.md", "#no-such-heading", "../docs/", "../results/study/comparison.md"]
    broken = broken_links(page, root=tmp_path)
    assert [b.split(" ")[0] for b in broken] == ["nothing-here.md", "#no-such-heading",
                                                  "../results/study/comparison.md"], broken
