"""Evaluation: zero-shot views and findings, retrieval, negation, probes, and the report.

`Evaluator` is what the trainer holds; `run_evals` the functional entry point.
"""

from echovlm_jax.evaluation.registry import EVALUATORS, Evaluator, run_evals, run_evals_with_details
from echovlm_jax.evaluation.report import write_report

__all__ = ["EVALUATORS", "Evaluator", "run_evals", "run_evals_with_details", "write_report"]
