"""The small expression grammar of derived features (``features.derived[].expr``).

An expression is parsed with Python's `ast` module and checked against a whitelist; it is
never passed to ``eval``. Allowed:

- column names (``price``, ``checkout``) and ``col("a column with spaces")``;
- numbers (``2``, ``0.5``, ``1e-3``);
- ``+ - * / **``, unary ``-`` and ``+``, parentheses;
- one comparison ``< <= > >= == !=`` (true -> 1.0, false -> 0.0);
- the functions in `FUNCTIONS`, each with its number of arguments.

Anything else (attribute access, subscripts, strings outside ``col()``, keywords, other
names called as functions, lambdas, comprehensions) is refused with one sentence naming it.
The evaluation over columns lives in `tasks.data.features`.
"""

from __future__ import annotations

import ast

MAX_LENGTH = 1000

# name -> (min args, max args, what it does)
FUNCTIONS: dict[str, tuple[int, int, str]] = {
    "log": (1, 1, "natural logarithm (values <= 0 give a missing value)"),
    "log1p": (1, 1, "log(1 + x) (values <= -1 give a missing value)"),
    "log2": (1, 1, "base-2 logarithm"),
    "log10": (1, 1, "base-10 logarithm"),
    "exp": (1, 1, "e ** x"),
    "sqrt": (1, 1, "square root (negative values give a missing value)"),
    "abs": (1, 1, "absolute value"),
    "sign": (1, 1, "-1, 0 or 1"),
    "floor": (1, 1, "round down"),
    "ceil": (1, 1, "round up"),
    "round": (1, 2, "round(x) or round(x, digits)"),
    "clip": (3, 3, "clip(x, low, high)"),
    "min": (2, 8, "element-wise minimum of 2 or more arguments"),
    "max": (2, 8, "element-wise maximum of 2 or more arguments"),
    "where": (3, 3, "where(condition, if_true, if_false)"),
    "isnull": (1, 1, "1.0 where x is missing, else 0.0"),
    "fillna": (2, 2, "fillna(x, value)"),
}

BINARY_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
UNARY_OPS = {ast.USub: "-", ast.UAdd: "+"}
COMPARE_OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
               ast.NotEq: "!="}

_NODE_WORDS = {
    ast.Attribute: "attribute access (a.b)", ast.Subscript: "subscripts (a[b])",
    ast.Lambda: "lambda", ast.BoolOp: "and/or (use where() or a product of comparisons)",
    ast.IfExp: "if/else (use where(condition, a, b))", ast.List: "lists", ast.Tuple: "tuples",
    ast.Dict: "dicts", ast.Set: "sets", ast.ListComp: "comprehensions",
    ast.GeneratorExp: "comprehensions", ast.NamedExpr: "assignments (:=)",
    ast.JoinedStr: "f-strings", ast.Starred: "starred arguments",
}


class ExpressionError(ValueError):
    """An expression outside the grammar; the message says what is not allowed."""


def parse(text: str) -> ast.Expression:
    """Parse and check an expression.

    Raises:
        ExpressionError: not valid syntax, too long, or a construct outside the grammar.
    """
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("an expression must be non-empty text")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"an expression may have at most {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ExpressionError(f"not a valid expression: {err.msg} (column {err.offset})") from None
    _check(tree.body)
    return tree


def _check(node: ast.AST) -> None:
    if isinstance(node, ast.Name):
        return
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExpressionError(f"only numbers are allowed as constants, not {node.value!r} "
                                  "(a column with an unusual name is col(\"name\"))")
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in BINARY_OPS:
            raise ExpressionError(f"operator {_op_text(node.op)} is not allowed; use "
                                  + " ".join(BINARY_OPS.values()))
        _check(node.left)
        _check(node.right)
        return
    if isinstance(node, ast.UnaryOp):
        if type(node.op) not in UNARY_OPS:
            raise ExpressionError(f"operator {_op_text(node.op)} is not allowed")
        _check(node.operand)
        return
    if isinstance(node, ast.Compare):
        if len(node.ops) != 1 or type(node.ops[0]) not in COMPARE_OPS:
            raise ExpressionError("only one comparison (< <= > >= == !=) at a time is allowed")
        _check(node.left)
        _check(node.comparators[0])
        return
    if isinstance(node, ast.Call):
        _check_call(node)
        return
    word = _NODE_WORDS.get(type(node), type(node).__name__)
    raise ExpressionError(f"{word} not allowed in an expression")


def _check_call(node: ast.Call) -> None:
    if not isinstance(node.func, ast.Name):
        raise ExpressionError("only the listed functions may be called, by their plain name")
    name = node.func.id
    if node.keywords:
        raise ExpressionError(f"{name}(): keyword arguments are not allowed")
    if name == "col":
        if len(node.args) != 1 or not (isinstance(node.args[0], ast.Constant)
                                       and isinstance(node.args[0].value, str)):
            raise ExpressionError('col() takes one quoted column name: col("my column")')
        return
    if name not in FUNCTIONS:
        raise ExpressionError(f"unknown function {name!r}; allowed: "
                              + ", ".join(["col", *FUNCTIONS]))
    low, high, _ = FUNCTIONS[name]
    if not low <= len(node.args) <= high:
        n = str(low) if low == high else f"{low} to {high}"
        raise ExpressionError(f"{name}() takes {n} argument(s), got {len(node.args)}")
    for arg in node.args:
        _check(arg)


def _op_text(op: ast.AST) -> str:
    return {ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|",
            ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.Not: "not",
            ast.Invert: "~"}.get(type(op), type(op).__name__)


def columns(text: str) -> list[str]:
    """The column names an expression reads, in order of first use.

    Raises:
        ExpressionError: see `parse`.
    """
    found: dict[str, None] = {}

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "col":
                found[node.args[0].value] = None  # type: ignore[attr-defined]
                return
            for arg in node.args:
                visit(arg)
            return
        if isinstance(node, ast.Name):
            found[node.id] = None
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(parse(text).body)
    return list(found)
