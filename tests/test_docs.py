"""The front page and the guide: README.md starts with the two commands that set up
and run everything, and its links lead to files that exist. (docs/capi.md's example is
checked against the compiled one in test_capi.py; `mkdocs build --strict`, run by
.ci/run, checks the guide's own links and anchors.)"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    if not os.path.isdir(os.path.join(ROOT, "docs")):
        pytest.skip("docs/ is not beside tests/")
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_readme_starts_with_the_two_commands():
    text = _readme()
    first_block = re.search(r"```(\w*)\n(.*?)```", text, re.DOTALL)
    assert first_block is not None
    assert first_block.group(1) == "sh"
    assert first_block.group(2) == (
        "bash .ci/run demo     # set everything up, then run the demo against a throwaway"
        " local sshd\n"
        "bash .ci/run          # set everything up, then run the test suite\n"
    )


def test_readme_links_lead_to_files_that_exist():
    text = _readme()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local, "README links to no page of the guide"
    missing = [link for link in local if not os.path.exists(os.path.join(ROOT, link))]
    assert not missing, missing
