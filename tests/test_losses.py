"""E-loss weights, focal loss and the hard sampler against direct float64 formulas."""

import csv

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hpa_jax.training import losses
from hpa_jax.errors import ConfigError


def loss_config(name="bce", gamma=2.0, e_alpha=0.0):
    return ml_collections.ConfigDict({"name": name, "focal_gamma": gamma, "e_alpha": e_alpha,
                                      "normalize_weights": True, "hard_sample_ratio": 1.0})


def softplus(x):
    return np.logaddexp(0.0, x)


def reference_losses(z, y, gamma):
    """float64 BCE and focal -(y (1-p)^g log p + (1-y) p^g log(1-p)), with -log p = softplus(-z)
    and -log(1-p) = softplus(z) so that |z| = 100 stays exact."""
    neg_log_p, neg_log_q = softplus(-z), softplus(z)
    bce = y * neg_log_p + (1 - y) * neg_log_q
    focal = y * np.exp(-gamma * neg_log_q) * neg_log_p + (1 - y) * np.exp(-gamma * neg_log_p) * neg_log_q
    return bce, focal


# ---- E-loss class weights ---------------------------------------------------------------------

@pytest.fixture
def hpa_counts(shared_data):
    with open(shared_data / "hpa_kaggle_train_labels.csv") as f:
        targets = [int(t) for row in csv.DictReader(f) for t in row["Target"].split()]
    counts = np.bincount(targets, minlength=28).astype(np.float64)
    assert counts.sum() == 50782 and counts[0] == 12885 and counts[27] == 11
    return counts


@pytest.mark.parametrize("alpha", [0.9, 0.99, 0.999, 0.9999])
def test_effective_number_weights_on_hpa_counts(hpa_counts, alpha):
    raw = np.array([(1 - alpha) / (1 - alpha ** int(n)) for n in hpa_counts])
    np.testing.assert_allclose(losses.effective_number_weights(hpa_counts, alpha, normalize=False), raw, rtol=1e-12)
    normalized = losses.effective_number_weights(hpa_counts, alpha)
    np.testing.assert_allclose(normalized, raw / raw.sum() * 28, rtol=1e-12)
    assert normalized.sum() == pytest.approx(28.0, rel=1e-12)
    assert np.argmax(normalized) == 27 and np.argmin(normalized) == 0   # rarest / commonest class


def test_weight_span_matches_class_balanced_loss(hpa_counts):
    def span(alpha):
        w = losses.effective_number_weights(hpa_counts, alpha)
        return w.max() / w.min()

    assert span(0.999) == pytest.approx(91, rel=0.01)
    assert span(0.9) == pytest.approx(1.5, rel=0.05)


def test_empty_class_gets_the_commonest_class_weight_and_alpha_zero_is_unweighted():
    w = losses.effective_number_weights([0, 1, 10, 1000], 0.99, normalize=False)
    assert np.all(np.isfinite(w)) and w[1] == 1.0 and w[0] == w[3] == pytest.approx(0.01 / (1 - 0.99 ** 1000))
    assert losses.effective_number_weights([0, 1, 10, 1000], 0.99).sum() == pytest.approx(4.0)
    np.testing.assert_array_equal(losses.effective_number_weights([0, 1, 10, 1000], 0.0), np.ones(4))
    with pytest.raises(ConfigError):
        losses.effective_number_weights([1, 2], 1.0)


# ---- per-class losses and their reduction -----------------------------------------------------

@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_and_bce_match_float64_even_at_huge_logits(gamma):
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 4, 40), [-100, -60, -30, 30, 60, 100, 0.0, 1e-3]]).astype(np.float32)
    z = np.tile(z, 2).reshape(4, 24)
    y = (rng.random(z.shape) < 0.5).astype(np.float32)
    references = {"bce": lambda z: reference_losses(z, y, gamma)[0],
                  "focal": lambda z: reference_losses(z, y, gamma)[1],
                  "bce+focal": lambda z: sum(reference_losses(z, y, gamma))}
    z64 = z.astype(np.float64)
    for name, reference in references.items():
        per_class = losses.PER_CLASS_LOSSES[name](jnp.asarray(z), jnp.asarray(y), gamma)
        np.testing.assert_allclose(per_class, reference(z64), rtol=2e-5, atol=1e-6, err_msg=name)

        def total(logits, name=name):
            return losses.per_sample_loss(loss_config(name, gamma), logits, jnp.asarray(y)).sum()

        grad = np.asarray(jax.grad(total)(jnp.asarray(z)))
        assert np.all(np.isfinite(grad)), name
        # Central differences of the float64 reference; per_sample_loss averages over the 24 classes.
        h = 1e-6
        numeric = (reference(z64 + h) - reference(z64 - h)) / (2 * h) / z.shape[1]
        np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-6, err_msg=name)


def test_per_sample_loss_is_the_class_mean_of_weighted_losses():
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(0, 3, (6, 28)), jnp.float32)
    y = jnp.asarray(rng.random((6, 28)) < 0.3, jnp.float32)
    unweighted = losses.per_sample_loss(loss_config("bce"), z, y)
    np.testing.assert_array_equal(unweighted, jax.numpy.mean(losses.PER_CLASS_LOSSES["bce"](z, y, 0.0), axis=-1))
    np.testing.assert_array_equal(losses.per_sample_loss(loss_config("bce"), z, y, np.ones(28)), unweighted)
    w = losses.effective_number_weights(rng.integers(1, 5000, 28), 0.999)
    weighted = losses.per_sample_loss(loss_config("focal", e_alpha=0.999), z, y, w)
    np.testing.assert_allclose(weighted, (losses.PER_CLASS_LOSSES["focal"](z, y, 2.0) * w).mean(-1), rtol=1e-6)
    with pytest.raises(ConfigError, match="e_alpha"):
        losses.per_sample_loss(loss_config("focal", e_alpha=0.999), z, y)
    with pytest.raises(ConfigError, match="unknown loss.name"):
        losses.per_sample_loss(loss_config("dice"), z, y)


# ---- hard sampler -----------------------------------------------------------------------------

def brute_force_hard_mean(x, ratio):
    k = max(1, int(np.ceil(round(ratio * len(x), 9))))
    order = np.argsort(-x, kind="stable")            # descending, lower index first among equals
    return x[order[:k]].mean(), np.sort(order[:k])


def hard_sample_mean(per_sample, ratio):
    """The loss the train step forms from the hard sampler's selection: the mean of the top K."""
    _, part, k = losses.hard_sample_selection(per_sample, ratio)
    return (per_sample * part).sum() / k


@pytest.mark.parametrize("size", [1, 7, 32, 74])
def test_hard_sample_mean_matches_sorting(size):
    rng = np.random.default_rng(size)
    hard_mean = jax.jit(hard_sample_mean, static_argnums=1)
    for ratio in (0.1, 0.25, 0.5, 0.7, 0.9, 1.0):
        x = rng.exponential(size=size).astype(np.float32)
        expected, chosen = brute_force_hard_mean(x, ratio)
        assert float(hard_mean(x, ratio)) == pytest.approx(float(expected), rel=1e-6)
        grad = np.asarray(jax.grad(hard_sample_mean)(jnp.asarray(x), ratio))
        mask = np.zeros(size, bool)
        mask[chosen] = True
        assert np.all(grad[~mask] == 0.0)
        np.testing.assert_allclose(grad[mask], 1.0 / len(chosen), rtol=1e-6)


def test_hard_sample_ties_go_to_the_lower_index():
    x = jnp.asarray([1.0, 3.0, 2.0, 3.0, 3.0, 0.0, 3.0, 2.0])
    grad = jax.grad(hard_sample_mean)(x, 0.25)                 # K = 2 of four equal 3.0s
    np.testing.assert_array_equal(grad, [0, 0.5, 0, 0.5, 0, 0, 0, 0])
    grad = jax.jit(jax.grad(hard_sample_mean), static_argnums=1)(x, 0.6)   # K = 5: the 3s, then the 2 at index 2
    np.testing.assert_array_equal(np.asarray(grad) * 5, [0, 1, 1, 1, 1, 0, 1, 0])
    x = jnp.zeros(5)
    np.testing.assert_array_equal(jax.grad(hard_sample_mean)(x, 0.4), [0.5, 0.5, 0, 0, 0])


def test_hard_sample_count_and_plain_mean():
    assert [losses.num_hard_samples(10, r) for r in (0.01, 0.3, 0.7, 0.71, 1.0)] == [1, 3, 7, 8, 10]
    x = jnp.asarray(np.random.default_rng(0).random(9), jnp.float32)
    assert float(hard_sample_mean(x, 1.0)) == float(x.mean())
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError):
            losses.hard_sample_selection(x, bad)


def test_hard_sampler_ranks_the_global_batch_inside_shard_map():
    """On 8 devices each holding 3 samples, the selection is the top K of all 24 (not of each
    shard), each device's part is its rows of it, and the summed parts give the global mean."""
    from jax.sharding import PartitionSpec as P  # noqa: PLC0415

    from hpa_jax.runtime import sharding  # noqa: PLC0415

    mesh = sharding.make_mesh()
    x = jnp.asarray(np.random.default_rng(3).exponential(size=3 * mesh.size), jnp.float32)

    def on_devices(shard):
        selected, part, k = losses.hard_sample_selection(shard, 0.25, sharding.MESH_AXIS)
        return selected, part, jax.lax.psum((shard * part).sum() / k, sharding.MESH_AXIS)

    selected, parts, loss = jax.jit(jax.shard_map(on_devices, mesh=mesh, in_specs=P(sharding.MESH_AXIS),
                                                  out_specs=(P(), P(sharding.MESH_AXIS), P()), check_vma=False))(x)
    expected, chosen = brute_force_hard_mean(np.asarray(x), 0.25)
    mask = np.zeros(len(x), np.float32)
    mask[chosen] = 1.0
    np.testing.assert_array_equal(selected, mask)
    np.testing.assert_array_equal(parts, mask)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
