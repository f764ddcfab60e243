"""A griffe extension for pyssh's API reference (mkdocs.yml loads it).

griffe reads pyssh statically, without building the C extension, and two habits of
the package do not survive that as they are:

- The exception classes are made in C (csrc/errors.c) and documented in
  pyssh/errors.py by assignments (``SSHError.__doc__ = \"\"\"...\"\"\"``), which only
  run on import. This extension reads those assignments and gives each docstring to
  its class in the stubs (pyssh/_ssh.pyi), from which the reference renders them.
- Docstrings cross-reference with Sphinx roles (``:func:`connect```), which Markdown
  would print as they are; they become code spans.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|meth|class|exc|attr|data|mod|obj):`~?([^`]+)`")


def _doc_assignments(source: str) -> dict[str, str]:
    """``Name.__doc__ = "text"`` at the top level of a module: {Name: text}."""
    docs = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "__doc__"
            and isinstance(target.value, ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[target.value.id] = inspect.cleandoc(node.value.value)
    return docs


def _walk(obj: Any, seen: set[int]) -> Iterator[Any]:
    if id(obj) in seen or obj.is_alias:
        return
    seen.add(id(obj))
    yield obj
    for member in obj.members.values():
        yield from _walk(member, seen)


class PysshDocs(griffe.Extension):
    # (on_package: griffe 1.13 and later; mkdocstrings-python 1.18 needs no older)
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "pyssh":
            return
        errors = pkg["errors"]
        stubs = pkg["_ssh"]
        with open(errors.filepath, encoding="utf-8") as f:
            docs = _doc_assignments(f.read())
        for name, text in docs.items():
            if name in stubs.members:
                cls = stubs.members[name]
                cls.docstring = griffe.Docstring(
                    text,
                    parent=cls,
                    parser=errors.docstring.parser if errors.docstring else None,
                    parser_options=errors.docstring.parser_options if errors.docstring else None,
                )
        for obj in _walk(pkg, set()):
            if obj.docstring is not None:
                obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
