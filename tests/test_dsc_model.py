"""The DSC lab's dictionaries and signal model: known coherences, exact sparsity, determinism, J = 2 chains."""

import math

import pytest
import torch

from analysis.dictionary import conv_shift_coherence, gram_stats
from analysis.dsc.dictionaries import conv1d, conv2d, design, gaussian, hadamard, make_dictionary
from analysis.dsc.generator import DSCModel
from analysis.errors import AnalysisError


@pytest.mark.parametrize("n", [16, 64, 256])
def test_identity_plus_hadamard_has_coherence_one_over_sqrt_n(n):
    d = hadamard(n)
    assert (d.n, d.m) == (n, 2 * n)
    assert d.mu == pytest.approx(1 / math.sqrt(n), rel=1e-6)  # gram_stats works in float32
    assert d.s_star == pytest.approx(0.5 * (1 + math.sqrt(n)))
    assert d.lipschitz == pytest.approx(2.0)  # two orthonormal bases
    assert torch.allclose(d.matrix.norm(dim=0), torch.ones(2 * n, dtype=torch.float64))


@pytest.mark.parametrize(("p", "d"), [(7, 3), (31, 8), (11, 11)])
def test_design_atoms_share_at_most_one_row_so_mu_is_one_over_d(p, d):
    dic = design(p, d)
    support = (dic.matrix > 0).double()
    overlap = support.T @ support
    overlap.fill_diagonal_(0)
    assert dic.nonnegative and int(overlap.max()) == 1 and (support.sum(0) == d).all()
    assert dic.mu == pytest.approx(1 / d, rel=1e-6) and (dic.n, dic.m) == (d * p, p * p)


def test_convolutional_coherence_is_the_shift_aware_coherence_of_the_filters():
    cases = ((conv1d(64, 13), 1 / 13), (conv2d(16, 7), 1 / 7), (conv1d(48, 11, channels=3, filters="gaussian"), None))
    for dic, expected in cases:
        dense_mu = gram_stats(dic.matrix.T)["mu"]  # every atom at every circular shift, brute force
        assert dic.mu_source == "conv_shift_coherence"
        assert dic.mu == pytest.approx(conv_shift_coherence(dic.filters.float()), rel=1e-6)
        assert dic.mu == pytest.approx(dense_mu, rel=1e-5)
        if expected:
            assert dic.mu == pytest.approx(expected, rel=1e-5)  # Barker codes: sidelobes 1/k


def test_stripe_sparsity_counts_nonzeros_overlapping_one_atom():
    dic = conv1d(32, 13)  # an atom at p overlaps atoms at |q - p| < 13 (circularly)
    codes = torch.zeros(3, 32, dtype=torch.float64)
    codes[0, [0, 13, 26]] = 1  # the atom at 20 overlaps 13, 26 and 32 ≡ 0
    codes[1, [0, 16]] = 1
    codes[2, [0]] = 2
    assert dic.stripe_l0(codes).tolist() == [3, 2, 1]
    assert hadamard(16).stripe_l0(codes.new_ones(2, 32)).tolist() == [32, 32]  # dense: the whole code


@pytest.mark.parametrize(("name", "params"), [("hadamard", {"n": 48}), ("design", {"p": 9, "d": 3}), ("design", {"p": 7, "d": 8}),
                                              ("conv1d", {"n": 20, "k": 13}), ("conv1d", {"k": 6}), ("nope", {}),
                                              ("gaussian", {"size": 3})])
def test_bad_dictionary_parameters_are_analysis_errors(name, params):
    with pytest.raises(AnalysisError):
        make_dictionary(name, **params)


def test_samples_have_exactly_s_nonnegative_nonzeros_in_the_amplitude_range():
    model = DSCModel.from_spec({"layers": [{"dictionary": "hadamard", "n": 64}], "s": 3, "amplitude": [0.25, 1.0]})
    batch = model.sample(200, seed=5)
    code = batch.codes[0]
    nz = code[code != 0]
    assert ((code != 0).sum(1) == 3).all() and (nz >= 0.25).all() and (nz <= 1.0).all()
    assert torch.equal(batch.x, code @ model.dictionaries[0].matrix.T)  # σ = 0: x = DΓ exactly
    assert batch.in_theory.all() and model.contrast == 0.25


def test_sampling_is_deterministic_and_noise_scales_with_sigma_on_the_same_codes():
    spec = {"layers": [{"dictionary": "hadamard", "n": 16}], "s": 2, "sigma": 0.01}
    a, b = DSCModel.from_spec(spec).sample(64, seed=3), DSCModel.from_spec(spec).sample(64, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.codes[0], b.codes[0])
    c = DSCModel.from_spec({**spec, "sigma": 0.03}).sample(64, seed=3)
    assert torch.equal(a.codes[0], c.codes[0])
    assert torch.allclose(c.noise, 3 * a.noise, rtol=1e-12, atol=0)
    assert not torch.equal(a.x, DSCModel.from_spec(spec).sample(64, seed=4).x)


def test_two_layer_codes_chain_through_a_nonnegative_design():
    spec = {"layers": [{"dictionary": "hadamard", "n": 64}, {"dictionary": "design", "p": 31, "d": 4, "rows": 128}], "s": 2}
    model = DSCModel.from_spec(spec)
    batch = model.sample(100, seed=0)
    g1, g2 = batch.codes
    assert torch.allclose(g1, g2 @ model.dictionaries[1].matrix.T) and (g1 >= 0).all()
    assert ((g1 != 0).sum(1) <= 8).all() and ((g2 != 0).sum(1) == 2).all()
    assert batch.stripe_l0.shape == (100, 2)
    # layer 1 sees up to 8 non-zeros, above its bound ½(1 + 8) = 4.5: out of theory wherever the supports don't overlap
    assert batch.in_theory.tolist() == (batch.stripe_l0[:, 0] < 4.5).tolist()


def test_inner_dictionaries_must_be_nonnegative_and_shapes_must_chain():
    with pytest.raises(AnalysisError, match="non-negative"):
        DSCModel.from_spec({"layers": [{"dictionary": "hadamard", "n": 16}, {"dictionary": "gaussian", "n": 32}], "s": 1})
    with pytest.raises(AnalysisError, match="rows"):
        DSCModel.from_spec({"layers": [{"dictionary": "hadamard", "n": 16}, {"dictionary": "design", "p": 7, "d": 3}], "s": 1})
    with pytest.raises(AnalysisError, match="unknown problem key"):
        DSCModel.from_spec({"layers": [{"dictionary": "hadamard", "n": 16}], "s": 1, "sigmaa": 0.1})


def test_convolutional_codes_respect_the_stripe_sparsity():
    model = DSCModel.from_spec({"layers": [{"dictionary": "conv1d", "n": 64, "k": 13}], "s": 3})
    batch = model.sample(64, seed=0)
    assert (batch.stripe_l0[:, 0] == 3).all()  # greedy fill reaches the bound
    assert (batch.codes[0] != 0).sum(1).float().mean() > 3  # more non-zeros in total than in any stripe


def test_repeat_makes_runs_of_samples_share_a_code_with_independent_noise():
    model = DSCModel.from_spec({"layers": [{"dictionary": "hadamard", "n": 16}], "s": 2, "sigma": 0.1, "repeat": 4})
    batch = model.sample(16, seed=0)
    codes = batch.codes[0].view(4, 4, -1)
    assert (codes == codes[:, :1]).all() and not torch.equal(codes[0, 0], codes[1, 0])
    assert not torch.equal(batch.noise[0], batch.noise[1])


def test_gaussian_dictionary_is_out_of_theory_for_two_nonzeros():
    d = gaussian(64)
    assert d.s_star < 2 < 0.5 * (1 + math.sqrt(64))
