"""Fields grouped by response key, as graphql-core's collect_fields groups them, for one set of @skip/@include
decisions.

graphql-core collects a selection set each time it completes an object (memoised per list of field nodes);
a plan collects it once, when it is built, for every value of the variables its directives read
(``Conditions``). The order of the keys (first appearance), the field nodes of a key, fragments visited once
per collection and type conditions are graphql-core's (graphql/execution/collect_fields.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from graphql import (
    BooleanValueNode,
    DirectiveNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLIncludeDirective,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    SelectionSetNode,
    VariableNode,
    is_abstract_type,
    type_from_ast,
)

SKIP = GraphQLSkipDirective.name
INCLUDE = GraphQLIncludeDirective.name

Grouped = dict[str, list[FieldNode]]


class Unsupported(Exception):
    """The operation uses something plans do not run: graphql-core runs it, as before."""


@dataclass
class Conditions:
    """The @skip/@include directives whose ``if`` is a variable, in document order; a plan is built for each set
    of their values a request brings (``Decisions``)."""

    directives: list[DirectiveNode] = field(default_factory=list)

    def find(self, selection_set: SelectionSetNode, fragments: Mapping[str, FragmentDefinitionNode]) -> None:
        seen: set[str] = set()
        self._walk(selection_set, fragments, seen)

    def _walk(
        self, selection_set: SelectionSetNode, fragments: Mapping[str, FragmentDefinitionNode], seen: set[str]
    ) -> None:
        for selection in selection_set.selections:
            for directive in selection.directives or ():
                name = directive.name.value
                if name not in (SKIP, INCLUDE):
                    raise Unsupported(f"directive @{name}")
                if isinstance(_if_argument(directive), VariableNode):
                    self.directives.append(directive)
            if isinstance(selection, FieldNode):
                if selection.selection_set is not None:
                    self._walk(selection.selection_set, fragments, seen)
            elif isinstance(selection, InlineFragmentNode):
                self._walk(selection.selection_set, fragments, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in seen:
                    continue
                seen.add(name)
                fragment = fragments.get(name)
                if fragment is None:
                    raise Unsupported(f"unknown fragment {name}")
                if fragment.variable_definitions:
                    raise Unsupported("fragment variables")
                if fragment.directives:
                    raise Unsupported("directives on a fragment definition")
                self._walk(fragment.selection_set, fragments, seen)


# The value of each variable ``if`` (by directive node identity); None: every such directive lets its node in
# (the walk that checks, at build, everything any request could select).
Decisions = Mapping[int, bool] | None


def _if_argument(directive: DirectiveNode) -> object:
    for argument in directive.arguments or ():
        if argument.name.value == "if":
            return argument.value
    raise Unsupported(f"@{directive.name.value} without if")


def _directive_if(directive: DirectiveNode, decisions: Decisions) -> bool | None:
    value = _if_argument(directive)
    if isinstance(value, BooleanValueNode):
        return value.value
    if isinstance(value, VariableNode):
        return None if decisions is None else decisions[id(directive)]
    raise Unsupported("@skip/@include with a value that is neither a literal nor a variable")


def included(node: FieldNode | InlineFragmentNode | FragmentSpreadNode, decisions: Decisions) -> bool:
    """graphql-core's should_include_node: @skip first, then @include."""
    directives = node.directives
    if not directives:
        return True
    for directive in directives:
        if directive.name.value == SKIP:
            skip = _directive_if(directive, decisions)
            if skip:
                return False
            break
    for directive in directives:
        if directive.name.value == INCLUDE:
            include = _directive_if(directive, decisions)
            return include is None or include
    return True


def _condition_matches(
    schema: GraphQLSchema, fragment: FragmentDefinitionNode | InlineFragmentNode, type_: GraphQLObjectType
) -> bool:
    condition = fragment.type_condition
    if not condition:
        return True
    conditional_type = type_from_ast(schema, condition)
    if conditional_type is type_:
        return True
    if conditional_type is not None and is_abstract_type(conditional_type):
        return schema.is_sub_type(conditional_type, type_)
    return False


def collect(
    schema: GraphQLSchema,
    fragments: Mapping[str, FragmentDefinitionNode],
    runtime_type: GraphQLObjectType,
    selection_sets: Iterable[SelectionSetNode],
    decisions: Decisions,
) -> Grouped:
    """The fields of ``selection_sets`` (the operation's, or those of the field nodes merged under one key) on
    ``runtime_type``, grouped by response key; fragments are visited once across all of them."""
    grouped: Grouped = {}
    visited: set[str] = set()
    for selection_set in selection_sets:
        _visit(schema, fragments, runtime_type, selection_set, decisions, grouped, visited)
    return grouped


def _visit(
    schema: GraphQLSchema,
    fragments: Mapping[str, FragmentDefinitionNode],
    runtime_type: GraphQLObjectType,
    selection_set: SelectionSetNode,
    decisions: Decisions,
    grouped: Grouped,
    visited: set[str],
) -> None:
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if not included(selection, decisions):
                continue
            key = selection.alias.value if selection.alias else selection.name.value
            grouped.setdefault(key, []).append(selection)
        elif isinstance(selection, InlineFragmentNode):
            if not included(selection, decisions) or not _condition_matches(schema, selection, runtime_type):
                continue
            _visit(schema, fragments, runtime_type, selection.selection_set, decisions, grouped, visited)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if not included(selection, decisions):
                continue
            fragment = fragments.get(name)
            if fragment is None or not _condition_matches(schema, fragment, runtime_type):
                continue
            if name in visited:
                continue
            visited.add(name)
            _visit(schema, fragments, runtime_type, fragment.selection_set, decisions, grouped, visited)
