"""Every CRCGS loss against a naive per-sample loop of the docs/METHOD.md formula, in float64."""

import math

import pytest
import torch

from modeling_crcgs import losses

REL_TOL = 1e-5


def _rel_close(fast: torch.Tensor, slow: float) -> None:
    fast = float(fast.detach())
    assert math.isfinite(fast)
    assert abs(fast - slow) <= REL_TOL * max(abs(slow), 1e-12), (fast, slow)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b) / max(float(a.norm()) * float(b.norm()), 1e-300)


def _gen(seed: int, batch: int, dim: int = 7, num_labels: int = 5, nonnegative: bool = False):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    b = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    if nonnegative:  # converted features are ReLU outputs
        a, b = a.abs(), b.abs()
    y = (torch.rand(batch, num_labels, generator=g) > 0.6).double()
    y[:, 0] = torch.where(y.sum(1) == 0, 1.0, y[:, 0])  # every sample labelled unless a test says otherwise
    return a.requires_grad_(), b.requires_grad_(), y


def _assert_finite_grads(loss: torch.Tensor, *inputs: torch.Tensor) -> None:
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    for grad in grads:
        assert grad is None or bool(torch.isfinite(grad).all())


# ---------------------------------------------------------------- slow references (loops over samples)


def _loop_similarity(ya, yb):
    return [[1.0 if float(ya[j] @ yb[k]) > 0 else 0.0 for k in range(len(yb))] for j in range(len(ya))]


def _loop_j(a, b, s, scale=0.5):
    total = 0.0
    for j in range(len(a)):
        for k in range(len(b)):
            theta = _cos(a[j], b[k]) * scale
            total += math.log(1 + math.exp(theta)) - s[j][k] * theta
    return total / (len(a) * len(b))


def _loop_bce(logits, y):
    total = 0.0
    for j in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            p = 1 / (1 + math.exp(-float(logits[j, c])))
            total -= float(y[j, c]) * math.log(p) + (1 - float(y[j, c])) * math.log(1 - p)
    return total / logits.numel()


def _loop_ce(logits, target):
    total = 0.0
    for j in range(logits.shape[0]):
        row = [float(v) for v in logits[j]]
        total += -row[target] + math.log(sum(math.exp(v) for v in row))
    return total / logits.shape[0]


def _loop_nce(t, s, n_data, tau, eps):
    batch = len(t)
    c = (batch - 1) / n_data
    total = 0.0
    for j in range(batch):
        for k in range(batch):
            sjk = math.exp(_cos(t[j], s[k]) / tau)
            total += math.log(sjk / (sjk + c + eps)) if j == k else math.log(c / (sjk + c + eps))
    return -total / batch


def _loop_support_set(a, b, y, tau):
    batch, num_labels = y.shape
    counts = [[0.0] * batch for _ in range(batch)]
    for i in range(batch):  # the release's three nested loops
        for lab in range(num_labels):
            if y[i, lab]:
                for k in range(batch):
                    if y[k, lab]:
                        counts[i][k] += 1
    img_cos, txt_cos = [], []
    for j in range(batch):
        den_i = sum(math.exp(_cos(a[j], b[k]) / tau) * counts[j][k] for k in range(batch))
        den_t = sum(math.exp(_cos(a[k], b[j]) / tau) * counts[j][k] for k in range(batch))
        if den_i == 0:  # no label: empty support set, left out
            continue
        s_i = sum(math.exp(_cos(a[j], b[k]) / tau) * counts[j][k] * b[k] for k in range(batch)) / den_i
        s_t = sum(math.exp(_cos(a[k], b[j]) / tau) * counts[j][k] * a[k] for k in range(batch)) / den_t
        img_cos.append(_cos(a[j], s_i))
        txt_cos.append(_cos(b[j], s_t))
    return -math.log((sum(img_cos) / len(img_cos) + sum(txt_cos) / len(txt_cos)) / 2)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("batch", [1, 2, 9])
def test_similarity_likelihood_matches_loop(batch):
    a, b, y = _gen(0, batch)
    s = losses.label_similarity(y, y)
    assert s.tolist() == _loop_similarity(y, y)
    loss = losses.similarity_likelihood_loss(a, b, s)
    _rel_close(loss, _loop_j(a.detach(), b.detach(), s.tolist()))
    _assert_finite_grads(loss, a, b)


@pytest.mark.parametrize("scale", [0.25, 1.0, 8.0])
def test_similarity_likelihood_scale_matches_loop(scale):
    a, b, y = _gen(3, 7)
    s = losses.label_similarity(y, y)
    loss = losses.similarity_likelihood_loss(a, b, s, scale)
    _rel_close(loss, _loop_j(a.detach(), b.detach(), s.tolist(), scale))


@pytest.mark.parametrize("batch", [1, 6])
def test_base_loss_matches_loop(batch):
    u, v, y = _gen(1, batch)
    g = torch.Generator().manual_seed(2)
    p = torch.randn(batch, 5, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(batch, 5, generator=g, dtype=torch.float64, requires_grad=True)
    phi, alpha, beta = 1.3, 0.7, 0.011
    loss = losses.base_loss(u, v, p, q, y, phi, alpha, beta)
    ud, vd, s = u.detach(), v.detach(), _loop_similarity(y, y)
    gap = sum(float((ud[j] - vd[j]).norm()) for j in range(batch)) / batch
    expected = (
        phi * (_loop_bce(p.detach(), y) + _loop_bce(q.detach(), y))
        + alpha * (_loop_j(ud, ud, s) + _loop_j(ud, vd, s) + _loop_j(vd, vd, s))
        + beta * gap
    )
    _rel_close(loss, expected)
    _assert_finite_grads(loss, u, v, p, q)


@pytest.mark.parametrize("batch", [1, 6])
def test_base_loss_one_modality_matches_loop(batch):
    u, _, y = _gen(21, batch)
    p = torch.randn(
        batch, 5, generator=torch.Generator().manual_seed(22), dtype=torch.float64, requires_grad=True
    )
    phi, alpha = 1.3, 0.7
    loss = losses.base_loss(u, None, p, None, y, phi, alpha, 0.5)  # no modality gap with one modality
    ud = u.detach()
    expected = phi * _loop_bce(p.detach(), y) + alpha * _loop_j(ud, ud, _loop_similarity(y, y))
    _rel_close(loss, expected)
    _assert_finite_grads(loss, u, p)


def _loop_softmax_ce(logits, y):
    """-(1/B) sum_j sum_c (y_jc / sum_c' y_jc') log softmax(logits_j)_c, one element at a time."""
    total = 0.0
    for j in range(logits.shape[0]):
        row = [float(v) for v in logits[j]]
        log_norm = math.log(sum(math.exp(v) for v in row))
        count = sum(float(v) for v in y[j])
        for c, value in enumerate(row):
            if count:
                total -= float(y[j, c]) / count * (value - log_norm)
    return total / logits.shape[0]


def test_softmax_label_loss_matches_loop_and_cross_entropy():
    g = torch.Generator().manual_seed(31)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1], [0, 1, 0, 0]])
    loss = losses.softmax_label_loss(logits, y)
    _rel_close(loss, _loop_softmax_ce(logits.detach(), y))  # the unlabelled row adds 0
    _assert_finite_grads(loss, logits)
    one_label = torch.tensor([0, 3, 1, 2, 2, 0])
    single = losses.softmax_label_loss(logits, torch.nn.functional.one_hot(one_label, 4))
    _rel_close(single, float(torch.nn.functional.cross_entropy(logits.detach(), one_label)))


def test_base_loss_softmax_label_term_matches_loop():
    u, v, y = _gen(1, 6)
    g = torch.Generator().manual_seed(2)
    p = torch.randn(6, 5, generator=g, dtype=torch.float64)
    q = torch.randn(6, 5, generator=g, dtype=torch.float64)
    with_softmax = losses.base_loss(u, v, p, q, y, 1.3, 0.0, 0.0, label_loss="softmax")
    _rel_close(with_softmax, 1.3 * (_loop_softmax_ce(p, y) + _loop_softmax_ce(q, y)))
    one_modality = losses.base_loss(u, None, p, None, y, 1.3, 0.0, label_loss="softmax")
    _rel_close(one_modality, 1.3 * _loop_softmax_ce(p, y))
    with pytest.raises(ValueError, match="label_loss must be one of.*'hinge'"):
        losses.base_loss(u, v, p, q, y, label_loss="hinge")


def _loop_soft_ce(target_logits, logits):
    """-(1/B) sum_j sum_c softmax(target_logits_j)_c log softmax(logits_j)_c, one element at a time."""
    total = 0.0
    for j in range(logits.shape[0]):
        t = [math.exp(float(v)) for v in target_logits[j]]
        log_norm = math.log(sum(math.exp(float(v)) for v in logits[j]))
        for c in range(logits.shape[1]):
            total -= t[c] / sum(t) * (float(logits[j, c]) - log_norm)
    return total / logits.shape[0]


def _loop_soft_bce(logits, target_logits):
    total = 0.0
    for j in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            p = 1 / (1 + math.exp(-float(logits[j, c])))
            t = 1 / (1 + math.exp(-float(target_logits[j, c])))
            total -= t * math.log(p) + (1 - t) * math.log(1 - p)
    return total / logits.numel()


def test_label_agreement_matches_loop_and_treats_the_other_posterior_as_fixed():
    g = torch.Generator().manual_seed(41)
    p = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    pd, qd = p.detach(), q.detach()
    softmax = losses.label_agreement_loss(p, q, "softmax")
    _rel_close(softmax, _loop_soft_ce(qd, pd) + _loop_soft_ce(pd, qd))
    bce = losses.label_agreement_loss(p, q, "bce")
    _rel_close(bce, _loop_soft_bce(pd, qd) + _loop_soft_bce(qd, pd))
    # stop-gradient on the targets: the gradient w.r.t. p is that of CE(sg softmax(q), p) alone
    (grad_p,) = torch.autograd.grad(softmax, p)
    expected = (torch.softmax(pd, 1) - torch.softmax(qd, 1)) / 5
    assert torch.allclose(grad_p, expected, atol=1e-12)
    with pytest.raises(ValueError, match="label_loss must be one of"):
        losses.label_agreement_loss(p, q, "hinge")


def test_student_loss_adds_label_agreement_with_both_modalities_only():
    from modeling_crcgs import CRCGSConfig

    config = CRCGSConfig(
        retrieval_embedding="label_posterior", label_agreement_weight=0.7, support_set_weight=0
    )
    loss_fn = losses.CRCGSStudentLoss.from_config(config)
    g = torch.Generator().manual_seed(43)
    u, v, p, q = (torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(4))
    y = torch.eye(6, dtype=torch.float64)[[0, 1, 2, 3]]
    terms = loss_fn.teacher_free_terms(
        {"image_embeds": u, "text_embeds": v, "image_label_logits": p, "text_label_logits": q}, y
    )
    _rel_close(terms["label_agreement"], 0.7 * _loop_soft_ce(q, p) + 0.7 * _loop_soft_ce(p, q))
    one = loss_fn.teacher_free_terms({"image_embeds": u, "image_label_logits": p}, y)
    assert set(one) == {"base"}
    assert "label_agreement" not in losses.CRCGSStudentLoss.from_config(CRCGSConfig()).teacher_free_terms(
        {"image_embeds": u, "text_embeds": v, "image_label_logits": p, "text_label_logits": q}, y
    )  # the paper: weight 0


def test_student_loss_trains_label_posteriors_with_softmax():
    from modeling_crcgs import CRCGSConfig

    assert losses.CRCGSStudentLoss.from_config(CRCGSConfig()).label_loss == "bce"
    config = CRCGSConfig(retrieval_embedding="label_posterior")
    assert losses.CRCGSStudentLoss.from_config(config).label_loss == "softmax"


def test_student_loss_module_sums_the_weighted_term_functions():
    a, b, y = _gen(23, 6, nonnegative=True)
    u, v, _ = _gen(24, 6)
    g, h, _ = _gen(25, 6, nonnegative=True)
    gen = torch.Generator().manual_seed(26)
    p, q, fake_i, fake_t = (torch.randn(6, n, generator=gen, dtype=torch.float64) for n in (5, 5, 2, 2))
    loss_fn = losses.CRCGSStudentLoss(
        label_weight=1.3,
        similarity_weight=0.7,
        modality_gap_weight=0.01,
        distillation_weight=0.2,
        adversarial_weight=0.05,
        contrastive_weight=0.03,
        contrastive_n_data=11,
        contrastive_temperature=0.5,
        support_set_weight=4.0,
        support_set_temperature=0.3,
    )
    outputs = dict(image_embeds=u, text_embeds=v, image_label_logits=p, text_label_logits=q)
    outputs.update(image_converted=a, text_converted=b)
    terms = loss_fn(outputs, y, g, h, image_fake_logits=fake_i, text_fake_logits=fake_t)
    assert list(terms) == ["base", "distillation", "adversarial", "contrastive", "support_set"]
    expected = {
        "base": losses.base_loss(u, v, p, q, y, 1.3, 0.7, 0.01),
        "distillation": 0.2 * losses.distillation_loss(a, g, b, h),
        "adversarial": 0.05 * (losses.adversarial_loss(fake_i) + losses.adversarial_loss(fake_t)),
        "contrastive": 0.03 * losses.contrastive_loss(g, h, a, b, 11, 0.5, 1e-7),
        "support_set": 4.0 * losses.support_set_loss(a, b, y, 0.3),
    }
    for name, value in expected.items():
        assert torch.equal(terms[name], value), name
    assert set(loss_fn.teacher_free_terms(outputs, y)) == {"base", "support_set"}
    one = {k: v for k, v in outputs.items() if k.startswith("text")}
    assert torch.equal(loss_fn.base(one, y), losses.base_loss(v, None, q, None, y, 1.3, 0.7, 0.01))
    with pytest.raises(ValueError, match="contrastive_n_data"):
        losses.CRCGSStudentLoss(contrastive_n_data=None)(outputs, y, g, h, fake_i, fake_t)


def test_base_loss_zero_weights_skip_terms():
    u, v, y = _gen(3, 4)
    p = torch.zeros(4, 5, dtype=torch.float64)
    only_gap = losses.base_loss(u, v, p, p, y, 0.0, 0.0, 1.0)
    _rel_close(only_gap, sum(float((u[j] - v[j]).detach().norm()) for j in range(4)) / 4)
    assert float(losses.base_loss(u, v, p, p, y, 0.0, 0.0, 0.0)) == 0.0


@pytest.mark.parametrize("batch", [1, 5])
def test_distillation_and_reconstruction_match_loop(batch):
    a, b, _ = _gen(4, batch)
    g, h, _ = _gen(5, batch)
    loss = losses.distillation_loss(a, g, b, h)
    mse = (
        sum(
            float((a[j] - g[j]).detach().pow(2).sum() + (b[j] - h[j]).detach().pow(2).sum())
            for j in range(batch)
        )
        / a.numel()
    )
    _rel_close(loss, mse)
    _assert_finite_grads(loss, a, b)
    l1 = losses.reconstruction_loss(a, g)
    _rel_close(l1, sum(float((a[j] - g[j]).detach().abs().sum()) for j in range(batch)) / a.numel())


@pytest.mark.parametrize("batch", [1, 5])
def test_discriminator_and_adversarial_match_loop(batch):
    g = torch.Generator().manual_seed(6)
    real = torch.randn(batch, 2, generator=g, dtype=torch.float64, requires_grad=True)
    fake = torch.randn(batch, 2, generator=g, dtype=torch.float64, requires_grad=True)
    d_loss = losses.discriminator_loss(real, fake)
    expected = (_loop_ce(real.detach(), 1) * batch + _loop_ce(fake.detach(), 0) * batch) / (2 * batch)
    _rel_close(d_loss, expected)
    _assert_finite_grads(d_loss, real, fake)
    adv = losses.adversarial_loss(fake)
    _rel_close(adv, _loop_ce(fake.detach(), 1))
    _assert_finite_grads(adv, fake)


@pytest.mark.parametrize("batch,n_data,tau", [(1, 10, 0.07), (2, 3, 0.2), (8, 125, 0.07), (8, 1, 0.1)])
def test_crd_nce_matches_loop(batch, n_data, tau):
    t, s, _ = _gen(7, batch)
    loss = losses.crd_nce_loss(t, s, n_data, tau, 1e-7)
    _rel_close(loss, _loop_nce(t.detach(), s.detach(), n_data, tau, 1e-7))
    _assert_finite_grads(loss, t, s)


def test_crd_nce_small_temperature_stays_finite():
    t, s, _ = _gen(8, 6)
    loss = losses.crd_nce_loss(t.float(), s.float(), 10, 1e-3)  # exp(cos / tau) overflows float32
    assert math.isfinite(float(loss.detach()))
    _assert_finite_grads(loss, t, s)


def test_contrastive_loss_is_mean_of_four_nce_terms():
    g, h, _ = _gen(9, 5)
    a, b, _ = _gen(10, 5)
    loss = losses.contrastive_loss(g, h, a, b, 20, 0.07)
    gd, hd, ad, bd = (x.detach() for x in (g, h, a, b))
    expected = (
        sum(_loop_nce(tt, ss, 20, 0.07, 1e-7) for tt, ss in [(gd, ad), (hd, bd), (gd, bd), (hd, ad)]) / 4
    )
    _rel_close(loss, expected)
    _assert_finite_grads(loss, g, h, a, b)


@pytest.mark.parametrize("batch,tau", [(1, 0.06), (2, 0.04), (10, 0.06), (10, 0.5)])
def test_support_set_matches_loop(batch, tau):
    a, b, y = _gen(11, batch, nonnegative=True)
    y[0] = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0])  # counts above 1
    loss = losses.support_set_loss(a, b, y, tau)
    _rel_close(loss, _loop_support_set(a.detach(), b.detach(), y, tau))
    _assert_finite_grads(loss, a, b)


def test_support_set_gradcheck():
    a, b, y = _gen(12, 4, dim=3, nonnegative=True)
    assert torch.autograd.gradcheck(lambda a, b: losses.support_set_loss(a, b, y, 0.3), (a, b))


def test_support_set_leaves_out_unlabelled_samples():
    a, b, y = _gen(13, 7, nonnegative=True)
    y[[2, 5]] = 0.0
    loss = losses.support_set_loss(a, b, y, 0.06)
    keep = [0, 1, 3, 4, 6]
    _rel_close(loss, _loop_support_set(a.detach(), b.detach(), y, 0.06))
    _rel_close(loss, float(losses.support_set_loss(a[keep], b[keep], y[keep], 0.06).detach()))
    grads = torch.autograd.grad(loss, (a, b))
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert float(grads[0][2].abs().sum()) == 0.0  # an unlabelled sample is in nobody's support set


def test_support_set_without_any_label_is_a_zero_with_graph():
    a, b, y = _gen(14, 4, nonnegative=True)
    loss = losses.support_set_loss(a, b, torch.zeros_like(y), 0.06)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    grad_a, grad_b = torch.autograd.grad(loss, (a, b))
    assert float(grad_a.abs().sum()) == 0.0 and float(grad_b.abs().sum()) == 0.0


def test_support_set_stays_finite_for_small_temperature_and_zero_features():
    a, b, y = _gen(15, 6, nonnegative=True)
    assert math.isfinite(float(losses.support_set_loss(a.float(), b.float(), y.float(), 1e-3).detach()))
    zeros = torch.zeros(6, 7, dtype=torch.float64, requires_grad=True)
    loss = losses.support_set_loss(zeros, b, y, 0.06)  # all-zero ReLU outputs: cos = 0 -> clamped, not inf
    assert math.isfinite(float(loss.detach()))
    _assert_finite_grads(loss, zeros, b)


def test_support_set_in_float32_at_small_temperature_matches_the_float64_loop():
    # At tau = 0.01, exp(cos / tau) reaches e^100, beyond float32's range: the weights must come from
    # the log-space softmax, with pairs that share no label excluded outright (log of a clamped zero
    # count is only -87 in float32, which a cosine gap of 0.9 / tau would overcome).
    g = torch.Generator().manual_seed(18)
    a = torch.rand(8, 6, generator=g, dtype=torch.float64)
    b = torch.rand(8, 6, generator=g, dtype=torch.float64)
    y = torch.tensor(
        [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [0, 0, 0], [1, 0, 1], [0, 0, 0]],
        dtype=torch.float64,
    )  # rows 5 and 7 unlabelled
    e = torch.eye(6, dtype=torch.float64)
    # image 0 is orthogonal to the texts it shares a label with (0, 1, 6) and parallel to text 2, which
    # shares none
    a[0], b[0], b[1], b[6], b[2] = e[0], e[1], e[2], e[1] + e[2], e[0]
    a32, b32 = a.float().requires_grad_(), b.float().requires_grad_()
    loss = losses.support_set_loss(a32, b32, y.float(), 0.01)
    assert loss.dtype == torch.float32
    _rel_close(loss, _loop_support_set(a32.detach().double(), b32.detach().double(), y, 0.01))
    _assert_finite_grads(loss, a32, b32)


def test_support_set_rejects_bad_shapes():
    a, b, y = _gen(16, 4)
    with pytest.raises(ValueError, match="image_feats"):
        losses.support_set_loss(a, b[:3], y, 0.06)
    with pytest.raises(ValueError, match="labels"):
        losses.support_set_loss(a, b, y[:3], 0.06)
    with pytest.raises(ValueError, match="temperature"):
        losses.support_set_loss(a, b, y, 0.0)


@pytest.mark.parametrize("batch", [1, 6])
def test_hash_loss_matches_loop(batch):
    u, v, y = _gen(17, batch, dim=9)
    g = torch.Generator().manual_seed(18)
    hu, hv, hc = (
        torch.tanh(torch.randn(batch, 12, generator=g, dtype=torch.float64)).requires_grad_()
        for _ in range(3)
    )
    c = (u + v) / 2
    alpha, beta, gamma = 1.1, 0.9, 0.3
    terms = losses.CRCGSHashLoss(alpha, beta, gamma)(hc, c, hu, hv, y)
    cd, hcd, hud, hvd = c.detach(), hc.detach(), hu.detach(), hv.detach()
    term1 = (
        sum(
            sum((_cos(cd[j], cd[k]) / 2 - _cos(hcd[j], hcd[k]) / 2) ** 2 for k in range(batch))
            for j in range(batch)
        )
        / batch
    )
    s = _loop_similarity(y, y)
    term2 = _loop_j(hud, hud, s) + _loop_j(hud, hvd, s) + _loop_j(hvd, hvd, s)
    term3 = sum(float((hcd[j] - torch.sign(hcd[j])).pow(2).sum()) for j in range(batch)) / batch
    _rel_close(losses.hash_similarity_loss(hc, c), term1)
    _rel_close(losses.hash_label_loss(hu, hv, y), term2)
    _rel_close(losses.hash_quantization_loss(hc), term3)
    _rel_close(terms["hash_similarity"], alpha * term1)
    _rel_close(terms["hash_label"], beta * term2)
    _rel_close(terms["hash_quantization"], gamma * term3)
    total = sum(terms.values())
    _rel_close(total, alpha * term1 + beta * term2 + gamma * term3)
    _assert_finite_grads(total, hc, hu, hv)


def test_hash_label_term_uses_the_configs_similarity_scale():
    u, v, y = _gen(23, 5, dim=9)
    hu, hv = u.detach(), v.detach()
    s = _loop_similarity(y, y)
    expected = _loop_j(hu, hu, s, 1.5) + _loop_j(hu, hv, s, 1.5) + _loop_j(hv, hv, s, 1.5)
    _rel_close(losses.hash_label_loss(u, v, y, scale=1.5), expected)
    from modeling_crcgs import CRCGSConfig

    assert losses.CRCGSHashLoss.from_config(CRCGSConfig()).similarity_scale == 0.5  # the release
    loss_fn = losses.CRCGSHashLoss.from_config(CRCGSConfig(similarity_scale=1.5, hash_similarity_weight=0.0))
    _rel_close(loss_fn(None, (u + v) / 2, u, v, y)["hash_label"], expected)


def test_hash_loss_zero_weights_are_not_computed():
    u, v, y = _gen(19, 4)
    terms = losses.CRCGSHashLoss(0.0, 0.0, 0.0)(None, (u + v) / 2, u, v, None)
    assert terms == {}
    assert set(losses.CRCGSHashLoss(0.0, 1.0, 0.0)(None, (u + v) / 2, u, v, y)) == {"hash_label"}
    with pytest.raises(ValueError, match="labels"):
        losses.CRCGSHashLoss(1.0, 1.0, 0.0)(u, (u + v) / 2, u, v, None)
