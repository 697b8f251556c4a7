"""The CLI mirrors the API from one source: options of evaluate, learning-curve and
active-learn come from the settings models; one config error format; no heavy imports
when the parser is built."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from ase_surftune.cli import build_parser, main, one_line
from ase_surftune.core.errors import ConfigError


def _sub(name: str):
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    sub = action.choices[name]
    sub.format_help()  # options from settings models are added on first use
    return sub


def _option(parser, dest: str):
    flag = "--" + dest.replace("_", "-")
    return next(a for a in parser._actions if flag in a.option_strings)


def test_evaluate_options_come_from_evaluation_settings():
    from ase_surftune.evaluation.errors import EvaluationSettings, evaluate_model

    p = _sub("evaluate")
    for name, field in EvaluationSettings.model_fields.items():
        opt = _option(p, name)
        assert opt.default is None  # nothing shadows the API's default
        default = "on" if field.default is True else "off" if field.default is False else (
            "none" if field.default is None else str(field.default))
        assert f"(default: {default})" in opt.help, (name, opt.help)
    # evaluate_model's keyword defaults are the model's
    sig = inspect.signature(evaluate_model).parameters
    for name, field in EvaluationSettings.model_fields.items():
        assert sig[name].default == field.default, name
    # the old flags still parse to the same settings
    args = p.parse_args(["x.xyz", "--flag-only", "--no-stress", "--exclude-fixed-atoms",
                         "--max-force", "2.5", "--align", "self"])
    assert (args.max_force_mode, args.stress, args.exclude_fixed_atoms, args.max_force,
            args.align) == ("flag", False, True, 2.5, "self")


def test_evaluation_settings_errors_are_the_house_format():
    from ase_surftune.evaluation.errors import evaluate

    with pytest.raises(ConfigError) as exc:
        evaluate(["emt"], [], high_force_quantile=1.5, align="fit", max_force=-1)
    msg = str(exc.value)
    assert msg.startswith("Invalid evaluation config (3 problems):")
    for key in ("high_force_quantile:", "align:", "leak", "max_force:"):
        assert key in msg


def test_align_shifts_as_text_equal_the_dict():
    from ase_surftune.evaluation.errors import EvaluationSettings

    assert EvaluationSettings(align="Cu=-5.0, Au=2").align == {"Cu": -5.0, "Au": 2.0}
    with pytest.raises(ValueError, match="SYMBOL=SHIFT"):
        EvaluationSettings(align="Cu=x")


def test_learning_curve_options_and_comma_lists(tmp_path):
    from ase_surftune.evaluation.learning_curve_config import LearningCurveConfig

    p = _sub("learning-curve")
    args = p.parse_args(["c.yaml", "-o", "out", "--n-train", "5,1,2", "--strategies",
                         "linear,full", "--no-progress", "--max-force", "3"])
    assert (args.output_dir, args.n_train, args.strategies, args.progress,
            args.max_force) == ("out", "5,1,2", "linear,full", False, 3.0)
    assert "(default: 1 2 5 10 20 50)" in _option(p, "n_train").help
    cfg = LearningCurveConfig(n_train=args.n_train, strategies=args.strategies)
    assert cfg.n_train == [1, 2, 5] and cfg.strategies == ["linear", "full"]


def test_learning_curve_config_errors_name_every_key(tmp_path):
    from ase_surftune.evaluation.learning_curve_config import load_learning_curve_config

    with pytest.raises(ConfigError) as exc:
        load_learning_curve_config({"n_train": "1,x", "strategies": ["nope"], "typo": 1})
    msg = str(exc.value)
    assert msg.startswith("Invalid learning-curve config (dict) (3 problems):")
    assert "n_train.1:" in msg and "unknown strategies ['nope']" in msg
    assert "typo: unknown key" in msg and "examples/learning_curve_chgnet.yaml" in msg


def test_active_learn_overrides_come_from_active_config():
    from ase_surftune.active.config import ActiveConfig

    p = _sub("active-learn")
    for name in ("budget", "batch_size", "tolerance", "selection", "seed", "output_dir"):
        field = ActiveConfig.model_fields[name]
        assert f"(default: {field.default})" in _option(p, name).help
    assert "one of uncertainty, random" in _option(p, "selection").help


def test_bad_override_is_one_line_house_format(tmp_path, capsys):
    cfg = tmp_path / "al.yaml"
    cfg.write_text("targets: [gamma_111]\n")
    assert main(["active-learn", str(cfg), "--check", "--selection", "best"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "Invalid active-learning config" in err and "selection:" in err


def test_one_line_joins_a_heading_with_a_space():
    exc = ConfigError("2 of 2 tasks failed:\n[0] a: Invalid x config (2 problems):\n"
                      "  k: bad\n  j: worse\n[1] b: boom")
    assert one_line(exc) == ("2 of 2 tasks failed: [0] a: Invalid x config (2 problems): "
                             "k: bad; j: worse; [1] b: boom")


@pytest.mark.slow
def test_parser_builds_without_heavy_imports_and_evaluation_names_stay_functions():
    code = ("import sys\n"
            "import ase_surftune.cli as c; c.build_parser()\n"
            "heavy = [m for m in ('torch', 'numpy', 'pydantic', 'ase_surftune.active', "
            "'ase_surftune.evaluation') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "import ase_surftune.evaluation.learning_curve_config\n"
            "heavy = [m for m in ('ase_surftune.evaluation.compare', "
            "'ase_surftune.evaluation.errors', 'torch') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "import ase_surftune.evaluation.compare, ase_surftune.evaluation.learning_curve\n"
            "from ase_surftune.evaluation import compare, learning_curve, benchmark\n"
            "assert all(callable(f) and not isinstance(f, type(sys)) "
            "for f in (compare, learning_curve, benchmark))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
