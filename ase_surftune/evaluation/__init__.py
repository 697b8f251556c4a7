"""Evaluation: error levels and softening scales, property comparison, learning curves.

* :func:`evaluate` / :func:`evaluate_model` → :class:`EvaluationReport` /
  :class:`ModelEvaluation` (energy/force/stress MAE & RMSE, softening scale overall,
  per ``config_type`` and on the high-force subset; parity plots).
* :func:`compare` / :func:`measure_properties` → :class:`ComparisonReport` (lattice
  constant, surface energies, NEB barriers, phonon frequencies per model, ratio to the
  reference and error; one figure).
* :func:`benchmark` → :class:`BenchmarkReport` (every row of a reference table —
  :func:`load_reference_set`, CSV/JSON — measured with every model; ratio table, figure;
  resumable).
* :func:`learning_curve` → :class:`LearningCurveResult` (test force MAE and softening
  scale against the number of training structures, per strategy; resumable).

Models are given as spec strings (``"chgnet"``, ``"emt"``, ``"run/model.stbundle@head"``;
see :mod:`ase_surftune.evaluation._spec`) so the work can be shipped to other processes.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

#: public name -> submodule that defines it. Loaded on first use, so that importing a
#: light submodule (``learning_curve_config``, the settings models the CLI builds its
#: options from) does not import every workflow: ``surftune --help`` stays instant.
_EXPORTS: dict[str, str] = {
    "make_calculator": "_spec", "parse_spec": "_spec",
    "BenchmarkConfig": "benchmark", "BenchmarkReport": "benchmark",
    "benchmark": "benchmark", "load_benchmark_config": "benchmark",
    "CompareConfig": "compare", "ComparisonReport": "compare",
    "MeasuredProperties": "compare", "compare": "compare",
    "load_compare_config": "compare", "measure_properties": "compare",
    "ErrorStats": "errors", "EvaluationReport": "errors", "EvaluationSettings": "errors",
    "ModelEvaluation": "errors", "evaluate": "errors", "evaluate_files": "errors",
    "evaluate_model": "errors", "predict_with": "errors",
    "LearningCurveConfig": "learning_curve_config",
    "load_learning_curve_config": "learning_curve_config",
    "LearningCurveResult": "learning_curve", "learning_curve": "learning_curve",
    "ReferenceEntry": "reference_sets", "ReferenceSet": "reference_sets",
    "load_reference_set": "reference_sets",
}

__all__ = list(_EXPORTS)


class _Package(types.ModuleType):
    """The package module: a public name that is also a submodule's name (``compare``,
    ``benchmark``, ``learning_curve``) stays the function when the submodule is
    imported, as it was when this file imported everything eagerly."""

    def __getattr__(self, name: str) -> Any:
        if name in _EXPORTS:
            value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
            types.ModuleType.__setattr__(self, name, value)
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)  # the import system binding a submodule
        types.ModuleType.__setattr__(self, name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_EXPORTS))


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # static tools see the names
    from ase_surftune.evaluation._spec import make_calculator, parse_spec  # noqa: F401
    from ase_surftune.evaluation.benchmark import (  # noqa: F401
        BenchmarkConfig,
        BenchmarkReport,
        benchmark,
        load_benchmark_config,
    )
    from ase_surftune.evaluation.compare import (  # noqa: F401
        CompareConfig,
        ComparisonReport,
        MeasuredProperties,
        compare,
        load_compare_config,
        measure_properties,
    )
    from ase_surftune.evaluation.errors import (  # noqa: F401
        ErrorStats,
        EvaluationReport,
        EvaluationSettings,
        ModelEvaluation,
        evaluate,
        evaluate_files,
        evaluate_model,
        predict_with,
    )
    from ase_surftune.evaluation.learning_curve import (  # noqa: F401
        LearningCurveResult,
        learning_curve,
    )
    from ase_surftune.evaluation.learning_curve_config import (  # noqa: F401
        LearningCurveConfig,
        load_learning_curve_config,
    )
    from ase_surftune.evaluation.reference_sets import (  # noqa: F401
        ReferenceEntry,
        ReferenceSet,
        load_reference_set,
    )
