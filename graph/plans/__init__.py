"""Compiled execution plans: operations executed by closures built once per operation, with graphql-core's
results (graph/plans/compile.py), their objects as generated code once an operation runs again
(graph/plans/generate.py); graphql-core runs whatever they do not support."""

from graph.plans.cache import PlanCache, PlanStats

__all__ = ["PlanCache", "PlanStats"]
