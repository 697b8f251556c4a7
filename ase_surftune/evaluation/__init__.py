"""Evaluation: error levels and softening scales, property comparison, learning curves.

* :func:`evaluate` / :func:`evaluate_model` → :class:`EvaluationReport` /
  :class:`ModelEvaluation` (energy/force/stress MAE & RMSE, softening scale overall,
  per ``config_type`` and on the high-force subset; parity plots).
* :func:`compare` / :func:`measure_properties` → :class:`ComparisonReport` (lattice
  constant, surface energies, NEB barriers, phonon frequencies per model, ratio to the
  reference and error; one figure).
* :func:`learning_curve` → :class:`LearningCurveResult` (test force MAE and softening
  scale against the number of training structures, per strategy; resumable).

Models are given as spec strings (``"chgnet"``, ``"emt"``, ``"run/model.stbundle@head"``;
see :mod:`ase_surftune.evaluation._spec`) so the work can be shipped to other processes.
"""

from ase_surftune.evaluation._spec import make_calculator, parse_spec
from ase_surftune.evaluation.compare import (CompareConfig, ComparisonReport,
                                             MeasuredProperties, compare, load_compare_config,
                                             measure_properties)
from ase_surftune.evaluation.errors import (ErrorStats, EvaluationReport, ModelEvaluation,
                                            evaluate, evaluate_files, evaluate_model,
                                            predict_with)
from ase_surftune.evaluation.learning_curve import (LearningCurveConfig, LearningCurveResult,
                                                    learning_curve, load_learning_curve_config)

__all__ = ["parse_spec", "make_calculator", "ErrorStats", "ModelEvaluation",
           "EvaluationReport", "evaluate", "evaluate_files", "evaluate_model", "predict_with", "CompareConfig",
           "MeasuredProperties", "ComparisonReport", "compare", "measure_properties",
           "load_compare_config", "LearningCurveConfig", "LearningCurveResult",
           "learning_curve", "load_learning_curve_config"]
