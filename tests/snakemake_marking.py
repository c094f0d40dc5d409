"""Which tests start Snakemake: found at collection, enforced while they run.

1. ``calls_snakemake(func)`` reads the source of a test function, of the test-suite functions it calls
   (transitively) and of its fixtures: a call of one of the runner functions of tests/snakemake_runner.py
   makes the test a ``snakemake`` test. conftest marks it so at collection.
2. ``forbid_snakemake()`` is active around the setup, call and teardown of every test *not* marked
   ``snakemake``: any process start whose command line is Snakemake fails the test. A test that starts
   Snakemake some other way therefore fails in every tier instead of slipping into the fast one.
"""
from __future__ import annotations

import ast
import contextlib
import inspect
import os
import re
import shlex
import subprocess
import textwrap
import types
from typing import Any, Callable, Iterator

from tests import snakemake_runner

RUNNERS: tuple[Callable, ...] = (snakemake_runner.run_snakemake, snakemake_runner.run_snakemake_and_kill,
                                 snakemake_runner.snakemake_cmd)
_SEPARATORS = frozenset({";", "&", "&&", "|", "||", "(", ")", ";;"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class UnmarkedSnakemakeRun(AssertionError):
    """A test not marked ``snakemake`` tried to start Snakemake."""


def _source_tree(func: types.FunctionType) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None


def _resolve(node: ast.AST, namespace: dict[str, Any]) -> Any:
    """The object a Name or an attribute chain (``a.b.c``) refers to in ``namespace``; None if unknown."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, namespace)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def _is_test_suite_function(obj: Any) -> bool:
    return isinstance(obj, types.FunctionType) and (obj.__module__ or "").split(".")[0] == "tests"


def calls_snakemake(func: Callable, _seen: set[types.CodeType] | None = None) -> bool:
    """True when ``func``, or a test-suite function it calls (transitively), calls a runner."""
    func = inspect.unwrap(func)
    if not isinstance(func, types.FunctionType):
        return False
    if any(func is r for r in RUNNERS):
        return True
    seen = set() if _seen is None else _seen
    if func.__code__ in seen:
        return False
    seen.add(func.__code__)
    tree = _source_tree(func)
    if tree is None:
        return False
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        obj = _resolve(node.func, func.__globals__)
        if any(obj is r for r in RUNNERS):
            return True
        if _is_test_suite_function(obj) and calls_snakemake(obj, seen):
            return True
    return False


def fixture_functions(item: Any) -> list[Callable]:
    """The functions of every fixture ``item`` uses (directly or through other fixtures)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    return [fd.func for defs in info.name2fixturedefs.values() for fd in defs]


def item_starts_snakemake(item: Any) -> bool:
    """True when the test function of ``item`` or one of its fixtures calls a runner."""
    funcs = [getattr(item, "obj", None), *fixture_functions(item)]
    return any(f is not None and calls_snakemake(f) for f in funcs)


def _argv_runs_snakemake(argv: list[str]) -> bool:
    """``snakemake ...``, ``.../snakemake ...`` or ``<python> -m snakemake ...``."""
    if not argv:
        return False
    if os.path.basename(argv[0]) == "snakemake":
        return True
    return any(a == "-m" and b == "snakemake" for a, b in zip(argv, argv[1:]))


def _shell_runs_snakemake(script: str) -> bool:
    """Whether a command of a shell line (split at ; & | ( ) outside quotes) runs Snakemake."""
    lexer = shlex.shlex(script.replace("\n", ";"), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: the shell would refuse it too
        return False
    command: list[str] = []
    for token in [*tokens, ";"]:
        if token in _SEPARATORS:
            if _argv_runs_snakemake([t for t in command if not _ASSIGNMENT.match(t)]):
                return True
            command = []
        else:
            command.append(token)
    return False


def is_snakemake_command(args: Any) -> bool:
    """True for a command line (argv list, or shell string) that runs Snakemake."""
    if isinstance(args, (str, bytes, os.PathLike)):
        return _shell_runs_snakemake(os.fsdecode(args))
    argv = [os.fsdecode(a) for a in args]
    if _argv_runs_snakemake(argv):
        return True
    if argv and os.path.basename(argv[0]) in ("sh", "bash", "dash", "zsh") and "-c" in argv[1:-1]:
        return _shell_runs_snakemake(argv[argv.index("-c") + 1])
    return False


@contextlib.contextmanager
def forbid_snakemake(test_id: str) -> Iterator[None]:
    """Within the block, starting a Snakemake process raises UnmarkedSnakemakeRun (naming ``test_id``)."""
    original = subprocess.Popen

    class _Guarded(original):  # type: ignore[misc, valid-type]
        def __init__(self, args, *a, **kw):
            if is_snakemake_command(args):
                raise UnmarkedSnakemakeRun(
                    f"{test_id} starts Snakemake but is not marked `snakemake`: start it through "
                    "tests/snakemake_runner.py (found automatically) or mark the test @pytest.mark.snakemake")
            super().__init__(args, *a, **kw)

    subprocess.Popen = _Guarded
    try:
        yield
    finally:
        subprocess.Popen = original
