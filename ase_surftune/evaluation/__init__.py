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

from ase_surftune.evaluation._spec import make_calculator, parse_spec
from ase_surftune.evaluation.benchmark import (
                                               BenchmarkConfig,
                                               BenchmarkReport,
                                               benchmark,
                                               load_benchmark_config,
)
from ase_surftune.evaluation.compare import (
                                               CompareConfig,
                                               ComparisonReport,
                                               MeasuredProperties,
                                               compare,
                                               load_compare_config,
                                               measure_properties,
)
from ase_surftune.evaluation.errors import (
                                               ErrorStats,
                                               EvaluationReport,
                                               ModelEvaluation,
                                               evaluate,
                                               evaluate_files,
                                               evaluate_model,
                                               predict_with,
)
from ase_surftune.evaluation.learning_curve import (
                                               LearningCurveConfig,
                                               LearningCurveResult,
                                               learning_curve,
                                               load_learning_curve_config,
)
from ase_surftune.evaluation.reference_sets import ReferenceEntry, ReferenceSet, load_reference_set

__all__ = ["parse_spec", "make_calculator", "ErrorStats", "ModelEvaluation",
           "EvaluationReport", "evaluate", "evaluate_files", "evaluate_model", "predict_with", "CompareConfig",
           "MeasuredProperties", "ComparisonReport", "compare", "measure_properties",
           "load_compare_config", "LearningCurveConfig", "LearningCurveResult",
           "learning_curve", "load_learning_curve_config", "BenchmarkConfig",
           "BenchmarkReport", "benchmark", "load_benchmark_config", "ReferenceEntry",
           "ReferenceSet", "load_reference_set"]
