"""No case-workflow method resolves to a mixin's placeholder.

The case workflow is CaseWorkflow plus mixins (workflows/case_*.py). A mixin that declares a method another
class provides, with a body that raises NotImplementedError, is harmless only while the provider comes
first in the MRO: CaseWorkflow itself always does, but a stub for a method of a mixin listed after it
silently replaces that method (a handler that raises at run time, on one path only).
"""

from __future__ import annotations

import ast
import inspect
import textwrap

from workflows.case import CaseWorkflow


def _is_placeholder(fn: object) -> bool:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.FunctionDef | ast.AsyncFunctionDef) else []
    stmts = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    return len(stmts) == 1 and isinstance(stmts[0], ast.Raise) and "NotImplementedError" in ast.unparse(stmts[0])


def test_every_method_of_the_case_workflow_is_a_real_one() -> None:
    placeholders = {name: getattr(CaseWorkflow, name).__qualname__ for name in dir(CaseWorkflow)
                    if callable(getattr(CaseWorkflow, name, None)) and _is_placeholder(getattr(CaseWorkflow, name))}
    assert not placeholders, f"resolved to a mixin's placeholder (use an annotation instead): {placeholders}"


def test_the_check_sees_a_placeholder_that_shadows() -> None:
    class Provider:
        def work(self) -> str:
            return "done"

    class Placeholder:
        def work(self) -> str:
            raise NotImplementedError

    class Shadowed(Placeholder, Provider):
        pass

    assert _is_placeholder(Shadowed.work) and not _is_placeholder(Provider.work)
