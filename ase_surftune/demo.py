"""``surftune demo``: the whole story on the embedded default, in minutes, anywhere.

1. label a handful of Cu slab/defect configurations (rattled (111)/(100) slabs, a bulk
   vacancy, a (100) adatom, strained bulk) with the reference (EMT by default; ``gpaw``
   for real PBE);
2. zero-shot CHGNet vs the reference on held-out configurations: errors and the
   softening scale s;
3. fine-tune: linear correction, frozen (first 4 blocks fixed) and multi-head with
   replay (full mode);
4. the same property code for reference and every model: relaxed lattice constant,
   Cu(111)/(100) surface energies, vacancy migration barrier, phonon frequencies;
5. print the before/after table (property values, ratios to the reference) and the
   softening scales; write JSON/CSV/Markdown and the plots to the output folder.

``quick=True`` is a reduced version (fewer structures and epochs, smaller cells, no
multi-head) used by the test suite.

With ``reference="gpaw"`` every reference number is real PBE (plane waves, 300 eV,
k-point density 2/Å⁻¹, Fermi–Dirac 0.1 eV: :data:`GPAW_DEMO_SETTINGS`). To finish in
tens of minutes on 2 cores, the DFT run uses the small cells of the quick mode (3-layer
2×2 slabs, a 15-atom vacancy cell), unrelaxed surface slabs of 3 planes, a vacancy hop
with one climbing image between unrelaxed end points in the 8-site fcc cell (7 atoms),
and phonons in the 4-atom cubic cell; the fine-tuning and the models' side are as in the
full demo. See the README for the measured time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

__all__ = ["DemoResult", "run_demo", "demo_structures"]

log = logging.getLogger(__name__)

#: GPAW settings of ``surftune demo --reference gpaw``: PBE, cheap but converged enough
#: to rank the models (a 12-atom Cu slab takes about 45 s on one core).
GPAW_DEMO_SETTINGS: dict[str, Any] = {"mode": {"name": "pw", "ecut": 300.0}, "xc": "PBE",
                                      "kpts": {"density": 2.0, "gamma": True},
                                      "occupations": {"name": "fermi-dirac", "width": 0.1}}

#: property settings per demo size: "quick" (tests), "dft" (GPAW reference), "full"
PROPERTY_SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {"element": "Cu", "properties": ["lattice", "surface", "neb", "phonons"],
              "lattice": {"fmax": 0.05, "steps": 30},
              # 3 layers on purpose (speed): below the recommended 4, so it warns
              "surface": {"miller": ["111"], "min_slab_size": 5.0, "min_vacuum_size": 8.0,
                          "min_layers": 3, "relax": False},
              "neb": {"migrations": ["vacancy"], "n_images": 1, "supercell": [2, 2, 1],
                      "fmax": 0.1, "steps": 15, "relax_endpoints": False},
              "phonons": {"supercell": [1, 1, 1], "mesh": [4, 4, 4]}},
    "dft": {"element": "Cu", "properties": ["lattice", "surface", "neb", "phonons"],
            "lattice": {"fmax": 0.05, "steps": 20},
            "surface": {"miller": ["111", "100"], "min_slab_size": 5.0,
                        "min_vacuum_size": 8.0, "min_layers": 3, "relax": False},
            # 7 atoms: the 8-site fcc cell (2×2×2 primitive cells) minus the vacancy
            "neb": {"migrations": ["vacancy"], "n_images": 1,
                    "supercell": [[0, 1, 1], [1, 0, 1], [1, 1, 0]],
                    "fmax": 0.1, "steps": 30, "relax_endpoints": False},
            "phonons": {"supercell": [1, 1, 1], "mesh": [6, 6, 6]}},
    # one climbing image: the fcc vacancy hop is symmetric, its saddle is the midpoint
    "full": {"element": "Cu", "properties": ["lattice", "surface", "neb", "phonons"],
             "lattice": {"fmax": 0.01, "steps": 100},
             "surface": {"miller": ["111", "100"], "min_slab_size": 7.0,
                         "min_vacuum_size": 8.0, "fmax": 0.05, "steps": 150},
             "neb": {"migrations": ["vacancy"], "n_images": 1, "supercell": [2, 2, 2],
                     "fmax": 0.05, "steps": 150},
             "phonons": {"supercell": [2, 2, 2], "mesh": [8, 8, 8]}},
}


def demo_reference(name: str) -> Any:
    """The demo's reference calculator: EMT, or GPAW with :data:`GPAW_DEMO_SETTINGS`."""
    from ase_surftune.models.references import get_reference_calculator

    if name.lower() == "gpaw":
        return get_reference_calculator("gpaw", **GPAW_DEMO_SETTINGS)
    return get_reference_calculator(name)


@dataclass
class DemoResult:
    """What the demo measured and where it wrote it."""

    output_dir: Path
    models: dict[str, str]
    evaluation: Any
    comparison: Any
    summary_rows: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)

    def summary_markdown(self) -> str:
        from ase_surftune.evaluation.tables import fmt

        keys = [k for k in self.summary_rows[0] if k not in ("model", "force_softening_s",
                                                            "force_mae")]
        labels = self.comparison.labels
        head = ["model", "force MAE (eV/Å)", "force softening s"] + \
            [f"{labels.get(k, k)} ratio" for k in keys]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for r in self.summary_rows:
            lines.append("| " + " | ".join([r["model"], fmt(r["force_mae"]),
                                            fmt(r["force_softening_s"], 3)]
                                           + [fmt(r[k], 3) for k in keys]) + " |")
        return "\n".join(lines)


def demo_structures(n_per_kind: int, seed: int = 0, rattle: float = 0.06,
                    small: bool = False, with_bulk: bool = True) -> list[Atoms]:
    """Rattled Cu structures: (111) and (100) slabs, a bulk vacancy, a (100) adatom, bulk.

    The bulk cells (``config_type="bulk"``: the 4-atom cubic cell, ±1 % strain, rattled)
    give training the slab-vs-bulk energy difference that a surface energy is; without
    them fine-tuning lowers force errors but cannot move γ. They come last, from their
    own random stream, so the other structures (and labels cached for them) are the
    same with and without them.
    """
    from ase.build import add_adsorbate, bulk, fcc100, fcc111

    rng = np.random.default_rng(seed)
    a = 3.6
    layers = 3 if small else 4
    out = []
    for i in range(n_per_kind):
        s111 = fcc111("Cu", (2, 2, layers), a=a, vacuum=6.0, periodic=True)
        s100 = fcc100("Cu", (2, 2, layers), a=a, vacuum=6.0, periodic=True)
        vac = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 1) if small else (2, 2, 2))
        del vac[0]
        ad = fcc100("Cu", (2, 2, 3), a=a, vacuum=6.0, periodic=True)
        add_adsorbate(ad, "Cu", 1.8, "hollow")
        for kind, atoms in (("slab111", s111), ("slab100", s100), ("vacancy", vac),
                            ("adatom100", ad)):
            atoms = atoms.copy()
            atoms.info.pop("adsorbate_info", None)  # a dict extxyz cannot store (warns)
            strain = 1 + rng.uniform(-0.02, 0.02)
            atoms.set_cell(atoms.cell * strain, scale_atoms=True)
            atoms.positions += rng.normal(scale=rattle * (1 + i % 2), size=atoms.positions.shape)
            atoms.info["config_type"] = kind
            out.append(atoms)
    if with_bulk:
        rng_bulk = np.random.default_rng(seed + 1)
        for i in range(n_per_kind):
            atoms = bulk("Cu", "fcc", a=a * (1 + rng_bulk.uniform(-0.01, 0.01)), cubic=True)
            atoms.positions += rng_bulk.normal(scale=rattle * (1 + i % 2),
                                               size=atoms.positions.shape)
            atoms.info["config_type"] = "bulk"
            out.append(atoms)
    return out


def run_demo(output: str | Path = "demo_out", *, reference: str = "emt", quick: bool = False,
             model: str = "chgnet", progress: bool = True, num_threads: int | None = 1,
             echo: Any = print) -> DemoResult:
    """Run the demo; returns a :class:`DemoResult` and writes everything under ``output``.

    Args:
        output: output folder (labels, fine-tuned bundles, evaluation, comparison, plots).
        reference: ``"emt"`` (instant, runs anywhere) or ``"gpaw"`` (PBE, ``[dft]`` extra).
        quick: reduced run for tests (about a minute on 2 cores).
        model: base model spec.
        num_threads: torch threads during the demo (restored afterwards). 1 by default:
            the demo's graphs are small, and on 2 shared cores one thread per process
            was 4-5x faster per CHGNet call than two (measured); None keeps torch's.
        echo: where the tables and stage headers go (``print`` by default).
    """
    import torch

    old_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        return _run(output, reference, quick, model, progress, echo)
    finally:
        torch.set_num_threads(old_threads)


class _Stages:
    """Wall-clock seconds of the demo's stages (reported, never asserted)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t_all = time.perf_counter()

    def done(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.perf_counter() - t0, 2)

    def total(self) -> None:
        self.timings["total"] = round(time.perf_counter() - self._t_all, 2)


def _label_data(out: Path, reference: str, ref_calc: Any, quick: bool, dft: bool,
                progress: bool) -> tuple[list[Atoms], list[Atoms]]:
    """Stage 1: reference labels of the demo structures, split into (train, test)."""
    from ase_surftune.data import label, split

    configs = demo_structures(2 if quick or dft else 5, small=quick or dft)
    labels_path = out / f"labels_{reference}{'_quick' if quick else ''}.xyz"
    labelled = label(configs, ref_calc, labels_path, progress=progress)
    for a, c in zip(labelled, configs):
        a.info["config_type"] = c.info["config_type"]
    # stratified: every kind of structure (slab111, slab100, vacancy, adatom, bulk) is in
    # both the training and the held-out set
    parts = split(labelled, (0.5, 0.0, 0.5) if quick or dft else (0.6, 0.0, 0.4), seed=0,
                  stratify="config_type")
    return parts.train, parts.test


def _finetune_models(out: Path, model: str, train: list[Atoms], test: list[Atoms],
                     quick: bool, progress: bool) -> dict[str, str]:
    """Stage 2: linear, frozen (and multi-head in full mode) fine-tuning; name -> spec."""
    from ase_surftune.training import finetune
    from ase_surftune.training.strategies import STRATEGIES

    epochs = 2 if quick else 20
    common = {"model": model, "epochs": epochs, "batch_size": 4,
              "valid_fraction": 0.0, "progress": progress, "plot": True, "seed": 0,
              "optimizer": {"lr": 2e-3}, "scheduler": {"name": "none"},
              "forgetting": {"enabled": False}}
    runs: dict[str, dict[str, Any]] = {
        "linear": {"strategy": "linear"},
        "frozen": {"strategy": "frozen", "freeze": {"k": 4}},
    }
    if not quick and "multihead" in STRATEGIES:
        runs["multihead"] = {"strategy": "multihead", "epochs": max(epochs // 2, 2),
                             "strategy_options": {"new_head": "surface",
                                                  "replay": {"n": 8}}}
    models: dict[str, str] = {"zero-shot": model}
    for name, extra in runs.items():
        cfg = {**common, **extra, "output_dir": str(out / "finetune" / name), "resume": "auto"}
        res = finetune(cfg, train=train, valid=[], test=test)
        spec = str(res.bundle_path)
        if name == "multihead":
            spec += "@" + res.metrics.get("head", "surface")
        models[name] = spec
    return models


def _summary_rows(ev: Any, cmp: Any) -> list[dict[str, Any]]:
    """One row per model: force MAE, softening scale s and every property ratio."""
    rows = []
    for m in ev.models:
        row: dict[str, Any] = {"model": m.model, "force_mae": m.overall.forces_mae,
                               "force_softening_s": m.overall.softening_scale}
        for key in cmp.property_keys():
            row[key] = cmp.ratio(key, m.model)
        rows.append(row)
    return rows


def _report(result: DemoResult, reference: str, quick: bool, echo: Any) -> None:
    """Stage 5: print the tables and write demo_summary.md/.json."""
    from ase_surftune.core.io import atomic_write_text
    from ase_surftune.evaluation.tables import write_json

    out, ev, cmp, timings = result.output_dir, result.evaluation, result.comparison, \
        result.timings
    echo("[5/5] results\n")
    echo(f"Properties: each model vs the reference ({reference}); ratio < 1 = softer; "
         f"(nc) = not converged or imaginary phonon modes\n")
    echo(cmp.to_markdown())
    echo("\nErrors on held-out structures (energies aligned per element)\n")
    echo(ev.to_markdown(groups=False))
    echo("\nSoftening before/after fine-tuning (force-level s and property ratios; 1 = "
         "reference)\n")
    summary = result.summary_markdown()
    echo(summary)
    atomic_write_text(out / "demo_summary.md",
                      "# surftune demo\n\n## Properties\n\n" + cmp.to_markdown()
                      + "\n\n## Errors\n\n" + ev.to_markdown() + "\n\n## Softening\n\n"
                      + summary + "\n")
    write_json({"reference": reference, "quick": quick, "models": result.models,
                "summary": result.summary_rows, "timings": timings},
               out / "demo_summary.json")
    echo(f"\nwrote {out}/: demo_summary.md/.json, evaluate/ (parity plots), compare/ "
         f"(comparison.png), finetune/ (bundles, loss curves); total {timings['total']:.0f} s")


def _run(output: str | Path, reference: str, quick: bool, model: str, progress: bool,
         echo: Any) -> DemoResult:
    from ase_surftune.evaluation import compare, evaluate
    from ase_surftune.evaluation._spec import make_calculator

    stages = _Stages()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    dft = reference.lower() == "gpaw"

    t0 = time.perf_counter()
    echo(f"[1/5] labelling Cu slab/defect structures with the reference ({reference})")
    ref_calc = demo_reference(reference)
    train, test = _label_data(out, reference, ref_calc, quick, dft, progress)
    stages.done("label", t0)

    t0 = time.perf_counter()
    echo(f"[2/5] fine-tuning {model} on {len(train)} structures (test set: {len(test)})")
    models = _finetune_models(out, model, train, test, quick, progress)
    stages.done("finetune", t0)

    t0 = time.perf_counter()
    echo("[3/5] errors and softening scale on the held-out structures")
    # energy reference fitted on the training frames, never on the scored test frames
    ev = evaluate([(n, make_calculator(s)) for n, s in models.items()], test,
                  align_on=train, progress=progress)
    ev.write(out / "evaluate")
    stages.done("evaluate", t0)

    t0 = time.perf_counter()
    echo("[4/5] properties with the reference and every model (same code for all)")
    # quick: smoke-test sizes, every stage runs, numbers are indicative only
    settings = PROPERTY_SETTINGS["quick" if quick else ("dft" if dft else "full")]
    cmp = compare((reference, ref_calc), [(n, make_calculator(s)) for n, s in models.items()],
                  settings, progress=progress, output_dir=out / "compare")
    stages.done("compare", t0)

    stages.total()
    result = DemoResult(output_dir=out, models=models, evaluation=ev, comparison=cmp,
                        summary_rows=_summary_rows(ev, cmp), timings=stages.timings)
    _report(result, reference, quick, echo)
    return result
