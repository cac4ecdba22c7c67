"""Token-Level Editing (ToEdit, Zhu et al., ICML 2025) engine.

Plain Python, no orchestrator import: corpus in, prior scores, edit rule, diagnostics out.
The Dagster layer lives in the top-level `assets` package and only calls into this one.
"""

__version__ = "0.1.0"
