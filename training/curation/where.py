"""``--where`` expressions over CSV columns, e.g. ``motion > 2 and ocr_area < 0.02``.

Parsed with Python's ``ast`` and evaluated by the small interpreter below; nothing is ever passed
to eval(). Allowed: column names, numbers, 'strings', comparisons (chains too, ``in (...)``),
``and`` / ``or`` / ``not``, ``+ - * /`` and parentheses. A cell that holds a number compares as one;
an empty cell is missing, and any comparison with a missing value is false (the row is dropped).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Sequence

from opensora.errors import UserError, listing
from training.curation.table import Row

_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_ALLOWED = "column names, numbers, 'strings', < <= > >= == != in, and or not, + - * /, parentheses"

Value = float | str | None


class _Missing(Exception):
    """A missing cell inside arithmetic: the whole comparison is false."""


def compile_where(text: str, columns: Sequence[str]) -> Callable[[Row], bool]:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise UserError(f"--where {text!r} is not a valid expression ({e.msg}); allowed: {_ALLOWED}") from None
    _check(tree.body, text, set(columns))
    return lambda row: bool(_evaluate(tree.body, row, text))


def _check(node: ast.AST, text: str, columns: set[str]) -> None:
    allowed = (ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.Compare, ast.BinOp,
               ast.Name, ast.Load, ast.Constant, ast.Tuple, ast.List, ast.In, ast.NotIn, *_COMPARE, *_ARITHMETIC)
    for child in ast.walk(node):
        if not isinstance(child, allowed):
            raise UserError(f"--where {text!r}: {type(child).__name__} is not allowed; allowed: {_ALLOWED}")
        bad_constant = isinstance(child, ast.Constant) and (
            isinstance(child.value, bool) or not isinstance(child.value, (int, float, str)))
        if bad_constant:
            raise UserError(f"--where {text!r}: {child.value!r} is not allowed; use numbers or 'strings'")
        if isinstance(child, ast.Name) and child.id not in columns:
            raise UserError(f"--where {text!r}: no column {child.id!r}; the CSV has {listing(sorted(columns), 40)}")


def _cell(row: Row, name: str) -> Value:
    text = (row.get(name) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else None


def _evaluate(node: ast.AST, row: Row, text: str):
    if isinstance(node, ast.BoolOp):
        values = (_evaluate(v, row, text) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _evaluate(node.operand, row, text)
    if isinstance(node, ast.Compare):
        try:
            return _compare(node, row, text)
        except _Missing:
            return False
    return _value(node, row, text)


def _value(node: ast.AST, row: Row, text: str):
    if isinstance(node, ast.Constant):
        return float(node.value) if isinstance(node.value, int) else node.value
    if isinstance(node, ast.Name):
        return _cell(row, node.id)
    if isinstance(node, (ast.Tuple, ast.List)):
        return [_value(e, row, text) for e in node.elts]
    if isinstance(node, ast.UnaryOp):  # + / - (not is handled by _evaluate)
        value = _number(_value(node.operand, row, text), node.operand, text)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left = _number(_value(node.left, row, text), node.left, text)
        right = _number(_value(node.right, row, text), node.right, text)
        if isinstance(node.op, ast.Div) and right == 0:
            raise _Missing
        return _ARITHMETIC[type(node.op)](left, right)
    return _evaluate(node, row, text)  # a comparison or boolean inside parentheses


def _number(value, node: ast.AST, text: str) -> float:
    if value is None:
        raise _Missing
    if not isinstance(value, float):
        raise UserError(f"--where {text!r}: {ast.unparse(node)} is {value!r}, not a number")
    return value


def _compare(node: ast.Compare, row: Row, text: str) -> bool:
    left = _value(node.left, row, text)
    for op, right_node in zip(node.ops, node.comparators):
        right = _value(right_node, row, text)
        if left is None or right is None:
            raise _Missing
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, list):
                raise UserError(f"--where {text!r}: 'in' needs a list like ('h264', 'hevc')")
            result = (left in right) == isinstance(op, ast.In)
        else:
            if isinstance(left, str) != isinstance(right, str):
                raise UserError(f"--where {text!r}: cannot compare {left!r} with {right!r} "
                                f"({ast.unparse(node)}); a number and a string never compare")
            result = _COMPARE[type(op)](left, right)
        if not result:
            return False
        left = right
    return True
