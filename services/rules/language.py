"""The filter expression language: parsed once when an expression is registered, bound to
per-request parameters, evaluated as numpy masks over the catalog (``evaluate.py``).

In the spirit of Amazon Personalize's filter expressions::

    EXCLUDE ItemID WHERE Items.price > $max_price AND Items.brand IN ($brands)
    | EXCLUDE ItemID WHERE Interactions.type IN ("purchase")
    | INCLUDE ItemID WHERE Items.category IN ("Skin Care", "Hair Care") OR Items.in_stock = true

Clauses are joined by ``|`` and all apply: an item is eligible when it matches every
INCLUDE clause and no EXCLUDE clause. Keywords are case-insensitive; strings are
double-quoted; ``$name`` is a parameter supplied with each request. The grammar is
lark's (a maintained parser); errors carry the line and column they point at.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Union

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from services.common.errors import InvalidArgument

MAX_EXPRESSION_CHARS = 4096
MAX_LIST_VALUES = 1000

_GRAMMAR = r"""
?start: expression
expression: clause ("|" clause)*
clause: ACTION ITEMID WHERE condition
?condition: or_cond
?or_cond: and_cond (OR and_cond)*
?and_cond: not_cond (AND not_cond)*
?not_cond: NOT not_cond -> negation
         | atom
?atom: comparison
     | membership
     | "(" condition ")"
comparison: field COMPARATOR value
membership: field NOT? IN "(" value ("," value)* ")"
field: SOURCE "." NAME
?value: STRING -> string
      | SIGNED_NUMBER -> number
      | TRUE -> true
      | FALSE -> false
      | PARAM -> param

ACTION.2: /(include|exclude)\b/i
ITEMID.2: /itemid\b/i
WHERE.2: /where\b/i
AND.2: /and\b/i
OR.2: /or\b/i
NOT.2: /not\b/i
IN.2: /in\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i
SOURCE.2: /(items|interactions)\b/i
COMPARATOR: "<=" | ">=" | "!=" | "=" | "<" | ">"
PARAM: "$" NAME
NAME: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /"(?:[^"\\]|\\.)*"/
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
"""

_PARSER = Lark(_GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)


class ValueType(str, Enum):
    STRING = "string"
    NUMBER = "number"
    BOOL = "bool"


# Items.<field>: its type. Interactions.type: which of the user's interactions.
ITEM_FIELDS: dict[str, ValueType] = {
    "item_id": ValueType.STRING,
    "category": ValueType.STRING,
    "brand": ValueType.STRING,
    "price": ValueType.NUMBER,
    "in_stock": ValueType.BOOL,
}
INTERACTION_TYPES = ("view", "click", "add_to_cart", "purchase")


class ExpressionError(InvalidArgument):
    """A filter expression or its parameters are wrong; the message says where and why."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Param:
    name: str
    line: int
    column: int


Value = Union[str, float, bool, Param]


@dataclass(frozen=True)
class Comparison:
    field: str  # an ITEM_FIELDS key
    op: str  # one of = != < <= > >=
    value: Value


@dataclass(frozen=True)
class Membership:
    source: str  # "items" or "interactions"
    field: str
    values: tuple[Value, ...]
    negated: bool


@dataclass(frozen=True)
class Not:
    operand: "Condition"


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" / "or"
    operands: tuple["Condition", ...]


Condition = Union[Comparison, Membership, Not, BoolOp]


@dataclass(frozen=True)
class Clause:
    include: bool
    condition: Condition


@dataclass(frozen=True)
class Expression:
    """A parsed, type-checked expression; ``parameters`` maps each ``$name`` to its type and
    whether it stands for a list (inside ``IN (...)``)."""

    text: str
    clauses: tuple[Clause, ...]
    parameters: Mapping[str, tuple[ValueType, bool]]
    # Parameters that stand for Interactions.type values (checked against INTERACTION_TYPES).
    interaction_params: frozenset[str] = frozenset()

    def bind(self, params: Mapping[str, Any] | None) -> "BoundExpression":
        """Check ``params`` against the expression's parameters: every one supplied, of its type,
        no unknown ones. A list parameter takes a list (or one value); a scalar one, one value."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise ExpressionError(f"unknown parameter(s) {', '.join('$' + n for n in unknown)}; "
                                  f"the expression takes {_names(self.parameters) or 'none'}")
        missing = sorted(set(self.parameters) - set(params))
        if missing:
            raise ExpressionError(f"missing parameter(s) {', '.join('$' + n for n in missing)}")
        bound: dict[str, tuple] = {}
        for name, (vtype, is_list) in self.parameters.items():
            raw = params[name]
            values = raw if isinstance(raw, (list, tuple)) else [raw]
            if not is_list and len(values) != 1:
                raise ExpressionError(f"parameter ${name} takes one {vtype.value}, got a list of {len(values)}")
            if len(values) > MAX_LIST_VALUES:
                raise ExpressionError(f"parameter ${name} has {len(values)} values, at most {MAX_LIST_VALUES}")
            bound[name] = tuple(_coerce(v, vtype, f"parameter ${name}") for v in values)
            if name in self.interaction_params:
                bad = [v for v in bound[name] if v.lower() not in INTERACTION_TYPES]
                if bad:
                    raise ExpressionError(f"parameter ${name}: {bad[0]!r} is not an interaction type "
                                          f"({', '.join(INTERACTION_TYPES)})")
                bound[name] = tuple(v.lower() for v in bound[name])
        return BoundExpression(self, bound)


@dataclass(frozen=True)
class BoundExpression:
    expression: Expression
    values: Mapping[str, tuple]

    def resolve(self, value: Value) -> tuple:
        """The concrete values a literal or parameter stands for."""
        return self.values[value.name] if isinstance(value, Param) else (value,)


def _names(parameters: Mapping[str, Any]) -> str:
    return ", ".join("$" + n for n in sorted(parameters))


def _coerce(value: Any, vtype: ValueType, what: str):
    if vtype is ValueType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ExpressionError(f"{what} must be a finite number, got {value!r}")
        return float(value)
    if vtype is ValueType.BOOL:
        if not isinstance(value, bool):
            raise ExpressionError(f"{what} must be true or false, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ExpressionError(f"{what} must be a string, got {value!r}")
    return value


def parse(text: str) -> Expression:
    """Parse and type-check ``text``; raises ExpressionError pointing at the offending position."""
    if not text or not text.strip():
        raise ExpressionError("the expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"the expression is {len(text)} characters, at most {MAX_EXPRESSION_CHARS}")
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as exc:
        line, column = exc.line, exc.column
        if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
            line, column = text.count("\n") + 1, len(text) - text.rfind("\n")  # just past the end
        raise ExpressionError(_syntax_message(exc, text), line, column) from None
    builder = _Builder()
    try:
        clauses = builder.transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, ExpressionError):
            raise exc.orig_exc from None
        raise
    return Expression(text=text, clauses=tuple(clauses), parameters=dict(builder.parameters),
                      interaction_params=frozenset(builder.interaction_params))


def _syntax_message(exc: UnexpectedInput, text: str) -> str:
    if isinstance(exc, UnexpectedEOF):
        return "the expression ends too early"
    if isinstance(exc, UnexpectedCharacters):
        return f"unexpected character {text[exc.pos_in_stream]!r}"
    if isinstance(exc, UnexpectedToken):
        expected = ", ".join(sorted(_describe(t) for t in exc.expected))
        if exc.token.type == "$END":
            return f"the expression ends too early; expected {expected}"
        return f"unexpected {str(exc.token)!r}; expected {expected}"
    return str(exc)


_TOKEN_NAMES = {
    "ACTION": "INCLUDE or EXCLUDE", "ITEMID": "ItemID", "WHERE": "WHERE", "AND": "AND", "OR": "OR",
    "NOT": "NOT", "IN": "IN", "SOURCE": "Items or Interactions", "COMPARATOR": "a comparison",
    "STRING": "a string", "SIGNED_NUMBER": "a number", "PARAM": "a $parameter", "TRUE": "true",
    "FALSE": "false", "NAME": "a field name", "LPAR": "'('", "RPAR": "')'", "COMMA": "','",
    "DOT": "'.'", "VBAR": "'|'", "$END": "the end",
}


def _describe(token_type: str) -> str:
    return _TOKEN_NAMES.get(token_type, token_type)


@v_args(inline=True)
class _Builder(Transformer):
    """Tree -> dataclasses, checking fields, operators and literal types as it goes."""

    def __init__(self) -> None:
        super().__init__()
        self.parameters: dict[str, tuple[ValueType, bool]] = {}
        self.interaction_params: set[str] = set()

    def expression(self, *clauses):
        return list(clauses)

    def clause(self, action, _itemid, _where, condition):
        return Clause(include=action.lower() == "include", condition=condition)

    def or_cond(self, *parts):
        return BoolOp("or", tuple(p for p in parts if not isinstance(p, Token)))

    def and_cond(self, *parts):
        return BoolOp("and", tuple(p for p in parts if not isinstance(p, Token)))

    def negation(self, _not, operand):
        return Not(operand)

    def field(self, source, name):
        source_l, name_l = source.lower(), name.lower()
        if source_l == "items":
            if name_l not in ITEM_FIELDS:
                raise ExpressionError(f"unknown field Items.{name}; known: "
                                      + ", ".join("Items." + f for f in ITEM_FIELDS), name.line, name.column)
        elif name_l not in ("type", "event_type"):
            raise ExpressionError(f"unknown field Interactions.{name}; known: Interactions.type",
                                  name.line, name.column)
        return (source_l, "type" if source_l == "interactions" else name_l, source)

    def string(self, token):
        return (_unquote(token), token)

    def number(self, token):
        return (float(token), token)

    def true(self, token):
        return (True, token)

    def false(self, token):
        return (False, token)

    def param(self, token):
        return (Param(str(token)[1:], token.line, token.column), token)

    def comparison(self, field, comparator, value):
        source, name, at = field
        if source == "interactions":
            raise ExpressionError("Interactions.type takes IN (...) or NOT IN (...), not a comparison",
                                  at.line, at.column)
        vtype = ITEM_FIELDS[name]
        op = str(comparator)
        if op in ("<", "<=", ">", ">=") and vtype is not ValueType.NUMBER:
            raise ExpressionError(f"{op} needs a number field; Items.{name} is a {vtype.value}",
                                  comparator.line, comparator.column)
        return Comparison(name, op, self._typed(value, vtype, is_list=False))

    def membership(self, field, *rest):
        source, name, at = field
        parts = [p for p in rest if not (isinstance(p, Token) and p.type in ("NOT", "IN"))]
        negated = any(isinstance(p, Token) and p.type == "NOT" for p in rest)
        if source == "interactions":
            values = []
            for value, token in parts:
                if isinstance(value, Param):
                    values.append(self._typed((value, token), ValueType.STRING, is_list=True))
                    self.interaction_params.add(value.name)
                    continue
                if not isinstance(value, str) or value.lower() not in INTERACTION_TYPES:
                    raise ExpressionError(f"Interactions.type is one of {', '.join(INTERACTION_TYPES)}; "
                                          f"got {str(token)}", token.line, token.column)
                values.append(value.lower())
            return Membership("interactions", "type", tuple(values), negated)
        vtype = ITEM_FIELDS[name]
        return Membership("items", name, tuple(self._typed(p, vtype, is_list=True) for p in parts), negated)

    def _typed(self, value_token, vtype: ValueType, is_list: bool) -> Value:
        value, token = value_token
        if isinstance(value, Param):
            seen = self.parameters.get(value.name)
            if seen is not None and seen[0] is not vtype:
                raise ExpressionError(f"parameter ${value.name} is used as a {seen[0].value} and as a {vtype.value}",
                                      token.line, token.column)
            self.parameters[value.name] = (vtype, is_list or (seen[1] if seen else False))
            return value
        ok = {ValueType.STRING: isinstance(value, str),
              ValueType.NUMBER: isinstance(value, float),
              ValueType.BOOL: isinstance(value, bool)}[vtype]
        if not ok:
            raise ExpressionError(f"expected a {vtype.value}, got {str(token)}", token.line, token.column)
        return value


def _unquote(token: str) -> str:
    body = token[1:-1]
    return body.replace('\\"', '"').replace("\\\\", "\\")
