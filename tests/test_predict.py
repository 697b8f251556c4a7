"""models.predict.predict_with: one prediction path, chosen by type, same numbers as the
calculator interface (batched for models, per structure for any ASE calculator)."""

from __future__ import annotations

import numpy as np
import pytest
from _models import tiny_mace
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT

from ase_surftune.models.bundle import Bundle
from ase_surftune.models.calculator import SurfTuneCalculator
from ase_surftune.models.correction import LinearCorrection
from ase_surftune.models.predict import Predicted, predict_with


def _structures():
    slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    slab.rattle(0.05, seed=1)
    cu = bulk("Cu", cubic=True)
    cu.rattle(0.05, seed=2)
    cuau = bulk("CuAu", "rocksalt", a=4.8)
    return [slab, cu, cuau]


def _direct(calc, atoms, stress):
    a = atoms.copy()
    a.calc = calc
    return (a.get_potential_energy(), a.get_forces(apply_constraint=False),
            a.get_stress(voigt=True) if stress else None)


def test_any_ase_calculator_goes_one_by_one_and_matches_emt_exactly():
    configs = _structures()
    want = [False, True, True]
    pred = predict_with(EMT(), configs, compute_stress=want)
    assert isinstance(pred, Predicted)
    e, f, s = pred  # still unpacks like the old tuple
    for i, a in enumerate(configs):
        e0, f0, s0 = _direct(EMT(), a, want[i])
        assert e[i] == e0
        np.testing.assert_array_equal(f[i], f0)
        assert (s[i] is None) == (not want[i])
        if want[i]:
            np.testing.assert_array_equal(s[i], s0)
    assert all(a.calc is None for a in configs)  # inputs untouched
    with pytest.raises(ValueError, match="one flag per structure"):
        predict_with(EMT(), configs, compute_stress=[True])


@pytest.mark.slow
def test_models_are_batched_by_type_with_head_and_correction():
    configs = _structures()
    bundle = Bundle(tiny_mace(heads=("pt_head", "surface")),
                    corrections={"surface": LinearCorrection(scale=1.3, shifts={"Cu": 0.2})})
    calc = SurfTuneCalculator(bundle, head="surface")
    want = [False, True, True]
    by_calc = predict_with(calc, configs, compute_stress=want, batch_size=2)
    by_bundle = predict_with(bundle, configs, compute_stress=want, head="surface")
    for i, a in enumerate(configs):
        e0, f0, s0 = _direct(SurfTuneCalculator(bundle, head="surface"), a, want[i])
        for pred in (by_calc, by_bundle):
            assert pred.energy[i] == pytest.approx(e0, abs=1e-9)
            np.testing.assert_allclose(pred.forces[i], f0, atol=1e-9)
            if want[i]:
                np.testing.assert_allclose(pred.stress[i], s0, atol=1e-9)
            else:
                assert pred.stress[i] is None
    other = predict_with(bundle, configs, head="pt_head")
    assert not np.allclose(other.energy, by_bundle.energy)  # the head is honoured


def test_a_lookalike_object_is_not_taken_for_a_model():
    """The old path picked the batched branch by ``hasattr(calc, "bundle")``."""

    class LooksLikeOne(EMT):
        bundle = None

        def predict(self, *args, **kwargs):  # pragma: no cover - must not be called
            raise AssertionError("batched path taken for a plain ASE calculator")

    configs = _structures()[:2]
    e, _, _ = predict_with(LooksLikeOne(), configs)
    assert e[0] == _direct(EMT(), configs[0], False)[0]
