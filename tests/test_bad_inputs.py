"""A corpus of bad inputs through the API and the CLI (issue 13).

Every case asserts three things:

* the exception type (API) or exit status 2 with one line ``surftune CMD: error: …`` and
  no traceback (CLI, run in-process through ``ase_surftune.cli.main``);
* that the message names the problem and the fix (two regular expressions per case);
* that no user file changed: the test folder is hashed before and after. Lock files
  (``*.lock``, empty once released) are bookkeeping and not counted.

Cases stay cheap (config validation, parsing, tiny EMT structures); the few that train
use the tiny MACE of ``conftest.build_tiny_mace``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import build_tiny_mace, make_emt_slabs, save_tiny_mace

from ase_surftune.cli import main as cli_main
from ase_surftune.core import errors as E

# --------------------------------------------------------------------------- helpers


def folder_state(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (lock files excluded)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith(".lock"):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root)) + "/"] = "dir"
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err


def labelled(atoms: Atoms, energy: float | None = None, forces: Any = None,
             stress: Any = None) -> Atoms:
    a = atoms.copy()
    if energy is None or forces is None:
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        energy = e if energy is None else energy
        forces = f if forces is None else forces
    kw = {"energy": energy, "forces": np.asarray(forces, dtype=float)}
    if stress is not None:
        kw["stress"] = stress
    a.calc = SinglePointCalculator(a, **kw)
    return a


GOOD = make_emt_slabs(2, size=(1, 1, 3))
CU = bulk("Cu", "fcc", a=3.61)


def good() -> Atoms:
    return GOOD[0].copy()


def good_labelled() -> Atoms:
    a = GOOD[0]
    r = a.calc.results
    return labelled(a, r["energy"], r["forces"])


@dataclass
class Case:
    """One bad input: ``fn(tmp_path)`` must raise ``exc`` (API) or exit 2 (CLI)."""

    id: str
    fn: Callable[[Path], Any]
    exc: type[BaseException] | None  # None: a CLI case, fn returns argv
    problem: str  # regex the message must match (names the problem)
    fix: str  # regex the message must match (names the fix)
    setup: Callable[[Path], None] | None = None
    env: dict[str, str] | None = None


def check_message(msg: str, case: Case) -> None:
    import re

    assert re.search(case.problem, msg, re.I | re.S), f"problem /{case.problem}/ not in: {msg}"
    assert re.search(case.fix, msg, re.I | re.S), f"fix /{case.fix}/ not in: {msg}"


def run_case(case: Case, tmp_path: Path, capsys, monkeypatch) -> None:
    for k, v in (case.env or {}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    if case.setup is not None:
        case.setup(tmp_path)
    before = folder_state(tmp_path)
    if case.exc is None:
        argv = case.fn(tmp_path)
        code, err = run_cli(argv, capsys)
        assert code == 2, err
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert lines and lines[-1].startswith(f"surftune {argv[0]}: error:"), err
        assert "Traceback" not in err, err
        check_message(lines[-1] if len(lines) == 1 else err, case)
    else:
        with pytest.raises(case.exc) as info:
            case.fn(tmp_path)
        check_message(str(info.value), case)
    assert folder_state(tmp_path) == before, "a user file changed"


# --------------------------------------------------------------------------- A. config

BASE = {"model": "chgnet", "progress": False, "plot": False}
FIX_RANGE = (r"greater|less|at least|should|must|expected|one of|known|choose|use|give|"
             r"needs|check the|spelling")

#: (id, overrides, key named in the message)
CONFIG_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown-key", {"epoch": 3}, "epoch"),
    ("unknown-nested-key", {"optimizer": {"learning_rate": 1e-3}}, "learning_rate"),
    ("epochs-0", {"epochs": 0}, "epochs"),
    ("epochs-negative", {"epochs": -5}, "epochs"),
    ("epochs-text", {"epochs": "many"}, "epochs"),
    ("epochs-float", {"epochs": 2.5}, "epochs"),
    ("batch-size-0", {"batch_size": 0}, "batch_size"),
    ("batch-size-text", {"batch_size": "big"}, "batch_size"),
    ("valid-batch-size-0", {"valid_batch_size": 0}, "valid_batch_size"),
    ("lr-0", {"optimizer": {"lr": 0}}, "lr"),
    ("lr-negative", {"optimizer": {"lr": -1e-3}}, "lr"),
    ("lr-text", {"optimizer": {"lr": "fast"}}, "lr"),
    ("weight-decay-negative", {"optimizer": {"weight_decay": -1}}, "weight_decay"),
    ("optimizer-sgd", {"optimizer": {"name": "sgd"}}, "name"),
    ("scheduler-unknown", {"scheduler": {"name": "step"}}, "name"),
    ("scheduler-factor-0", {"scheduler": {"factor": 0}}, "factor"),
    ("scheduler-factor-1", {"scheduler": {"factor": 1}}, "factor"),
    ("scheduler-patience-negative", {"scheduler": {"patience": -1}}, "patience"),
    ("min-lr-negative", {"scheduler": {"min_lr": -1}}, "min_lr"),
    ("loss-all-zero", {"loss": {"energy_weight": 0, "forces_weight": 0}}, "weight"),
    ("loss-energy-negative", {"loss": {"energy_weight": -1}}, "energy_weight"),
    ("loss-forces-negative", {"loss": {"forces_weight": -1}}, "forces_weight"),
    ("loss-stress-negative", {"loss": {"stress_weight": -0.1}}, "stress_weight"),
    ("loss-kind", {"loss": {"kind": "l1"}}, "kind"),
    ("huber-delta-0", {"loss": {"huber_delta": 0}}, "huber_delta"),
    ("valid-fraction-1", {"valid_fraction": 1.0}, "valid_fraction"),
    ("valid-fraction-negative", {"valid_fraction": -0.1}, "valid_fraction"),
    ("patience-0", {"patience": 0}, "patience"),
    ("ema-0", {"ema_decay": 0}, "ema_decay"),
    ("ema-1", {"ema_decay": 1}, "ema_decay"),
    ("clip-grad-0", {"clip_grad": 0}, "clip_grad"),
    ("seed-2**70", {"seed": 2**70}, "seed"),
    ("seed-negative", {"seed": -1}, "seed"),
    ("seed-text", {"seed": "abc"}, "seed"),
    ("seed-2**32", {"seed": 2**32}, "seed"),
    ("dtype-float16", {"dtype": "float16"}, "dtype"),
    ("chgnet-float64", {"dtype": "float64"}, "float32"),
    ("device-bad", {"device": "gpu!"}, "device"),
    ("strategy-unknown", {"strategy": "magic"}, "strategy"),
    ("model-unknown", {"model": "no-such-model"}, "model"),
    ("model-mace-missing-file", {"model": "mace:/nonexistent/x.model"}, "not found"),
    ("train-file-missing", {"train_file": "/nonexistent/train.xyz"}, "train_file"),
    ("valid-file-missing", {"valid_file": "/nonexistent/valid.xyz"}, "valid_file"),
    ("test-file-missing", {"test_file": "/nonexistent/test.xyz"}, "test_file"),
    ("train-file-empty-list", {"train_file": []}, "train_file"),
    ("freeze-k-negative", {"strategy": "frozen", "freeze": {"k": -2}}, "k"),
    ("freeze-k-0", {"strategy": "frozen", "freeze": {"k": 0}}, "k"),
    ("freeze-patterns-not-list", {"strategy": "frozen", "freeze": {"patterns": 3}}, "patterns"),
    ("num-threads-0", {"num_threads": 0}, "num_threads"),
    ("checkpoint-every-0", {"checkpoint_every_steps": 0}, "checkpoint_every_steps"),
    ("resume-and-overwrite", {"resume": True, "overwrite": True}, "overwrite"),
    ("resume-text", {"resume": "sometimes"}, "resume"),
    ("progress-text", {"progress": "loud"}, "progress"),
    ("loss-not-mapping", {"loss": 3}, "loss"),
    ("group-key-list", {"group_key": ["a"]}, "group_key"),
]


def _config_case(overrides: dict[str, Any]) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        from ase_surftune.training import load_config

        return load_config({**BASE, **overrides})
    return fn


CASES: list[Case] = [Case(f"config-{cid}", _config_case(ov), E.ConfigError, key, FIX_RANGE)
                     for cid, ov, key in CONFIG_CASES]


def _output_is_file(tmp: Path) -> None:
    (tmp / "out").write_text("a file, not a folder\n")


CASES += [
    Case("config-output-dir-is-file", lambda t: _config_case({"output_dir": str(t / "out")})(t),
         E.ConfigError, "existing file", "another output_dir", setup=_output_is_file),
    Case("config-output-dir-under-file",
         lambda t: _config_case({"output_dir": str(t / "out" / "run")})(t),
         E.ConfigError, "existing file", "another output_dir", setup=_output_is_file),
    Case("config-not-a-mapping", lambda t: __import__(
        "ase_surftune.training", fromlist=["load_config"]).load_config(42),
        E.ConfigError, "config must be", "dict or YAML"),
]

# --------------------------------------------------------------------------- B. YAML and CLI config

YAML_BAD = {
    "unclosed-bracket": "model: chgnet\nepochs: [1, 2\n",
    "bad-indent": "model: chgnet\n  epochs: 3\n bad: 1\n",
    "tab-indent": "model: chgnet\noptimizer:\n\tlr: 0.1\n",
    "unclosed-quote": "model: 'chgnet\nepochs: 3\n",
    "colon-in-key": "model: chgnet\n: 3\n",
    "duplicate-anchor": "a: *undefined\n",
}


def _yaml_setup(text: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / "cfg.yaml").write_text(text)
    return setup


for yid, text in YAML_BAD.items():
    CASES.append(Case(f"cli-yaml-{yid}", lambda t: ["finetune", str(t / "cfg.yaml"), "--check"],
                      None, r"not valid YAML|YAML", r"fix the syntax|line \d+",
                      setup=_yaml_setup(text)))
    CASES.append(Case(f"api-yaml-{yid}", lambda t: __import__(
        "ase_surftune.training", fromlist=["load_config"]).load_config(t / "cfg.yaml"),
        E.ConfigError, "not valid YAML", "fix the syntax", setup=_yaml_setup(text)))

CASES += [
    Case("cli-yaml-list-not-mapping", lambda t: ["finetune", str(t / "cfg.yaml"), "--check"],
         None, "must be a YAML mapping", "mapping", setup=_yaml_setup("- a\n- b\n")),
    Case("cli-yaml-binary", lambda t: ["finetune", str(t / "cfg.yaml"), "--check"], None,
         "not a text|not valid YAML", "UTF-8|YAML",
         setup=lambda t: (t / "cfg.yaml").write_bytes(bytes(range(256)) * 4)),
    Case("cli-yaml-missing", lambda t: ["finetune", str(t / "nope.yaml"), "--check"], None,
         "not found", "nope.yaml"),
]

#: a selection of the config cases through the CLI (YAML file, --check)
for cid, ov, key in CONFIG_CASES[::3]:
    import yaml as _yaml

    CASES.append(Case(f"cli-config-{cid}", lambda t: ["finetune", str(t / "cfg.yaml"),
                                                       "--check"],
                      None, key, FIX_RANGE,
                      setup=_yaml_setup(_yaml.safe_dump({**BASE, **ov}))))

CASES += [
    Case("cli-finetune-epochs-override-0",
         lambda t: ["finetune", str(t / "cfg.yaml"), "--check", "--epochs", "0"], None,
         "epochs", FIX_RANGE, setup=_yaml_setup("model: chgnet\n")),
    Case("cli-finetune-output-dir-is-file",
         lambda t: ["finetune", str(t / "cfg.yaml"), "--check", "--output-dir",
                    str(t / "out")], None, "existing file", "another output_dir",
         setup=lambda t: (_yaml_setup("model: chgnet\n")(t), _output_is_file(t))),
    Case("cli-finetune-strategy-override",
         lambda t: ["finetune", str(t / "cfg.yaml"), "--check", "--strategy", "nope"], None,
         "strategy", "known", setup=_yaml_setup("model: chgnet\n")),
    Case("cli-finetune-seed-2**70", lambda t: ["finetune", str(t / "cfg.yaml"), "--check"],
         None, "seed", "less than", setup=_yaml_setup(f"model: chgnet\nseed: {2**70}\n")),
]

# --------------------------------------------------------------------------- C. data in memory and in files


def _nan_energy() -> Atoms:
    return labelled(good(), energy=math.nan)


def _bad(kind: str) -> Atoms:
    a = good()
    n = len(a)
    f = np.zeros((n, 3))
    if kind == "nan-energy":
        return labelled(a, energy=math.nan, forces=f)
    if kind == "inf-energy":
        return labelled(a, energy=math.inf, forces=f)
    if kind == "nan-forces":
        f[1, 2] = math.nan
        return labelled(a, energy=-1.0, forces=f)
    if kind == "inf-forces":
        f[0, 0] = -math.inf
        return labelled(a, energy=-1.0, forces=f)
    if kind == "forces-too-short":
        return labelled(a, energy=-1.0, forces=np.zeros((n - 1, 3)))
    if kind == "forces-too-long":
        return labelled(a, energy=-1.0, forces=np.zeros((n + 2, 3)))
    if kind == "forces-wrong-width":
        out = labelled(a, energy=-1.0, forces=f)
        out.calc.results["forces"] = np.zeros((n, 2))
        return out
    if kind == "nan-stress":
        return labelled(a, energy=-1.0, forces=f, stress=np.full(6, math.nan))
    if kind == "stress-shape":
        out = labelled(a, energy=-1.0, forces=f)
        out.calc.results["stress"] = np.zeros(4)
        return out
    if kind == "nan-positions":
        a.positions[0, 0] = math.nan
        return labelled(a, energy=-1.0, forces=f)
    if kind == "inf-cell":
        out = labelled(a, energy=-1.0, forces=f)
        out.cell[0, 0] = math.inf
        return out
    if kind == "overlap-zero":
        a.positions[1] = a.positions[0]
        return labelled(a, energy=-1.0, forces=f)
    if kind == "overlap-0.3":
        a.positions[1] = a.positions[0] + [0.3, 0, 0]
        return labelled(a, energy=-1.0, forces=f)
    if kind == "overlap-periodic-image":
        b = Atoms("Cu2", positions=[[0, 0, 0], [2.9, 0, 0]], cell=[3, 3, 3], pbc=True)
        return labelled(b, energy=-1.0, forces=np.zeros((2, 3)))
    if kind == "no-labels":
        return a
    if kind == "no-energy":
        out = labelled(a, energy=-1.0, forces=f)
        del out.calc.results["energy"]
        return out
    if kind == "no-forces":
        out = labelled(a, energy=-1.0, forces=f)
        del out.calc.results["forces"]
        return out
    if kind == "empty":
        out = Atoms()
        out.calc = SinglePointCalculator(out, energy=0.0, forces=np.zeros((0, 3)))
        return out
    raise AssertionError(kind)


#: (kind, problem regex, fix regex)
DATA_KINDS = [
    ("nan-energy", "energy", "NaN|inf"),
    ("inf-energy", "energy", "NaN|inf"),
    ("nan-forces", "forces", "NaN/inf on 1 atom"),
    ("inf-forces", "forces", "NaN/inf"),
    ("forces-too-short", r"forces have shape \(2, 3\)", r"expected \(3, 3\)"),
    ("forces-too-long", r"forces have shape \(5, 3\)", r"expected \(3, 3\)"),
    ("forces-wrong-width", r"forces have shape \(3, 2\)", r"expected \(3, 3\)"),
    ("nan-stress", "stress", "NaN/inf"),
    ("stress-shape", "stress has shape", r"expected \(6,\)"),
    ("nan-positions", "positions", "NaN/inf"),
    ("inf-cell", "cell", "NaN/inf"),
    ("overlap-zero", r"atoms \d+ and \d+ are 0\.000 Å apart", "remove the duplicate"),
    ("overlap-0.3", r"0\.300 Å apart", "minimum 0.5 Å"),
    ("overlap-periodic-image", r"0\.\d+ Å apart", "fix the positions"),
    ("no-energy", "energy", "missing energy label"),
    ("no-forces", "forces", "missing forces label"),
    ("empty", "no atoms", "configuration"),
]


def _finetune_mem(kind: str, part: str) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        from ase_surftune.training import finetune

        sets = {"train": [good_labelled()], "valid": [good_labelled()], "test": []}
        sets[part] = [good_labelled(), _bad(kind)]
        return finetune({**BASE, "output_dir": str(tmp / "run")}, **sets)
    return fn


def _validate(kind: str) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        from ase_surftune.data import validate_config

        return validate_config(_bad(kind), where="case")
    return fn


for kind, prob, fix in DATA_KINDS:
    CASES.append(Case(f"validate-{kind}", _validate(kind), E.DataError, prob, fix))
    CASES.append(Case(f"finetune-train-{kind}", _finetune_mem(kind, "train"), E.DataError,
                      r"train\[1\].*" + prob, fix))
for kind, prob, fix in DATA_KINDS[::4]:
    CASES.append(Case(f"finetune-valid-{kind}", _finetune_mem(kind, "valid"), E.DataError,
                      r"valid\[1\].*" + prob, fix))
CASES.append(Case("finetune-train-not-atoms",
                  lambda t: __import__("ase_surftune.training", fromlist=["finetune"]).finetune(
                      {**BASE, "output_dir": str(t / "run")}, train=[good_labelled(), "x.xyz"]),
                  E.DataError, r"train\[1\].*expected an ase\.Atoms", "str"))


def _write_xyz(kind: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        import ase.io

        ase.io.write(tmp / "data.xyz", [good_labelled(), _bad(kind)], format="extxyz")
    return setup


for kind, prob, fix in [("nan-energy", "energy", "NaN"), ("nan-forces", "forces", "NaN"),
                        ("overlap-zero", "apart", "remove the duplicate"),
                        ("overlap-0.3", "apart", "minimum")]:
    CASES.append(Case(f"read-labelled-{kind}", lambda t: __import__(
        "ase_surftune.data", fromlist=["read_labelled"]).read_labelled(t / "data.xyz"),
        E.DataError, r"data\.xyz@1.*" + prob, fix, setup=_write_xyz(kind)))

CASES += [
    Case("read-labelled-binary", lambda t: __import__(
        "ase_surftune.data", fromlist=["read_labelled"]).read_labelled(t / "junk.xyz"),
        E.DataError, "binary|cannot parse", "structure file ase.io reads",
        setup=lambda t: (t / "junk.xyz").write_bytes(os.urandom(2048))),
    Case("read-labelled-empty", lambda t: __import__(
        "ase_surftune.data", fromlist=["read_labelled"]).read_labelled(t / "e.xyz"),
        E.DataError, "empty file", "e.xyz", setup=lambda t: (t / "e.xyz").write_text("")),
]

# --------------------------------------------------------------------------- D. output folders (API)


def _hold_run(tmp: Path) -> None:
    run = tmp / "run"
    run.mkdir()
    (run / "model.stbundle").write_bytes(b"previous result")
    (run / "metrics.json").write_text("{}\n")


def _ft(**kw: Any) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        from ase_surftune.training import finetune

        return finetune({**BASE, "output_dir": str(tmp / "run"), **kw}, train=[good_labelled()])
    return fn


def _lock_in_other_process(lock_file: Path) -> None:
    """Hold ``lock_file`` from another process (as a running run would) until the test ends."""
    import subprocess
    import sys

    code = ("import sys\nfrom ase_surftune.core.io import exclusive_lock\n"
            f"with exclusive_lock({str(lock_file)!r}, 'x'):\n"
            "    print('locked', flush=True)\n    sys.stdin.read()\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    _LOCK_HOLDERS.append(proc)


def _hold_lock(tmp: Path) -> None:
    (tmp / "run").mkdir(exist_ok=True)
    _lock_in_other_process(tmp / "run" / ".surftune.lock")


_LOCK_HOLDERS: list[Any] = []


@pytest.fixture(autouse=True)
def _release_lock_holders():
    yield
    while _LOCK_HOLDERS:
        proc = _LOCK_HOLDERS.pop()
        proc.stdin.close()
        proc.wait(timeout=30)


CASES += [
    Case("finetune-folder-holds-run", _ft(), E.OutputExistsError, "already holds a run",
         "--overwrite", setup=_hold_run),
    Case("finetune-resume-no-checkpoint", _ft(resume=True), E.ConfigError,
         "no checkpoint.pt", "without --resume", setup=_hold_run),
    Case("finetune-resume-missing-folder", _ft(resume=True), E.ConfigError,
         "does not exist", "without --resume"),
    Case("finetune-resume-empty-folder", _ft(resume=True), E.ConfigError,
         "holds no run", "without --resume", setup=lambda t: (t / "run").mkdir()),
    Case("finetune-folder-locked", _ft(), E.LockedError, r"in use by PID \d+",
         "wait for that run", setup=_hold_lock),
    Case("finetune-no-train-data", lambda t: __import__(
        "ase_surftune.training", fromlist=["finetune"]).finetune({**BASE}), E.ConfigError,
         "train_file", "train="),
    Case("cli-finetune-folder-holds-run",
         lambda t: ["finetune", str(t / "cfg.yaml"), "--no-progress"], None,
         "already holds a run", "--overwrite",
         setup=lambda t: (_hold_run(t), _yaml_setup(
             f"model: chgnet\ntrain_file: {t / 'train.xyz'}\noutput_dir: run\n")(t),
             __import__("ase.io", fromlist=["write"]).write(t / "train.xyz",
                                                             [good_labelled()]))),
    Case("cli-finetune-resume-no-checkpoint",
         lambda t: ["finetune", str(t / "cfg.yaml"), "--resume", "--no-progress"], None,
         "no checkpoint|does not exist", "without --resume",
         setup=lambda t: (_yaml_setup(
             f"model: chgnet\ntrain_file: {t / 'train.xyz'}\noutput_dir: run\n")(t),
             __import__("ase.io", fromlist=["write"]).write(t / "train.xyz",
                                                             [good_labelled()]))),
]

# --------------------------------------------------------------------------- E. label CLI / API


def _structures(tmp: Path) -> None:
    import ase.io

    ase.io.write(tmp / "in.xyz", [good(), GOOD[1].copy()], format="extxyz")


CASES += [
    Case("cli-label-random-bytes", lambda t: ["label", str(t / "junk.bin"), "-o",
                                              str(t / "out.xyz"), "--no-progress"],
         None, "binary|cannot parse", "structure file ase.io reads",
         setup=lambda t: (t / "junk.bin").write_bytes(os.urandom(4096))),
    Case("cli-label-random-bytes-xyz", lambda t: ["label", str(t / "junk.xyz"), "-o",
                                                  str(t / "out.xyz"), "--no-progress"],
         None, "binary|cannot parse", "structure file ase.io reads",
         setup=lambda t: (t / "junk.xyz").write_bytes(b"\xff\xfe" + os.urandom(1024))),
    Case("cli-label-missing-file", lambda t: ["label", str(t / "nope.xyz"), "-o",
                                              str(t / "out.xyz")], None,
         "not found", "nope.xyz"),
    Case("cli-label-empty-file", lambda t: ["label", str(t / "e.xyz"), "-o",
                                            str(t / "out.xyz")], None, "empty file", "e.xyz",
         setup=lambda t: (t / "e.xyz").write_text("")),
    Case("cli-label-output-is-folder", lambda t: ["label", str(t / "in.xyz"), "-o", str(t),
                                                  "--no-progress"], None,
         "is a folder", "give a file name", setup=_structures),
    Case("cli-label-bad-executor-count", lambda t: ["label", str(t / "in.xyz"), "-o",
                                                    str(t / "o.xyz"), "--executor",
                                                    "process:abc", "--no-progress"], None,
         "process:abc", "positive integer", setup=_structures),
    Case("cli-label-executor-zero", lambda t: ["label", str(t / "in.xyz"), "-o",
                                               str(t / "o.xyz"), "--executor", "process:0",
                                               "--no-progress"], None,
         "process:0", "positive integer", setup=_structures),
    Case("cli-label-executor-unknown", lambda t: ["label", str(t / "in.xyz"), "-o",
                                                  str(t / "o.xyz"), "--executor", "mpi:4",
                                                  "--no-progress"], None,
         "Unknown executor", "process", setup=_structures),
    Case("cli-label-overlapping-input", lambda t: ["label", str(t / "ov.xyz"), "-o",
                                                   str(t / "o.xyz"), "--no-progress"], None,
         "apart", "remove the duplicate",
         setup=lambda t: __import__("ase.io", fromlist=["write"]).write(
             t / "ov.xyz", Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0.1]], cell=[9, 9, 9],
                                 pbc=True))),
    Case("cli-label-unknown-reference", lambda t: ["label", str(t / "in.xyz"), "-o",
                                                   str(t / "o.xyz"), "-r", "vasp-magic",
                                                   "--no-progress"], None,
         "vasp-magic", "emt|known|choose", setup=_structures),
]


def _label_locked(tmp: Path) -> None:
    _structures(tmp)
    _lock_in_other_process(tmp / ".o.xyz.lock")


CASES.append(Case("cli-label-second-writer", lambda t: ["label", str(t / "in.xyz"), "-o",
                                                        str(t / "o.xyz"), "--no-progress"],
                  None, r"label file .* in use by PID \d+", "wait for that run",
                  setup=_label_locked))

# --------------------------------------------------------------------------- F. executors, env vars


def _get_executor(spec: str) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        from ase_surftune.core.parallel import get_executor

        return get_executor(spec)
    return fn


CASES += [
    Case("executor-process-abc", _get_executor("process:abc"), E.ConfigError, "process:abc",
         "positive integer"),
    Case("executor-process-negative", _get_executor("process:-2"), E.ConfigError,
         "process:-2", "positive integer"),
    Case("executor-dask-abc", _get_executor("dask:x"), E.ConfigError, "dask:x",
         "positive integer"),
    Case("executor-unknown", _get_executor("threads"), E.ConfigError, "Unknown executor",
         "process"),
]
try:  # without dask: the error names the extra to install
    import dask.distributed  # noqa: F401
except ImportError:
    CASES.append(Case("executor-dask-missing", _get_executor("dask:2"),
                      E.MissingDependencyError, "dask", r"pip install 'ase_surftune\[dask\]'"))
    CASES.append(Case("cli-label-dask-missing",
                      lambda t: ["label", str(t / "in.xyz"), "-o", str(t / "o.xyz"),
                                 "--executor", "dask:2", "--no-progress"], None,
                      "dask", r"pip install 'ase_surftune\[dask\]'", setup=_structures))


def _blas(tmp: Path) -> Any:
    from ase_surftune.core.threads import numpy_blas_threads

    with numpy_blas_threads():
        pass


for val in ("abc", "0", "-1", "1.5"):
    CASES.append(Case(f"env-blas-threads-{val}", _blas, E.ConfigError,
                      "SURFTUNE_NUMPY_BLAS_THREADS", "positive integer or 'off'",
                      env={"SURFTUNE_NUMPY_BLAS_THREADS": val}))
CASES.append(Case("cli-env-blas-threads-abc",
                  lambda t: ["relax", str(t / "cu.xyz"), "--reference", "emt"], None,
                  "SURFTUNE_NUMPY_BLAS_THREADS", "positive integer or 'off'",
                  setup=lambda t: CU.write(t / "cu.xyz"),
                  env={"SURFTUNE_NUMPY_BLAS_THREADS": "abc"}))


def _dist_setup(tmp: Path) -> None:
    import ase.io

    ase.io.write(tmp / "train.xyz", [good_labelled()])
    (tmp / "cfg.yaml").write_text(f"model: chgnet\ntrain_file: {tmp / 'train.xyz'}\n")


for var, val in (("WORLD_SIZE", "abc"), ("RANK", "x"), ("LOCAL_RANK", "-1")):
    CASES.append(Case(f"cli-env-{var}-{val}",
                      lambda t: ["finetune", str(t / "cfg.yaml"), "--distributed"], None,
                      f"{var}=", "torchrun", setup=_dist_setup,
                      env={"WORLD_SIZE": "2", "RANK": "0", var: val}))

# --------------------------------------------------------------------------- G. properties


def _neb_same(tmp: Path) -> Any:
    from ase_surftune.properties import neb_barrier

    a = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    return neb_barrier(a, a.copy(), EMT(), n_images=3, relax_endpoints=False)


def _neb_tiny_move(tmp: Path) -> Any:
    from ase_surftune.properties import neb_barrier

    a = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    b = a.copy()
    b.positions[0, 0] += 1e-5
    return neb_barrier(a, b, EMT(), n_images=3, relax_endpoints=False)


def _surface(miller: Any, **kw: Any) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        from ase_surftune.properties import surface_energies

        return surface_energies(CU, EMT(), [miller], relax_bulk=False, relax_slabs=False, **kw)
    return fn


def _phonons(**kw: Any) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        from ase_surftune.properties import phonons

        return phonons(CU, EMT(), **kw)
    return fn


def _relax(**kw: Any) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        from ase_surftune.properties import relax

        return relax(CU, EMT(), **kw)
    return fn


def _vacancy(**kw: Any) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        from ase_surftune.properties.neb import vacancy_migration

        return vacancy_migration(CU, EMT(), **kw)
    return fn


def _write_pair(tmp: Path) -> None:
    a = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    a.write(tmp / "a.xyz")
    a.write(tmp / "b.xyz")


CASES += [
    Case("neb-identical-endpoints", _neb_same, E.InvalidStructureError, "identical",
         "final state in which the migrating atom has moved"),
    Case("neb-nearly-identical", _neb_tiny_move, E.InvalidStructureError, "identical",
         "migrating atom"),
    Case("surface-987", _surface((9, 8, 7)), E.SizeLimitError, r"about \d+ atoms",
         "raise max_atoms"),
    Case("surface-987-estimate-time", _surface((9, 8, 7)), E.SizeLimitError, r"\d+ min",
         "lower-index facet"),
    Case("surface-765", _surface((7, 6, 5)), E.SizeLimitError, "facet", "max_atoms"),
    Case("surface-321-tight-limit", _surface((3, 2, 1), max_atoms=10), E.SizeLimitError,
         "max_atoms=10", "raise max_atoms"),
    Case("surface-miller-000", _surface((0, 0, 0)), E.ConfigError, "0, 0, 0|miller",
         "nonzero|at least|Miller|integer"),
    Case("surface-miller-text", _surface("abc"), E.ConfigError, "abc", "h, k, l|integer"),
    Case("surface-vacuum-tiny", _surface((1, 1, 1), min_vacuum_size=1.0), E.ConfigError,
         "min_vacuum_size", ">= 3"),
    Case("surface-slab-size-negative", _surface((1, 1, 1), min_slab_size=-1), E.ConfigError,
         "min_slab_size", "positive"),
    Case("phonons-huge-supercell", _phonons(supercell=12), E.SizeLimitError,
         r"1728 atoms", "raise max_atoms"),
    Case("phonons-supercell-matrix-huge", _phonons(supercell=[[11, 0, 0], [0, 11, 0],
                                                              [0, 0, 11]]),
         E.SizeLimitError, "1331 atoms", "smaller size"),
    Case("phonons-supercell-singular", _phonons(supercell=[[1, 0, 0], [0, 1, 0], [0, 0, 0]]),
         E.ConfigError, "supercell", "singular|determinant|integer"),
    Case("phonons-supercell-text", _phonons(supercell="big"), E.ConfigError, "supercell",
         "3 ints|integer"),
    Case("phonons-displacement-0", _phonons(displacement=0), E.ConfigError, "displacement",
         "positive"),
    Case("vacancy-huge-supercell", _vacancy(supercell=(13, 13, 13)), E.SizeLimitError,
         "2197 atoms", "raise max_atoms"),
    Case("relax-fmax-negative", _relax(fmax=-1), E.ConfigError, "fmax", "positive"),
    Case("relax-steps-negative", _relax(steps=-3), E.ConfigError, "steps", ">= 0"),
    Case("relax-optimizer", _relax(optimizer="newton"), E.ConfigError, "newton", "FIRE"),
    Case("cli-neb-identical-endpoints",
         lambda t: ["neb", str(t / "a.xyz"), str(t / "b.xyz"), "--reference", "emt"], None,
         "identical", "migrating atom", setup=_write_pair),
    Case("cli-surface-987",
         lambda t: ["surface", str(t / "cu.xyz"), "--reference", "emt", "--miller-indices",
                    "9,8,7"], None, r"about \d+ atoms", "max_atoms",
         setup=lambda t: CU.write(t / "cu.xyz")),
    Case("cli-phonons-huge-supercell",
         lambda t: ["phonons", str(t / "cu.xyz"), "--reference", "emt", "--supercell", "12"],
         None, "1728 atoms", "max_atoms", setup=lambda t: CU.write(t / "cu.xyz")),
    Case("cli-relax-random-bytes", lambda t: ["relax", str(t / "x.xyz"), "--reference", "emt"],
         None, "x.xyz", "structure|format|read",
         setup=lambda t: (t / "x.xyz").write_bytes(os.urandom(1000))),
]

# --------------------------------------------------------------------------- H. models


@functools.lru_cache(maxsize=1)
def _tiny_adapter():
    from ase_surftune.models.backends.mace import MACEAdapter

    return MACEAdapter(build_tiny_mace(), name="tiny")


def _check_atoms(atoms: Atoms) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        return _tiny_adapter().check_atoms(atoms)
    return fn


CASES += [
    Case("model-check-atoms-zero-distance",
         _check_atoms(Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0]], cell=[8, 8, 8],
                            pbc=True)), E.InvalidStructureError, "0.000 Å apart",
         "remove the duplicate"),
    Case("model-check-atoms-0.4",
         _check_atoms(Atoms("CuAu", positions=[[0, 0, 0], [0.4, 0, 0]], cell=[8, 8, 8],
                            pbc=True)), E.InvalidStructureError, "0.400 Å apart",
         "minimum 0.5 Å"),
    Case("model-check-atoms-nan",
         _check_atoms(Atoms("Cu", positions=[[math.nan, 0, 0]], cell=[8, 8, 8], pbc=True)),
         E.InvalidStructureError, "Non-finite", "atom indices"),
    Case("model-check-atoms-element",
         _check_atoms(Atoms("Fe", cell=[8, 8, 8], pbc=True)), E.UnsupportedElementError,
         "Fe", "covers"),
]

# --------------------------------------------------------------------------- the corpus


def test_corpus_is_large_and_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(ids) >= 150, len(ids)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, capsys, monkeypatch):
    run_case(case, tmp_path, capsys, monkeypatch)


def test_verbose_shows_the_traceback(tmp_path, capsys):
    (tmp_path / "cfg.yaml").write_text("model: [chgnet\n")
    code, err = run_cli(["finetune", str(tmp_path / "cfg.yaml"), "--check", "-v"], capsys)
    assert code == 2
    assert "Traceback" in err and "surftune finetune: error:" in err


# --------------------------------------------------------------------------- heavy: NaN training


def _tiny_cfg(tmp: Path, mace_file: str, **kw: Any) -> dict[str, Any]:
    return {"model": f"mace:{mace_file}", "epochs": 2, "batch_size": 2,
            "output_dir": str(tmp / "run"), "progress": False, "plot": False,
            "scheduler": {"name": "none"}, "clip_grad": None, "valid_fraction": 0.0,
            "forgetting": {"enabled": False}, **kw}


@pytest.fixture(scope="module")
def mace_file(tmp_path_factory) -> str:
    return save_tiny_mace(tmp_path_factory.mktemp("m") / "tiny.stbundle")


@pytest.mark.slow
def test_lr_1e6_diverges_with_an_error_and_no_bundle(tmp_path, mace_file):
    from ase_surftune.training import finetune

    train = make_emt_slabs(4, size=(1, 1, 3))
    with pytest.raises(E.TrainingDivergedError) as info:
        finetune(_tiny_cfg(tmp_path, mace_file, optimizer={"lr": 1e6}, epochs=6), train=train)
    msg = str(info.value)
    assert "epoch" in msg and "step" in msg and "lr" in msg
    assert not (tmp_path / "run" / "model.stbundle").exists()


@pytest.mark.slow
def test_cli_nan_training_exits_2_without_bundle(tmp_path, mace_file, capsys):
    import ase.io

    ase.io.write(tmp_path / "train.xyz", make_emt_slabs(4, size=(1, 1, 3)))
    import yaml

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(
        _tiny_cfg(tmp_path, mace_file, train_file=str(tmp_path / "train.xyz"),
                  optimizer={"lr": 1e6}, epochs=6)))
    code, err = run_cli(["finetune", str(tmp_path / "cfg.yaml"), "--no-progress"], capsys)
    assert code == 2, err
    assert "non-finite" in err and "Lower optimizer.lr" in err
    assert not (tmp_path / "run" / "model.stbundle").exists()


@pytest.mark.slow
def test_calculator_raises_on_non_finite_outputs(tmp_path):
    from ase_surftune.models.backends.mace import MACEAdapter
    from ase_surftune.models.bundle import Bundle
    from ase_surftune.models.calculator import SurfTuneCalculator

    adapter = MACEAdapter(build_tiny_mace(), name="tiny")
    with torch.no_grad():
        for p in adapter.model.parameters():
            p.fill_(math.nan)
    calc = SurfTuneCalculator(Bundle(adapter=adapter))
    a = fcc111("Cu", (1, 1, 3), vacuum=5.0)
    a.calc = calc
    with pytest.raises(E.NonFiniteOutputError, match="non-finite energy"):
        a.get_potential_energy()


def test_ctrl_c_stops_an_inline_sweep():
    from ase_surftune.core.parallel import map_tasks

    seen = []

    def task(i):
        seen.append(i)
        if i == 1:
            raise KeyboardInterrupt
        return i

    with pytest.raises(KeyboardInterrupt):
        map_tasks(task, [0, 1, 2, 3], progress=False)
    assert seen == [0, 1]


def test_a_task_exception_is_still_reported_per_task():
    from ase_surftune.core.parallel import map_tasks

    res = map_tasks(lambda i: 1 / i, [1, 0, 2], progress=False)
    assert [r.ok for r in res] == [True, False, True]
    assert "ZeroDivisionError" in res[1].error
