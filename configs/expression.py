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

`evaluate` computes a checked expression over columns given as float arrays (numbers) or
datetime Series (dates); `tasks.data.features.Expression` applies it to a table. numpy and
pandas are imported at the first evaluation, so loading a config does not import them.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

MAX_LENGTH = 1000


class _Lazy:
    """A module imported at its first use."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


np: Any = _Lazy("numpy")
pd: Any = _Lazy("pandas")


class EvaluationError(ValueError):
    """An expression of the grammar that cannot be computed over these columns (a column it
    names is missing, or dates are combined with numbers)."""


def where_above(x: Any, bound: float, inclusive: bool = False) -> Any:
    """`x` where it is above `bound` (or equal, with `inclusive`), else NaN."""
    ok = x >= bound if inclusive else x > bound
    return np.where(ok, x, np.nan)


def _round(x: Any, digits: Any = 0) -> Any:
    d = np.asarray(digits)
    if d.ndim:
        raise EvaluationError("round(x, digits): digits must be a number, not a column")
    return np.round(x, int(d))


def _min(*args: Any) -> Any:
    out = args[0]
    for a in args[1:]:
        out = np.minimum(out, a)
    return out


def _max(*args: Any) -> Any:
    out = args[0]
    for a in args[1:]:
        out = np.maximum(out, a)
    return out


def _where(cond: Any, a: Any, b: Any) -> Any:
    cond = np.asarray(cond, dtype="float64")
    return np.where(np.isnan(cond), np.nan, np.where(cond != 0, a, b))


class Function(NamedTuple):
    """A function of the grammar: how many arguments it takes, what it does (one line) and
    its implementation over float arrays."""

    low: int
    high: int
    description: str
    apply: Callable[..., Any]


FUNCTIONS: dict[str, Function] = {
    "log": Function(1, 1, "natural logarithm (values <= 0 give a missing value)",
                    lambda x: np.log(where_above(x, 0))),
    "log1p": Function(1, 1, "log(1 + x) (values <= -1 give a missing value)",
                      lambda x: np.log1p(where_above(x, -1))),
    "log2": Function(1, 1, "base-2 logarithm", lambda x: np.log2(where_above(x, 0))),
    "log10": Function(1, 1, "base-10 logarithm", lambda x: np.log10(where_above(x, 0))),
    "exp": Function(1, 1, "e ** x", lambda x: np.exp(x)),
    "sqrt": Function(1, 1, "square root (negative values give a missing value)",
                     lambda x: np.sqrt(where_above(x, 0, inclusive=True))),
    "abs": Function(1, 1, "absolute value", lambda x: np.abs(x)),
    "sign": Function(1, 1, "-1, 0 or 1", lambda x: np.sign(x)),
    "floor": Function(1, 1, "round down", lambda x: np.floor(x)),
    "ceil": Function(1, 1, "round up", lambda x: np.ceil(x)),
    "round": Function(1, 2, "round(x) or round(x, digits)", _round),
    "clip": Function(3, 3, "clip(x, low, high)", lambda x, lo, hi: np.clip(x, lo, hi)),
    "min": Function(2, 8, "element-wise minimum of 2 or more arguments", _min),
    "max": Function(2, 8, "element-wise maximum of 2 or more arguments", _max),
    "where": Function(3, 3, "where(condition, if_true, if_false)", _where),
    "isnull": Function(1, 1, "1.0 where x is missing, else 0.0",
                       lambda x: np.isnan(x).astype("float64")),
    "fillna": Function(2, 2, "fillna(x, value)", lambda x, v: np.where(np.isnan(x), v, x)),
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
    low, high = FUNCTIONS[name].low, FUNCTIONS[name].high
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


def pair(a: Any, b: Any, op: str) -> Any:
    """a - b, a / b ... of two values that may be dates (a Series) or numbers (arrays).

    Raises:
        EvaluationError: a date combined with a number, or dates with an operator other than
            ``-`` and the comparisons.
    """
    dates = isinstance(a, pd.Series), isinstance(b, pd.Series)
    if any(dates):
        if not all(dates):
            raise EvaluationError("a date can only be combined with another date")
        if op == "-":
            return ((a - b).dt.total_seconds() / 86400.0).to_numpy(dtype="float64")
        if op in {"<", "<=", ">", ">=", "==", "!="}:
            both = (a.notna() & b.notna()).to_numpy()
            return np.where(both, _compare(a.to_numpy(), b.to_numpy(), op), np.nan)
        raise EvaluationError(f"dates can be subtracted (giving days) or compared, not combined "
                              f"with {op!r}")
    with np.errstate(all="ignore"):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return np.divide(a, np.where(b == 0, np.nan, b))
        if op == "**":
            return np.power(a, b)
        both = ~(np.isnan(a) | np.isnan(b))
        return np.where(both, _compare(a, b, op), np.nan)


def _compare(a: Any, b: Any, op: str) -> Any:
    fn = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
          "==": np.equal, "!=": np.not_equal}[op]
    return fn(a, b).astype("float64")


def evaluate(text: str, values: dict[str, Any]) -> Any:
    """Evaluate an expression of the grammar over columns given as float arrays (numbers) or
    datetime Series (dates). Never calls ``eval``.

    Raises:
        ExpressionError: the text is outside the grammar.
        EvaluationError: a column it names is missing, or dates are combined with numbers.
    """
    tree = parse(text)

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Name):
            return column(node.id)
        if isinstance(node, ast.Constant):
            return np.float64(node.value)
        if isinstance(node, ast.BinOp):
            return pair(ev(node.left), ev(node.right), BINARY_OPS[type(node.op)])
        if isinstance(node, ast.UnaryOp):
            value = ev(node.operand)
            if isinstance(value, pd.Series):
                raise EvaluationError("a date cannot be negated")
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Compare):
            return pair(ev(node.left), ev(node.comparators[0]), COMPARE_OPS[type(node.ops[0])])
        if isinstance(node, ast.Call):
            name = node.func.id  # type: ignore[attr-defined]
            if name == "col":
                return column(node.args[0].value)  # type: ignore[attr-defined]
            args = [ev(a) for a in node.args]
            if any(isinstance(a, pd.Series) for a in args):
                raise EvaluationError(f"{name}() takes numbers, not dates (subtract two dates to "
                                      "get days)")
            with np.errstate(all="ignore"):
                return FUNCTIONS[name].apply(*args)
        raise ExpressionError(f"{type(node).__name__} not allowed")  # parse() refused it

    def column(name: str) -> Any:
        if name not in values:
            raise EvaluationError(f"column {name!r} is not in the data")
        return values[name]

    return ev(tree.body)
