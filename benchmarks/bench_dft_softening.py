"""Study: correcting bundled CHGNet's softening on real PBE data (Cu), issue 12.

Reads the GPAW PBE labels written by ``benchmarks/dft_cu_set.py`` (resumable cache,
default ``../dft_cache/cu_pbe/labels.extxyz`` next to the repository, or
$SURFTUNE_DFT_CACHE; run that first) and compares, on the
same structures:

* ``zero-shot``       bundled CHGNet
* ``scalar mse``      :func:`ase_surftune.models.correction.fit_linear_correction_from_calc`
                      as it is on this branch (a = ΣF_ref·F_m/ΣF_m²)
* ``scalar slope``    slope-restoring scale a = ΣF_ref²/ΣF_ref·F_m + shift
* ``pair``            a = 1 + short-range pair residual (candidate b)
* ``embedding``       free a + embedding residual Σ ρ_i², Σ ρ_i³ (candidate c)
* ``env``             free a + pair + ρ² embedding (the environment-aware correction)
* ``env slope``       slope-restoring a, then pair + ρ² residual
* ``env +E,σ``        as ``env`` with energies weighted ×10 and stresses (×100) in the fit
* ``env moments``     free a + 2 pair + ρ² + moments l = 1, 2 + a well (w = 0.05 Å) about
                      the bulk bond, rc = 4.36 Å (two shells), each fit structure weighted
                      relative to its own force signal (``ENV_MOMENTS``); chosen on this
                      set (``explore_env_bases.py``), then frozen and checked on the
                      confirmation set (``--confirm-cache``, ``dft_cu_set.py --confirm``)
* ``env moments, EOS kept``  the same holding CHGNet's own E(V) of ideal Cu (``keep_eos``)
* ``env moments +E``  the same with energies weighted ×100
* ``env gated``       free a + 2 pair + ρ² + moment l = 2 + a well (w = 0.10 Å), each term
                      twice: as is and weighted by each atom's bulk-likeness (first-shell
                      count gate, width 0.5 neighbours), ridge 0.1, frame weighting
                      (``ENV_GATED``); chosen on the study and confirmation sets together
                      for robustness over every choice of fit triple
                      (``explore_env_bases.py --triples``), then frozen and checked on the
                      third set (``--third-cache``, ``dft_cu_set.py --set third``) and a
                      fourth (``--fourth-cache``, ``--set fourth``), then on a fifth and
                      a sixth with 2×2 slabs (``--fifth-cache``, ``--sixth-cache``)
* ``env gated +E``    the same with energies weighted ×10
* ``frozen``          fine-tuned, first 3 blocks frozen (package finetune API)
* ``multihead``       new head ``pbe`` on the shared trunk, foundation head on replay
                      (bulk cells + the training structures pseudo-labelled by CHGNet)
* ``multihead bulk-replay``  the same, replaying only pseudo-labelled bulk cells

Every correction and fine-tune is fitted on the same 3 structures (``FIT_NAMES``: a
rattled vacancy cell, a compressed bulk cell, a rattled (111) slab, as in the issue; or
``--fit NAME ...``, e.g. a rattled bulk cell near a0 instead of the compressed one); every
number in the tables is computed on the *other* structures only (held out). Groups that contribute
no structure to the fit are marked ``*`` (fully unseen kind of structure).

Properties, each from the same model on the same fixed geometries as PBE:

* γ(111), γ(100) in J/m²: unrelaxed 1×1×4 slabs vs the ideal 4-atom bulk at a = 3.63 Å
* vacancy hop barrier in eV: E(mid-point) − E(vacancy), unrelaxed, linear path,
  8-site cell (a fixed-geometry barrier, not a NEB)
* B in GPa and a0 in Å: Birch–Murnaghan fit to the five 4-atom cells at −2…+2 % strain

Run (the model part takes a few minutes; ``--no-finetune`` skips frozen/multi-head)::

    PYTHONPATH=. python benchmarks/bench_dft_softening.py [--cache DIR [DIR ...]] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.units import GPa, J, m

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dft_cu_set import DEFAULT_OUT, read_set  # noqa: E402

from ase_surftune.data import get_labels  # noqa: E402
from ase_surftune.models.correction import fit_linear_correction_from_calc, softening_scale  # noqa: E402
from ase_surftune.models.env_correction import (  # noqa: E402
    EnvCorrectedCalculator,
    EnvCorrection,
    fit_env_correction,
)

FIT_NAMES = ("vac_rattle_0", "compr_0", "slab111_rattle_0")
GROUPS = ("bulk_eq", "bulk_compressed", "phonon", "slab111", "slab100", "slab110", "vacancy")
#: rms reference force (eV/Å) below which a group has too little signal for a slope
MIN_FORCE_RMS = 0.02
RC = 3.1  # Å, first neighbour shell of Cu only
#: Å, first and second shells (1.7 × the nearest-neighbour distance of the set's lattice,
#: auto_rc(shells=2) of an ideal crystal), for the moment and well terms
RC2 = 1.7 * 3.63 / np.sqrt(2)


def _model_values(atoms: Atoms, calc: Any) -> tuple[float, np.ndarray]:
    work = atoms.copy()
    work.calc = calc
    return float(work.get_potential_energy()), np.asarray(
        work.get_forces(apply_constraint=False), dtype=float)


def _predict(frames: list[Atoms], calc: Any) -> dict[str, tuple[float, np.ndarray]]:
    return {a.info["name"]: _model_values(a, calc) for a in frames}


def _reference(frames: list[Atoms]) -> dict[str, tuple[float, np.ndarray]]:
    out = {}
    for a in frames:
        e, f, _ = get_labels(a)
        out[a.info["name"]] = (float(e), np.asarray(f, dtype=float))
    return out


def _wrap(base: Any, corr: EnvCorrection) -> EnvCorrectedCalculator:
    return EnvCorrectedCalculator(base, corr)


# --------------------------------------------------------------------------- properties


def properties(vals: dict[str, tuple[float, np.ndarray]], frames: dict[str, Atoms]
               ) -> dict[str, float | None]:
    """γ(111), γ(100) (J/m²), hop barrier (eV), B (GPa), a0 (Å) from energies ``vals``.

    An energy difference is only taken between frames labelled at one k-point density
    (a mixed pair would measure the k-point error, not the property): such a property
    is left out (n/a).
    """
    from ase.eos import EquationOfState

    def same_mesh(*names: str) -> bool:
        return len({frames[n].info.get("kpt_density", 2.0) for n in names}) == 1

    out: dict[str, float | None] = {}
    if "eos_+0.00" in vals:
        e_bulk = vals["eos_+0.00"][0] / len(frames["eos_+0.00"])
        for facet in ("111", "100", "110"):
            name = next((n for n in (f"slab{facet}_ideal", f"c_slab{facet}_ideal")
                         if n in vals), None)
            if name is not None and same_mesh(name, "eos_+0.00"):
                slab = frames[name]
                area = float(np.linalg.norm(np.cross(slab.cell[0], slab.cell[1])))
                gamma = (vals[name][0] - len(slab) * e_bulk) / (2 * area)
                out[f"gamma_{facet}"] = gamma / (J / m ** 2)
    if "vac_hop_mid" in vals and "vac_ideal" in vals and same_mesh("vac_hop_mid", "vac_ideal"):
        out["barrier"] = vals["vac_hop_mid"][0] - vals["vac_ideal"][0]
    eos_names = [n for n in vals if n.startswith("eos_")]
    if len(eos_names) >= 5 and same_mesh(*eos_names):
        vols = [frames[n].get_volume() / len(frames[n]) for n in eos_names]
        ens = [vals[n][0] / len(frames[n]) for n in eos_names]
        eos = EquationOfState(vols, ens, eos="birchmurnaghan")
        v0, _, b = eos.fit()
        out["B"] = b / GPa
        out["a0"] = (4 * v0) ** (1 / 3)
    return out


def group_metrics(vals: dict[str, tuple[float, np.ndarray]],
                  ref: dict[str, tuple[float, np.ndarray]], frames: list[Atoms],
                  fit_names: Sequence[str] = FIT_NAMES) -> dict[str, dict[str, Any]]:
    """Per group on held-out frames (not in ``fit_names``): s (or None: too little force
    signal), force MAE, and s of each frame on its own (``s_per_frame``, name → s or None)."""
    out: dict[str, dict[str, Any]] = {}
    for g in GROUPS:
        names = [a.info["name"] for a in frames
                 if a.info["config_type"] == g and a.info["name"] not in fit_names]
        if not names:
            continue
        fr = np.concatenate([ref[n][1].reshape(-1) for n in names])
        fm = np.concatenate([vals[n][1].reshape(-1) for n in names])
        rms = float(np.sqrt(np.mean(fr ** 2)))
        out[g] = {"n_frames": len(names), "f_rms_ref": rms, "s": _slope_or_none(fr, fm),
                  "force_mae": float(np.mean(np.abs(fr - fm))),
                  "s_per_frame": {n: _slope_or_none(ref[n][1], vals[n][1]) for n in names}}
    return out


def _slope_or_none(f_ref: np.ndarray, f_model: np.ndarray) -> float | None:
    """s of these force components (eV/Å), or None when the reference forces are too small
    (rms < ``MIN_FORCE_RMS``) to give one."""
    if float(np.sqrt(np.mean(f_ref ** 2))) < MIN_FORCE_RMS:
        return None
    return softening_scale(f_ref.reshape(-1), f_model.reshape(-1))


#: models whose per-frame slopes on the slab groups are printed (``frame_table``)
FRAME_MODELS = ("zero-shot", "scalar slope", "env gated")


def frame_table(results: dict[str, Any], groups: Sequence[str] = ("slab111", "slab100",
                                                                    "slab110")) -> str:
    """Per-frame s of :data:`FRAME_MODELS` on the held-out frames of ``groups``: how far
    one group's slope rests on one frame."""
    models = [m for m in FRAME_MODELS if m in results["models"]]
    gm0 = results["models"][models[0]]["groups"]
    if not any(gm0.get(g, {}).get("s_per_frame") for g in groups):
        return ""
    lines = ["Softening scale s of each slab frame on its own:\n",
             "| frame | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for g in groups:
        for n in gm0.get(g, {}).get("s_per_frame", {}):
            lines.append(f"| {n} | " + " | ".join(
                _fmt(results["models"][m]["groups"][g]["s_per_frame"][n], 2)
                for m in models) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- models


#: the environment-aware correction with moment and well terms (fit_env_correction keywords)
ENV_MOMENTS: dict[str, Any] = {"rc": RC2, "n_pair": 2, "embed_powers": (2.0,),
                               "moments": (1, 2), "wells": (0.05,), "scale": "fit",
                               "weighting": "frame"}


#: the gated environment correction (fit_env_correction keywords), frozen before the third
#: set was scored (docs/dft_softening_study.md)
ENV_GATED: dict[str, Any] = {"rc": RC2, "n_pair": 2, "embed_powers": (2.0,), "moments": (2,),
                             "wells": (0.10,), "gate": 0.5, "ridge": 0.1, "scale": "fit",
                             "weighting": "frame"}


def corrections(chgnet: Any, fit: list[Atoms]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Every correction candidate fitted on ``fit``: name -> (calculator, description)."""
    lin = fit_linear_correction_from_calc(fit, chgnet, fit="mse")  # the former default
    scalar_mse = EnvCorrection(scale=lin.scale, shifts=lin.shifts, rc=RC, n_pair=0,
                               embed_powers=(), coefficients=[])
    specs: dict[str, dict[str, Any]] = {
        "scalar slope": {"n_pair": 0, "embed_powers": (), "scale": "slope"},
        "pair": {"n_pair": 2, "embed_powers": (), "scale": "fixed"},
        "embedding": {"n_pair": 0, "embed_powers": (2.0, 3.0), "scale": "fit"},
        "env": {"n_pair": 2, "embed_powers": (2.0,), "scale": "fit"},
        "env slope": {"n_pair": 2, "embed_powers": (2.0,), "scale": "slope"},
        # sensitivity, weights fixed a priori (not tuned on the held-out scores): energies
        # ×10 and stresses (eV/Å³ errors are ~100× smaller than force errors in eV/Å)
        "env +E,σ": {"n_pair": 2, "embed_powers": (2.0,), "scale": "fit",
                     "energy_weight": 10.0, "stress_weight": 100.0},
        # chosen on this set with explore_env_bases.py, then frozen and checked on the
        # confirmation set (docs/dft_softening_study.md)
        "env moments": ENV_MOMENTS,
        # the same holding CHGNet's own E(V) of ideal fcc Cu (defined after B came out
        # 1.41× PBE on the study set, before the confirmation set was labelled)
        "env moments, EOS kept": {**ENV_MOMENTS, "keep_eos": bulk("Cu", "fcc", a=3.63,
                                                                  cubic=True)},
        # energies weighted so that 0.01 eV/atom counts as a 10 % force error (frame
        # weighting makes the force term relative), set a priori (defined after γ came
        # out unrecovered on the study set, before the confirmation set was labelled)
        "env moments +E": {**ENV_MOMENTS, "energy_weight": 100.0},
        "env gated": ENV_GATED,
        # the same with energies ×10: it kept γ at the zero-shot value on the study and
        # confirmation sets, where ENV_GATED lowered it (set before the third was scored)
        "env gated +E": {**ENV_GATED, "energy_weight": 10.0},
    }
    out = {"scalar mse": (_wrap(chgnet, scalar_mse), scalar_mse.to_dict())}
    for name, kw in specs.items():
        corr = fit_env_correction(chgnet, fit, **{"rc": RC, **kw})
        out[name] = (_wrap(chgnet, corr), corr.to_dict())
    return out


def finetuned(fit: list[Atoms], workdir: Path, epochs: int) -> dict[str, tuple[Any, dict]]:
    """Frozen and multi-head CHGNet fine-tuned on ``fit`` (validation = the fit frames)."""
    from ase_surftune.models.calculator import SurfTuneCalculator
    from ase_surftune.training import finetune

    common = {"model": "chgnet", "epochs": epochs, "batch_size": 3, "progress": False,
              "plot": False, "patience": None, "optimizer": {"lr": 5e-4},
              "scheduler": {"name": "none"}}
    out: dict[str, tuple[Any, dict]] = {}
    runs = {
        "frozen": {"strategy": "frozen", "freeze": {"k": 3},
                   "forgetting": {"enabled": False}},
        "multihead": {"strategy": "multihead", "forgetting": {"enabled": False},
                      "strategy_options": {"new_head": "pbe", "replay_weight": 5.0,
                                           "replay": {"n": 16, "selection": "fps",
                                                      "max_atoms": 8}}},
        # the same without pseudo-labelled training slabs in the foundation head's replay
        "multihead bulk-replay": {
            "strategy": "multihead", "forgetting": {"enabled": False},
            "strategy_options": {"new_head": "pbe", "replay_weight": 5.0,
                                 "replay": {"n": 16, "selection": "fps", "max_atoms": 8,
                                            "pseudolabel_new": False}}},
    }
    for name, extra in runs.items():
        t0 = time.perf_counter()
        res = finetune({**common, **extra, "output_dir": str(workdir / name)},
                       train=fit, valid=fit)
        head = "pbe" if name.startswith("multihead") else None
        calc = SurfTuneCalculator(str(res.bundle_path), head=head)
        out[name] = (calc, {"epochs": epochs, "seconds": time.perf_counter() - t0})
    return out


# --------------------------------------------------------------------------- report


def _fmt(v: Any, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def tables(results: dict[str, Any], fit_groups: set[str]) -> str:
    models = list(results["models"])
    lines = []
    groups = [g for g in GROUPS if g in results["models"][models[0]]["groups"]]
    label = {g: g + ("" if g in fit_groups else "*") for g in groups}
    lines.append("Softening scale s on held-out frames (target 0.9–1.1; n/a = too little force "
                 "signal; * = group absent from the fit):\n")
    lines.append("| model | " + " | ".join(label[g] for g in groups) + " |")
    lines.append("|---" * (len(groups) + 1) + "|")
    for mname in models:
        gm = results["models"][mname]["groups"]
        lines.append(f"| {mname} | " + " | ".join(_fmt(gm[g]["s"], 2) for g in groups) + " |")
    lines.append("\nForce MAE (eV/Å) on held-out frames:\n")
    lines.append("| model | " + " | ".join(label[g] for g in groups) + " |")
    lines.append("|---" * (len(groups) + 1) + "|")
    for mname in models:
        gm = results["models"][mname]["groups"]
        lines.append(f"| {mname} | " + " | ".join(_fmt(gm[g]["force_mae"], 3)
                                                 for g in groups) + " |")
    props = [(k, name) for k, name in (
        ("gamma_111", "γ(111) J/m²"), ("gamma_100", "γ(100) J/m²"),
        ("gamma_110", "γ(110) J/m²"), ("barrier", "hop barrier eV"), ("B", "B GPa"),
        ("a0", "a0 Å")) if k in results["pbe_properties"]]
    if not props:  # e.g. the third set: no ideal structures, no properties of its own
        return "\n".join(lines)
    lines.append("\nProperties (reference row = the labels, PBE in the study; ratio to it "
                 "in brackets):\n")
    lines.append("| model | " + " | ".join(p[1] for p in props) + " |")
    lines.append("|---" * (len(props) + 1) + "|")
    ref = results["pbe_properties"]
    lines.append("| reference | " + " | ".join(_fmt(ref.get(k), 3) for k, _ in props) + " |")
    for mname in models:
        pr = results["models"][mname]["properties"]
        cells = []
        for k, _ in props:
            v, r = pr.get(k), ref.get(k)
            ratio = "" if v is None or not r else f" ({v / r:.2f})"
            cells.append(_fmt(v, 3) + ratio)
        lines.append(f"| {mname} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_sets(caches: list[Path]) -> list[Atoms]:
    """The labelled frames of several caches; a structure in an earlier cache wins (e.g. a
    cache labelled at a denser k-point mesh before the original one)."""
    seen: dict[str, Atoms] = {}
    for cache in caches:
        for a in read_set(cache):
            seen.setdefault(a.info["name"], a)
    return list(seen.values())


def kpoint_summary(frames: list[Atoms]) -> dict[str, dict[str, int]]:
    """Per group: how many frames were labelled at each k-point density (Å⁻¹); frames
    without a recorded density come from the first cache, labelled at the demo's 2."""
    out: dict[str, dict[str, int]] = {}
    for a in frames:
        dens = str(a.info.get("kpt_density", 2.0))
        group = out.setdefault(a.info["config_type"], {})
        group[dens] = group.get(dens, 0) + 1
    return out


def run(caches: list[Path], do_finetune: bool, epochs: int,
        fit_names: Sequence[str] = FIT_NAMES,
        holdouts: dict[str, Sequence[Path]] | None = None) -> dict[str, Any]:
    """Fit every model on ``fit_names`` of ``caches`` and score it there (held-out frames)
    and on each wholly held-out set of ``holdouts`` (name -> label caches)."""
    import torch

    torch.set_num_threads(1)
    from ase_surftune.models.calculator import SurfTuneCalculator

    frames = read_sets(caches)
    by_name = {a.info["name"]: a for a in frames}
    missing = [n for n in fit_names if n not in by_name]
    if missing:
        raise SystemExit(f"fit structures not labelled yet: {missing}; run dft_cu_set.py")
    fit = [by_name[n] for n in fit_names]
    ref = _reference(frames)
    chgnet = SurfTuneCalculator("chgnet")
    models: dict[str, tuple[Any, dict]] = {"zero-shot": (chgnet, {})}
    models.update(corrections(chgnet, fit))
    with tempfile.TemporaryDirectory() as tmp:
        if do_finetune:
            models |= finetuned(fit, Path(tmp), epochs)
        results = _score(models, frames, by_name, ref, fit_names)
        for key, dirs in (holdouts or {}).items():
            if dirs:
                results[key] = score_confirmation(models, read_sets(list(dirs)), frames)
    results["fit_names"] = list(fit_names)
    results["n_frames"] = len(frames)
    results["kpt_density_per_group"] = kpoint_summary(frames)
    return results


def _score(models: dict[str, tuple[Any, dict]], frames: list[Atoms],
           by_name: dict[str, Atoms], ref: dict[str, tuple[float, np.ndarray]],
           fit_names: Sequence[str] = FIT_NAMES) -> dict[str, Any]:
    results: dict[str, Any] = {"pbe_properties": properties(ref, by_name), "models": {}}
    for name, (calc, desc) in models.items():
        vals = _predict(frames, calc)
        results["models"][name] = {"groups": group_metrics(vals, ref, frames, fit_names),
                                   "properties": properties(vals, by_name),
                                   "fit": desc}
    return results


def score_confirmation(models: dict[str, tuple[Any, dict]], confirm: list[Atoms],
                       study: list[Atoms]) -> dict[str, Any]:
    """Every model on a wholly held-out set (confirmation, third … sixth). The
    study's ideal bulk cells come along only as the bulk reference of γ (same k-point
    density required); they are not scored."""
    bulk = [a for a in study if a.info["name"].startswith("eos_")]
    frames = confirm + bulk
    by_name = {a.info["name"]: a for a in frames}
    out = _score(models, frames, by_name, _reference(frames),
                 [a.info["name"] for a in bulk])
    # only properties of confirmation structures (γ of its new facet); B, a0 and the
    # barrier would be the study's own
    own = {"gamma_110"}
    out["pbe_properties"] = {k: v for k, v in out["pbe_properties"].items() if k in own}
    for res in out["models"].values():
        res["properties"] = {k: v for k, v in res["properties"].items() if k in own}
    out["n_frames"] = len(confirm)
    out["kpt_density_per_group"] = kpoint_summary(confirm)
    return out


#: the wholly held-out sets: result key, table title, ``--<flag>-cache``, help
HELD_OUT = (
    ("confirmation", "Confirmation set", "confirm",
     "label caches of the confirmation set (dft_cu_set.py --confirm), scored as a second, "
     "wholly held-out set"),
    ("third", "Third set", "third", "label caches of the third set (dft_cu_set.py --set third)"),
    ("fourth", "Fourth set", "fourth",
     "label caches of the fourth set (dft_cu_set.py --set fourth)"),
    ("fifth", "Fifth set (2×2 slabs)", "fifth",
     "label caches of the fifth set (dft_cu_set.py --set fifth; 2×2 and 2×1 slabs)"),
    ("sixth", "Sixth set (2×2 slabs)", "sixth",
     "label caches of the sixth set (dft_cu_set.py --set sixth; 2×2 and 2×1 slabs)"),
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, nargs="+", default=[DEFAULT_OUT],
                   help="label caches; a structure in an earlier one wins")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--no-finetune", action="store_true")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--fit", nargs="+", default=list(FIT_NAMES), metavar="NAME",
                   help="names of the (≤ 3) fit structures (default: %(default)s)")
    for key, _title, flag, help_ in HELD_OUT:
        p.add_argument(f"--{flag}-cache", type=Path, nargs="*", default=[], help=help_)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    results = run(args.cache, not args.no_finetune, args.epochs, args.fit,
                  {key: getattr(args, f"{flag}_cache") for key, _t, flag, _h in HELD_OUT})
    frames = read_sets(args.cache)
    fit_groups = {a.info["config_type"] for a in frames if a.info["name"] in args.fit}
    print(f"{results['n_frames']} PBE frames; fit on {', '.join(args.fit)}; "
          f"{time.perf_counter() - t0:.0f} s")
    print("k-point density (1/Å) per group: " + "; ".join(
        f"{g} " + ", ".join(f"{n}×{d}" for d, n in sorted(c.items()))
        for g, c in sorted(results["kpt_density_per_group"].items())) + "\n")
    print(tables(results, fit_groups))
    print("\n" + frame_table(results))
    for key, title, _flag, _help in HELD_OUT:
        if key not in results:
            continue
        conf = results[key]
        print(f"\n{title} ({conf['n_frames']} PBE frames, none used to fit the corrections; "
              "k-point density per group: " + "; ".join(
                  f"{g} " + ", ".join(f"{n}×{d}" for d, n in sorted(c.items()))
                  for g, c in sorted(conf["kpt_density_per_group"].items())) + ")\n")
        print(tables(conf, set()))
        print("\n" + frame_table(conf))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
