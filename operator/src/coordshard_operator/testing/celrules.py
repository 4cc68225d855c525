"""The CEL validation rules the API-server double evaluates, and nothing else.

Owns ``rule_errors`` (the messages of the ``x-kubernetes-validations`` a
value fails, walking the schema as kube-apiserver does) and
``unknown_rules`` (the rules of a schema this module cannot evaluate). Why
not a CEL interpreter: the double must refuse what the real server refuses
for *our* CRD, and the few rule shapes it uses are matched exactly; a CRD
with any other rule is refused at registration (``unknown_rules``), so a new
rule cannot pass the double unchecked. Each shape is checked against the real
kube-apiserver by tests/integration/kube/test_crd_validation.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["rule_errors", "unknown_rules"]

Obj = dict[str, Any]
Check = Callable[[Any, Any], bool]
"""(self, oldSelf) -> the rule holds; oldSelf is None on create."""

_IMMUTABLE = re.compile(r"^self\s*==\s*oldSelf$")
_NAME_SIZE = re.compile(r"^self\.metadata\.name\.size\(\)\s*<=\s*(\d+)$")
_ALL_KEYS_MATCH = re.compile(r"""^self\.all\((\w+),\s*\1\.matches\('([^']*)'\)\)$""")


def _compile(rule: str) -> tuple[Check, bool] | None:
    """The rule as a check, and whether it is a transition rule (needs oldSelf)."""
    if _IMMUTABLE.match(rule):
        return (lambda new, old: new == old), True
    if m := _NAME_SIZE.match(rule):
        limit = int(m.group(1))
        return (lambda new, _: len((new.get("metadata") or {}).get("name", "")) <= limit), False
    if m := _ALL_KEYS_MATCH.match(rule):
        pattern = re.compile(m.group(2))  # CEL matches() is RE2 search, like re.search
        return (lambda new, _: all(pattern.search(k) for k in new)), False
    return None


def _rules(schema: Obj) -> list[Obj]:
    return list(schema.get("x-kubernetes-validations") or [])


def unknown_rules(schema: Obj) -> Iterator[str]:
    """Every rule in ``schema`` (at any depth) that ``rule_errors`` cannot evaluate."""
    for rule in _rules(schema):
        if _compile(rule.get("rule", "").strip()) is None:
            yield rule.get("rule", "")
    for sub in (schema.get("properties") or {}).values():
        yield from unknown_rules(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from unknown_rules(schema[key])


def rule_errors(schema: Obj, new: Any, old: Any, path: str = "<nil>") -> Iterator[str]:
    """ "path: Invalid value: message" for each rule ``new`` fails (``old``: the stored
    value on update, None on create; transition rules run only when both exist)."""
    for rule in _rules(schema):
        compiled = _compile(rule.get("rule", "").strip())
        if compiled is None or new is None:
            continue
        check, transition = compiled
        if transition and old is None:
            continue
        if not check(new, old):
            yield f"{path}: Invalid value: {rule.get('message') or rule['rule']}"
    if isinstance(new, dict):
        olds = old if isinstance(old, dict) else {}
        prefix = "" if path == "<nil>" else f"{path}."
        for key, sub in (schema.get("properties") or {}).items():
            yield from rule_errors(sub, new.get(key), olds.get(key), f"{prefix}{key}")
