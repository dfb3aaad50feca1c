"""Size rules of the package, checked on the source: a module holds one idea (at most
:data:`MAX_MODULE_LINES` lines of code), a function does one job (a body of at most
:data:`MAX_BODY_LINES` lines after its docstring, at most :data:`MAX_PARAMETERS` parameters).
Typer commands (their options are parameters) and ``deeprestore.restore`` (the public API's
one call) are exempt from the parameter count."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "deeprestore"
MAX_MODULE_LINES = 300
MAX_BODY_LINES = 60
MAX_PARAMETERS = 8
#: functions allowed more parameters: the public API's one call
MANY_PARAMETERS = {("api.py", "restore")}

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def code_lines(source: str) -> int:
    """Lines of ``source`` holding code: blank lines, comments and docstrings not counted."""
    skipped = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
               tokenize.DEDENT, tokenize.ENDMARKER}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skipped:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - _docstring_lines(ast.parse(source)))


def body_lines(function: Function) -> int:
    """Lines of ``function``'s body after its docstring (first to last statement)."""
    body = function.body
    first = body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        body = body[1:]
    if not body:
        return 0
    return (body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1


def parameters(function: Function) -> int:
    """``function``'s parameters (``self`` / ``cls`` not counted)."""
    args = function.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    extra = (args.vararg is not None) + (args.kwarg is not None)
    return len(names) + extra - (1 if names and names[0] in ("self", "cls") else 0)


def _is_typer_command(function: Function) -> bool:
    return any("command" in ast.unparse(d) or "callback" in ast.unparse(d)
               for d in function.decorator_list)


MODULES = sorted(PACKAGE.rglob("*.py"))


def _functions(path: Path) -> list[Function]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_counters_count_what_they_say() -> None:
    source = '"""doc."""\n\n# comment\nimport os\n\n\ndef f(a, b, *c, d, **e):\n' \
             '    """Doc\n    on two lines."""\n    x = 1\n\n    return x\n'
    assert code_lines(source) == 4  # import, def, x =, return
    function = ast.parse(source).body[2]
    assert isinstance(function, ast.FunctionDef)
    assert body_lines(function) == 3 and parameters(function) == 5


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_holds_one_idea(path: Path) -> None:
    lines = code_lines(path.read_text())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines of code"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_function_does_one_job(path: Path) -> None:
    relative = str(path.relative_to(PACKAGE))
    too_long, too_many = [], []
    for function in _functions(path):
        if body_lines(function) > MAX_BODY_LINES and not _is_typer_command(function):
            too_long.append(f"{function.name} ({body_lines(function)} lines)")
        if (parameters(function) > MAX_PARAMETERS and not _is_typer_command(function)
                and (relative, function.name) not in MANY_PARAMETERS):
            too_many.append(f"{function.name} ({parameters(function)} parameters)")
    assert not too_long and not too_many, f"{relative}: {too_long + too_many}"
