"""The filter expression grammar: what parses, what is refused and where the error points."""
import pytest

from services.rules.language import (
    BoolOp, Comparison, ExpressionError, Membership, Not, Param, ValueType, parse,
)


def error_of(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    return caught.value


def test_personalize_style_expression_with_parameters():
    expr = parse('EXCLUDE ItemID WHERE Items.price > $max AND Items.brand IN ($brands) '
                 '| EXCLUDE ItemID WHERE Interactions.type IN ("purchase")')
    first, second = expr.clauses
    assert not first.include and not second.include
    assert first.condition == BoolOp("and", (Comparison("price", ">", Param("max", 1, 36)),
                                             Membership("items", "brand", (Param("brands", 1, 61),), False)))
    assert second.condition == Membership("interactions", "type", ("purchase",), False)
    assert expr.parameters == {"max": (ValueType.NUMBER, False), "brands": (ValueType.STRING, True)}


def test_keywords_are_case_insensitive_and_precedence_is_not_and_or():
    expr = parse('include itemid where not Items.category = "a" or Items.in_stock = TRUE and Items.price <= 3')
    cond = expr.clauses[0].condition
    assert isinstance(cond, BoolOp) and cond.op == "or"
    assert isinstance(cond.operands[0], Not)
    assert cond.operands[1].op == "and"


def test_not_in_and_parentheses():
    cond = parse('EXCLUDE ItemID WHERE (Items.brand NOT IN ("x", "y"))').clauses[0].condition
    assert cond == Membership("items", "brand", ("x", "y"), True)


def test_string_escapes():
    cond = parse(r'EXCLUDE ItemID WHERE Items.brand = "say \"hi\""').clauses[0].condition
    assert cond.value == 'say "hi"'


@pytest.mark.parametrize("text, line, column, words", [
    ("EXCLUDE ItemID WHERE Items.prize > 3", 1, 28, "unknown field Items.prize"),
    ('EXCLUDE ItemID WHERE Items.price > "x"', 1, 36, "expected a number"),
    ("EXCLUDE ItemID WHERE", 1, 21, "ends too early"),
    ("INCLUDE ItemID WHERE Items.brand < 3", 1, 34, "needs a number field"),
    ('EXCLUDE ItemID WHERE Items.brand IN ("a" "b")', 1, 42, "unexpected"),
    ('EXCLUDE ItemID WHERE Interactions.type IN ("buy")', 1, 44, "Interactions.type is one of"),
    ("EXCLUDE ItemID WHERE Interactions.type = 3", 1, 22, "takes IN"),
    ("EXCLUDE ItemID WHERE Items.price > 3 @", 1, 38, "unexpected character '@'"),
    ("DROP ItemID WHERE Items.price > 3", 1, 1, "INCLUDE or EXCLUDE"),
    ("EXCLUDE ItemID WHERE Items.price > $p AND Items.brand = $p", 1, 57, "used as a number and as a string"),
    ("EXCLUDE ItemID WHERE Items.price > 1\n  AND Items.colour = 2", 2, 13, "Items.colour"),
])
def test_errors_point_at_the_offending_position(text, line, column, words):
    err = error_of(text)
    assert (err.line, err.column) == (line, column), err.message
    assert words in err.message
    assert err.message.startswith(f"line {line}, column {column}: ")


def test_empty_and_oversized_expressions_are_refused():
    assert "empty" in error_of("   ").message
    assert "at most" in error_of("EXCLUDE ItemID WHERE " + " AND ".join(['Items.brand = "x"'] * 300)).message


class TestBind:
    expr = parse('EXCLUDE ItemID WHERE Items.price > $max AND Items.brand IN ($brands) '
                 '| INCLUDE ItemID WHERE Items.in_stock = $stock | EXCLUDE ItemID WHERE Interactions.type IN ($kinds)')

    def bind_error(self, params) -> str:
        with pytest.raises(ExpressionError) as caught:
            self.expr.bind(params)
        return caught.value.message

    def test_parameters_of_the_right_types_bind(self):
        bound = self.expr.bind({"max": 10, "brands": ["a", "b"], "stock": True, "kinds": "PURCHASE"})
        assert bound.values == {"max": (10.0,), "brands": ("a", "b"), "stock": (True,), "kinds": ("purchase",)}

    def test_missing_parameters_are_named(self):
        assert self.bind_error({"max": 1}) == "missing parameter(s) $brands, $kinds, $stock"

    def test_unknown_parameters_are_refused(self):
        assert "unknown parameter(s) $maxx" in self.bind_error(
            {"maxx": 1, "max": 1, "brands": [], "stock": True, "kinds": []})

    @pytest.mark.parametrize("params, words", [
        ({"max": "10"}, "$max must be a finite number"),
        ({"max": True}, "$max must be a finite number"),
        ({"max": float("nan")}, "$max must be a finite number"),
        ({"max": [1, 2]}, "$max takes one number, got a list of 2"),
        ({"brands": [1]}, "$brands must be a string"),
        ({"stock": "yes"}, "$stock must be true or false"),
        ({"kinds": ["buy"]}, "'buy' is not an interaction type"),
    ])
    def test_wrong_types_are_refused(self, params, words):
        full = {"max": 1, "brands": ["a"], "stock": True, "kinds": ["view"], **params}
        assert words in self.bind_error(full)
