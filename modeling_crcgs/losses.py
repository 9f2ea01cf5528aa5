"""The CRCGS losses (METHOD.md "Student losses" and "Hash-head losses"): one function per term, and two
small ``nn.Module``s that own the weights and temperatures and sum the weighted terms (the open_clip
``ClipLoss`` pattern): :class:`CRCGSStudentLoss` and :class:`CRCGSHashLoss`, built with ``from_config``.

Each function computes the unweighted term of METHOD.md; a module skips a term whose weight is 0. All of
them are batched matrix expressions: no Python loop runs over samples or labels. Notation: B = batch size,
L = number of labels, ``cosh(a, b) = cos(a, b) / 2``.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "cosine_similarity_matrix",
    "label_similarity",
    "similarity_likelihood_loss",
    "softmax_label_loss",
    "label_agreement_loss",
    "base_loss",
    "distillation_loss",
    "discriminator_loss",
    "adversarial_loss",
    "crd_nce_loss",
    "contrastive_loss",
    "support_set_loss",
    "hash_similarity_loss",
    "hash_label_loss",
    "hash_quantization_loss",
    "reconstruction_loss",
    "CRCGSStudentLoss",
    "CRCGSHashLoss",
    "global_batch",
    "gather_batch",
]

# Guards the norms of cosine similarities against zero vectors.
COSINE_EPS = 1e-8
# Lower bound on the argument of -log in the support-set loss (see `support_set_loss`).
SUPPORT_SET_EPS = 1e-7


_GLOBAL_BATCH = contextvars.ContextVar("crcgs_global_batch", default=False)


@contextmanager
def global_batch(enabled: bool = True) -> Iterator[None]:
    """Inside this block the loss modules compute every term over the GLOBAL batch of all processes.

    Each process holds B/N rows of a global batch of B; :func:`gather_batch` concatenates the rows of the
    N processes (rank order) before the pairwise terms, so that N processes x B/N rows give the loss and
    gradients of 1 process x B rows (the release trains with DataParallel: its batch-level losses see the
    whole batch). Every process must run the same forward calls inside the block (``all_gather`` is a
    collective); outside it, or without an initialised process group of size > 1, nothing is gathered.
    """
    token = _GLOBAL_BATCH.set(enabled)
    try:
        yield
    finally:
        _GLOBAL_BATCH.reset(token)


def _world() -> tuple[int, int]:
    """(rank, world size) of the active global-batch gather; (0, 1) when nothing is gathered."""
    if _GLOBAL_BATCH.get() and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherRows(torch.autograd.Function):
    """``all_gather`` of equally sized row blocks whose backward keeps the gradient of the local rows only,
    times the world size N (open_clip ``gather_features``, local tensor in its slot).

    Every process computes the same global loss L. DDP averages the parameter gradients over the N
    processes, and process r's gradient reaches the parameters only through its own rows, so the average
    is ``(1/N) dL/dtheta`` unless each local row gradient is scaled by N. The result equals the backward of
    ``torch.distributed.nn.functional.all_gather`` (a reduce-scatter of N identical gradients) without its
    communication.
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
        if len({int(s) for s in sizes}) != 1:
            raise ValueError(
                f"global-batch losses need the same batch size on every process, got {[int(s) for s in sizes]} "
                "(keep Accelerate's even_batches=True)"
            )
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.world, ctx.rows = rank, world, tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows] * ctx.world, None, None


def gather_batch(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The rows of every process, in rank order ((N B/N, ...) from (B/N, ...)), inside :func:`global_batch`;
    ``tensor`` itself otherwise (one process, no process group, or outside the block). None stays None.
    Gradients flow back to the local rows (see :class:`_GatherRows`)."""
    rank, world = _world()
    if tensor is None or world == 1:
        return tensor
    return _GatherRows.apply(tensor, rank, world)


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``cos(a_j, b_k)`` for every pair of rows: (B_a, D) x (B_b, D) -> (B_a, B_b)."""
    a_n = a / a.norm(dim=1, keepdim=True).clamp_min(COSINE_EPS)
    b_n = b / b.norm(dim=1, keepdim=True).clamp_min(COSINE_EPS)
    return a_n @ b_n.T  # (B_a, B_b)


def label_similarity(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """``S_jk = 1[y_j . y_k > 0]`` (METHOD.md "Data and task"): (B_a, L) x (B_b, L) -> (B_a, B_b) in {0, 1}."""
    dtype = labels_a.dtype if labels_a.is_floating_point() else torch.float32
    return ((labels_a.to(dtype) @ labels_b.to(dtype).T) > 0).to(dtype)


def similarity_likelihood_loss(
    a: torch.Tensor, b: torch.Tensor, similarity: torch.Tensor, scale: float = 0.5
) -> torch.Tensor:
    """Negative log-likelihood of the label similarity under the scaled cosine (DSCMR, Zhen et al. CVPR 2019).

    ``J(A, B) = mean_{j,k} [ log(1 + exp(theta_jk)) - S_jk theta_jk ]`` with ``theta = scale * cos(A_j, B_k)``;
    the release halves the cosine (``scale = 0.5``, METHOD.md "Student losses"), so that
    ``sigmoid(theta)`` stays in (0.38, 0.62) and the loss never saturates.

    Args:
        a: (B_a, D). b: (B_b, D). similarity: (B_a, B_b) matrix S in {0, 1}. scale: s of theta = s cos.
    """
    theta = cosine_similarity_matrix(a, b) * scale  # (B_a, B_b)
    return (F.softplus(theta) - similarity.to(theta.dtype) * theta).mean()


def softmax_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy against the label distribution: ``-mean_i sum_l t_il log softmax(logits_i)_l``
    with ``t_i = y_i / sum_l y_il`` (0 for a row without labels). logits, labels: (B, L)."""
    y = labels.to(logits.dtype)
    targets = y / y.sum(dim=1, keepdim=True).clamp_min(1.0)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


_LABEL_LOSSES = {"bce": F.binary_cross_entropy_with_logits, "softmax": softmax_label_loss}
# the posterior each label loss trains the classifier towards: sigmoid per label (BCE), softmax over labels
_POSTERIORS = {"bce": torch.sigmoid, "softmax": lambda logits: torch.softmax(logits, dim=1)}


def label_agreement_loss(
    image_logits: torch.Tensor, text_logits: torch.Tensor, label_loss: str = "bce"
) -> torch.Tensor:
    """Mutual learning of the two towers' label posteriors (Deep Mutual Learning, Zhang et al., CVPR 2018):
    each modality's classifier output learns the other's posterior of the same pair, taken as a fixed target.

    ``softmax``: ``CE(sg softmax(q), p) + CE(sg softmax(p), q)`` with ``CE(t, l) = -mean_i sum_l t_il log
    softmax(l_i)_l``; ``bce``: ``BCE(p, sg sigmoid(q)) + BCE(q, sg sigmoid(p))`` (mean over all entries);
    sg = stop-gradient. Each is the label term of ``label_loss`` (:func:`base_loss`) with the other tower's
    posterior as the target. Not in the paper: the recipe for own features measures it (docs/REAL_DATA.md).

    Args: image_logits: p = C u (B, L). text_logits: q = C v (B, L). label_loss: ``"bce"`` or ``"softmax"``.
    """
    if label_loss not in _LABEL_LOSSES:
        raise ValueError(f"label_loss must be one of {sorted(_LABEL_LOSSES)}, got {label_loss!r}")
    loss, posterior = _LABEL_LOSSES[label_loss], _POSTERIORS[label_loss]
    return loss(image_logits, posterior(text_logits.detach())) + loss(
        text_logits, posterior(image_logits.detach())
    )


# CRCGSConfig.retrieval_embedding -> the label term that trains its classifier
LABEL_LOSS_OF_EMBEDDING = {"common": "bce", "label_posterior": "softmax"}


def base_loss(
    image_embeds: torch.Tensor,
    text_embeds: Optional[torch.Tensor],
    image_logits: torch.Tensor,
    text_logits: Optional[torch.Tensor],
    labels: torch.Tensor,
    label_weight: float = 1.0,
    similarity_weight: float = 1.0,
    modality_gap_weight: float = 0.001,
    similarity_scale: float = 0.5,
    label_loss: str = "bce",
) -> torch.Tensor:
    """DSCMR base loss L_o (Zhen et al., CVPR 2019, Eq. 2-4; METHOD.md "Student losses" 1).

    ``L_o = phi [BCE(p, y) + BCE(q, y)] + alpha [J(u,u) + J(u,v) + J(v,v)] + beta mean_i ||u_i - v_i||_2``
    with BCE = binary cross-entropy with logits, mean over all entries. A term whose weight is 0 is skipped.
    With one modality X (``text_embeds`` and ``text_logits`` None; X may be either modality):
    ``phi BCE(C X, y) + alpha J(X, X)``.

    ``label_loss="softmax"`` replaces each BCE by the softmax cross-entropy against the label distribution,
    ``CE(p, y) = -mean_i sum_l (y_il / sum_l' y_il') log softmax(p_i)_l`` (for one label per item, the usual
    cross-entropy; a row without labels adds 0), the classifier behind ``retrieval_embedding="label_posterior"``.

    Args:
        image_embeds, text_embeds: u, v of shape (B, d). image_logits, text_logits: p, q of shape (B, L).
        labels: multi-hot y of shape (B, L).
        label_weight, similarity_weight, modality_gap_weight: phi, alpha, beta.
        similarity_scale: the scale of the cosine inside J (release: 0.5).
        label_loss: ``"bce"`` (the release) or ``"softmax"``.
    """
    y = labels.to(image_logits.dtype)
    label_term = _LABEL_LOSSES.get(label_loss)
    if label_term is None:
        raise ValueError(f"label_loss must be one of {sorted(_LABEL_LOSSES)}, got {label_loss!r}")
    loss = image_embeds.new_zeros(())
    if text_embeds is None or text_logits is None:
        if label_weight:
            loss = loss + label_weight * label_term(image_logits, y)
        if similarity_weight:
            s = label_similarity(y, y)
            loss = loss + similarity_weight * similarity_likelihood_loss(
                image_embeds, image_embeds, s, similarity_scale
            )
        return loss
    if label_weight:
        loss = loss + label_weight * (label_term(image_logits, y) + label_term(text_logits, y))
    if similarity_weight:
        s = label_similarity(y, y)
        likelihood = (
            similarity_likelihood_loss(image_embeds, image_embeds, s, similarity_scale)
            + similarity_likelihood_loss(image_embeds, text_embeds, s, similarity_scale)
            + similarity_likelihood_loss(text_embeds, text_embeds, s, similarity_scale)
        )
        loss = loss + similarity_weight * likelihood
    if modality_gap_weight:
        loss = loss + modality_gap_weight * (image_embeds - text_embeds).norm(dim=1).mean()
    return loss


def distillation_loss(
    image_converted: torch.Tensor,
    image_teacher: torch.Tensor,
    text_converted: torch.Tensor,
    text_teacher: torch.Tensor,
) -> torch.Tensor:
    """Distillation to the generative features: ``MSE(a, g) + MSE(b, h)`` (METHOD.md "Student losses" 2).

    Args: a, g, b, h of shape (B, converted_dim); g, h are the frozen teachers' encoder outputs.
    """
    return F.mse_loss(image_converted, image_teacher) + F.mse_loss(text_converted, text_teacher)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of one discriminator on teacher (class 1) and student (class 0) generations.

    ``CE([D(G(teacher)); D(G(student))], [1...; 0...])``, the mean over the 2B rows, as the release's
    ``Discriminator.train_loss`` on the concatenated batch (METHOD.md "Student losses" 3).

    Args: real_logits (B, 2) = D(G(teacher feature)), fake_logits (B, 2) = D(G(student feature)).
    """
    logits = torch.cat([real_logits, fake_logits], dim=0)  # (2B, 2)
    targets = torch.cat(
        [
            torch.ones(real_logits.shape[0], dtype=torch.long, device=logits.device),
            torch.zeros(fake_logits.shape[0], dtype=torch.long, device=logits.device),
        ]
    )
    return F.cross_entropy(logits, targets)


def adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Student side of the adversarial loss: ``CE(D(G(student feature)), 1)`` (METHOD.md "Student losses" 3).

    Args: fake_logits (B, 2). Returns the mean over the batch.
    """
    targets = torch.ones(fake_logits.shape[0], dtype=torch.long, device=fake_logits.device)
    return F.cross_entropy(fake_logits, targets)


def crd_nce_loss(
    teacher: torch.Tensor,
    student: torch.Tensor,
    n_data: int,
    temperature: float,
    eps: float = 1e-7,
) -> torch.Tensor:
    """NCE contrastive distillation between teacher and student rows (CRD, Tian et al. ICLR 2020, Eq. 10-18).

    With ``s_jk = exp(cos(T_j, S_k) / tau)``, B the true batch size, ``P_n = 1 / n_data`` and
    ``c = (B - 1) P_n``::

        N(T, S) = -(1/B) [ sum_j log( s_jj / (s_jj + c + eps) ) + sum_{j != k} log( c / (s_jk + c + eps) ) ]

    (METHOD.md "Student losses" 4; eps in the divisions as CRD's ``ContrastLoss``.) Computed in log space,
    ``log(s / (s + c + eps)) = -softplus(log(c + eps) - z)`` with ``z = cos / tau``, so that a small
    temperature cannot overflow ``exp``; the value is the formula's.

    Args:
        teacher: T of shape (B, D). student: S of shape (B, D).
        n_data: n_data of the noise distribution (> 0). temperature: tau (> 0). eps: >= 0.
    """
    if teacher.shape != student.shape:
        raise ValueError(
            f"teacher and student must have the same shape, got {tuple(teacher.shape)} and {tuple(student.shape)}"
        )
    if n_data <= 0 or temperature <= 0:
        raise ValueError(
            f"n_data and temperature must be > 0, got n_data={n_data}, temperature={temperature}"
        )
    batch = teacher.shape[0]
    c = (batch - 1) / n_data
    z = cosine_similarity_matrix(teacher, student) / temperature  # (B, B)
    log_c_eps = math.log(c + eps) if c + eps > 0 else -math.inf
    positive = -F.softplus(log_c_eps - z.diagonal())  # (B,)
    loss = positive.sum()
    if batch > 1:
        # log(c / (s + c + eps)) = log c - logaddexp(z, log(c + eps))
        negative = math.log(c) - torch.logaddexp(z, z.new_tensor(log_c_eps))  # (B, B)
        off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=z.device)
        loss = loss + negative[off_diagonal].sum()
    return -loss / batch


def contrastive_loss(
    image_teacher: torch.Tensor,
    text_teacher: torch.Tensor,
    image_converted: torch.Tensor,
    text_converted: torch.Tensor,
    n_data: int,
    temperature: float,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Intra- and inter-modality teacher-student NCE loss (METHOD.md "Student losses" 4).

    ``1/4 [N(g, a) + N(h, b) + N(g, b) + N(h, a)]`` with N from :func:`crd_nce_loss`.

    Args: g, h (teacher features) and a, b (student converted features), each (B, converted_dim).
    """
    return (
        crd_nce_loss(image_teacher, image_converted, n_data, temperature, eps)
        + crd_nce_loss(text_teacher, text_converted, n_data, temperature, eps)
        + crd_nce_loss(image_teacher, text_converted, n_data, temperature, eps)
        + crd_nce_loss(text_teacher, image_converted, n_data, temperature, eps)
    ) / 4


def support_set_loss(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Support-set regularizer (METHOD.md "Student losses" 5; the paper's Sec. 2.4).

    With ``E_jk = exp(cos(a_j, b_k) / tau)`` and ``C = Y Y^T`` (C_jk = number of labels that j and k share)::

        sI_j = sum_k E_jk C_jk b_k / sum_k E_jk C_jk        (image j's support feature, from texts)
        sT_j = sum_k E_kj C_jk a_k / sum_k E_kj C_jk        (text j's support feature, from images)
        L_ssl = -log( 1/2 [ mean_j cos(a_j, sI_j) + mean_j cos(b_j, sT_j) ] )

    The weights ``E_jk C_jk / sum_k E_jk C_jk`` are a softmax of ``z_jk + log C_jk`` over the k with
    ``C_jk > 0`` (computed that way, so that a small temperature cannot overflow ``exp``).

    Edge cases (documented deviations from the release, which divides 0 by 0):

    * a sample with no label has an empty support set: it is left out of both means;
    * if no sample has a label, the loss is a zero that keeps the autograd graph of the inputs;
    * the argument of ``-log`` is clamped below at 1e-7, so orthogonal features (e.g. all-zero ReLU
      outputs) give a large finite loss instead of ``inf``/``NaN``.

    Args:
        image_feats: a, converted-space image features (B, D).
        text_feats: b, converted-space text features (B, D).
        labels: Y, multi-hot labels (B, L), values >= 0.
        temperature: tau_s (> 0).

    Returns:
        Scalar tensor.
    """
    if image_feats.dim() != 2 or image_feats.shape != text_feats.shape:
        raise ValueError(
            f"image_feats and text_feats must both be (B, D), got {tuple(image_feats.shape)} and {tuple(text_feats.shape)}"
        )
    if labels.dim() != 2 or labels.shape[0] != image_feats.shape[0]:
        raise ValueError(f"labels must be (B, L) with B={image_feats.shape[0]}, got {tuple(labels.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    y = labels.to(image_feats.dtype)
    counts = y @ y.T  # C: (B, B), symmetric
    has_support = counts.sum(dim=1) > 0  # (B,), False exactly for samples with no label
    if not bool(has_support.any()):
        return (image_feats.sum() + text_feats.sum()) * 0.0
    z = cosine_similarity_matrix(image_feats, text_feats) / temperature  # (B, B): z_jk = cos(a_j, b_k) / tau
    in_support = counts > 0
    log_counts = torch.log(counts.clamp_min(torch.finfo(counts.dtype).tiny))
    # Rows without support get finite dummy logits; they are dropped from the means below.
    keep = in_support | ~has_support.unsqueeze(1)
    image_logits = torch.where(keep, z + log_counts, -math.inf)  # row j: weights over texts k
    text_logits = torch.where(keep, z.T + log_counts, -math.inf)  # row j: weights over images k (E_kj)
    image_support = torch.softmax(image_logits, dim=1) @ text_feats  # sI: (B, D)
    text_support = torch.softmax(text_logits, dim=1) @ image_feats  # sT: (B, D)
    image_cos = F.cosine_similarity(image_feats, image_support, dim=1, eps=COSINE_EPS)[has_support]
    text_cos = F.cosine_similarity(text_feats, text_support, dim=1, eps=COSINE_EPS)[has_support]
    mean_cos = (image_cos.mean() + text_cos.mean()) / 2
    return -torch.log(mean_cos.clamp_min(SUPPORT_SET_EPS))


def hash_similarity_loss(hash_combined: torch.Tensor, combined_embeds: torch.Tensor) -> torch.Tensor:
    """Term 1 of the hash-head loss (METHOD.md "Hash-head losses"): keep the halved cosine structure of c.

    ``mean_j sum_k ( cosh(c_j, c_k) - cosh(H(c_j), H(c_k)) )^2`` with ``c_j = (u_j + v_j) / 2``.

    Args: hash_combined: H(c) (B, K). combined_embeds: c (B, d).
    """
    target = cosine_similarity_matrix(combined_embeds, combined_embeds) / 2  # (B, B)
    hashed = cosine_similarity_matrix(hash_combined, hash_combined) / 2  # (B, B)
    return (target - hashed).pow(2).sum(dim=1).mean()


def hash_label_loss(
    hash_image: torch.Tensor, hash_text: torch.Tensor, labels: torch.Tensor, scale: float = 0.5
) -> torch.Tensor:
    """Term 2 of the hash-head loss: ``J(H(u), H(u)) + J(H(u), H(v)) + J(H(v), H(v))`` (J as in the base loss,
    with the same scale s of theta = s cos: the config's ``similarity_scale``, 0.5 in the release).

    Args: hash_image: H(u) (B, K). hash_text: H(v) (B, K). labels: multi-hot (B, L). scale: s.
    """
    s = label_similarity(labels, labels)
    return (
        similarity_likelihood_loss(hash_image, hash_image, s, scale)
        + similarity_likelihood_loss(hash_image, hash_text, s, scale)
        + similarity_likelihood_loss(hash_text, hash_text, s, scale)
    )


def hash_quantization_loss(hash_combined: torch.Tensor) -> torch.Tensor:
    """Term 3 of the hash-head loss: ``mean_j || H(c_j) - sign(H(c_j)) ||^2``. Args: hash_combined: H(c) (B, K)."""
    return (hash_combined - torch.sign(hash_combined)).pow(2).sum(dim=1).mean()


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Teacher reconstruction loss: L1, mean over all entries (METHOD.md "The four networks" 1-2; release ``nn.L1Loss``)."""
    return F.l1_loss(reconstruction, target)


class CRCGSStudentLoss(nn.Module):
    """The student objective ``L = L_o + w_d L_d + w_a L_a + w_c L_c + w_ssl L_ssl`` (METHOD.md "Student losses").

    Holds every weight and temperature; a term whose weight is 0 is not computed. The model supplies the
    tensors: the student's outputs, and for the teacher terms the frozen teachers' features g, h and the
    discriminators' logits on the generations of the student's converted features.

    Args:
        label_weight (`float`, defaults to 1.0): phi of the base loss. similarity_weight (`float`, 1.0): alpha.
        similarity_scale (`float`, 0.5): s of theta = s cos in the likelihood terms J (the release halves it).
        modality_gap_weight (`float`, 0.001): beta. distillation_weight (`float`, 0.2): w_d.
        adversarial_weight (`float`, 0.01): w_a. contrastive_weight (`float`, 0.03): w_c.
        contrastive_n_data (`int`, *optional*): n_data of the NCE noise (P_n = 1 / n_data); required when
            ``contrastive_weight > 0``. contrastive_temperature (`float`, 0.07): tau. contrastive_eps (`float`, 1e-7).
        support_set_weight (`float`, 40.0): w_ssl. support_set_temperature (`float`, 0.06): tau_s.
        label_loss (`str`, ``"bce"``): the label term of the base loss, ``"bce"`` or ``"softmax"``
            (:func:`base_loss`; the config's ``retrieval_embedding="label_posterior"`` takes ``"softmax"``).
        label_agreement_weight (`float`, 0.0): weight of :func:`label_agreement_loss` (not in the paper).
        The defaults are ``CRCGSConfig``'s (the paper's MIRFlickr settings).

    Example:

    ```python
    >>> import torch
    >>> loss_fn = CRCGSStudentLoss(distillation_weight=0.0, adversarial_weight=0.0, contrastive_weight=0.0)
    >>> u, v, p, q, a, b = (torch.randn(4, 6) for _ in range(6))
    >>> outputs = dict(image_embeds=u, text_embeds=v, image_label_logits=p, text_label_logits=q,
    ...                image_converted=a.relu(), text_converted=b.relu())
    >>> sorted(loss_fn(outputs, (torch.rand(4, 6) > 0.5).float()))
    ['base', 'support_set']

    ```
    """

    def __init__(
        self,
        label_weight: float = 1.0,
        similarity_weight: float = 1.0,
        similarity_scale: float = 0.5,
        modality_gap_weight: float = 0.001,
        distillation_weight: float = 0.2,
        adversarial_weight: float = 0.01,
        contrastive_weight: float = 0.03,
        contrastive_n_data: Optional[int] = None,
        contrastive_temperature: float = 0.07,
        contrastive_eps: float = 1e-7,
        support_set_weight: float = 40.0,
        support_set_temperature: float = 0.06,
        label_loss: str = "bce",
        label_agreement_weight: float = 0.0,
    ):
        super().__init__()
        self.label_weight = label_weight
        self.label_loss = label_loss
        self.label_agreement_weight = label_agreement_weight
        self.similarity_weight = similarity_weight
        self.similarity_scale = similarity_scale
        self.modality_gap_weight = modality_gap_weight
        self.distillation_weight = distillation_weight
        self.adversarial_weight = adversarial_weight
        self.contrastive_weight = contrastive_weight
        self.contrastive_n_data = contrastive_n_data
        self.contrastive_temperature = contrastive_temperature
        self.contrastive_eps = contrastive_eps
        self.support_set_weight = support_set_weight
        self.support_set_temperature = support_set_temperature

    @classmethod
    def from_config(cls, config: Any) -> CRCGSStudentLoss:
        """The loss with the weights and temperatures of a ``CRCGSConfig``."""
        return cls(
            label_weight=config.label_loss_weight,
            similarity_weight=config.similarity_loss_weight,
            similarity_scale=config.similarity_scale,
            modality_gap_weight=config.modality_gap_loss_weight,
            distillation_weight=config.distillation_weight,
            adversarial_weight=config.adversarial_weight,
            contrastive_weight=config.contrastive_weight,
            contrastive_n_data=config.contrastive_n_data,
            contrastive_temperature=config.contrastive_temperature,
            contrastive_eps=config.contrastive_eps,
            support_set_weight=config.support_set_weight,
            support_set_temperature=config.support_set_temperature,
            label_loss=LABEL_LOSS_OF_EMBEDDING[config.retrieval_embedding],
            label_agreement_weight=config.label_agreement_weight,
        )

    @property
    def needs_teacher_features(self) -> bool:
        """Whether :meth:`forward` needs the teachers' features g, h (distillation or contrastive term on)."""
        return bool(self.distillation_weight or self.contrastive_weight)

    def base(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """``L_o`` (:func:`base_loss`) of the modalities present in ``outputs`` (u, p and/or v, q)."""
        present = [m for m in ("image", "text") if f"{m}_embeds" in outputs]
        first, second = present[0], present[1] if len(present) > 1 else None
        return base_loss(
            outputs[f"{first}_embeds"],
            outputs.get(f"{second}_embeds") if second else None,
            outputs[f"{first}_label_logits"],
            outputs.get(f"{second}_label_logits") if second else None,
            labels,
            self.label_weight,
            self.similarity_weight,
            self.modality_gap_weight,
            self.similarity_scale,
            self.label_loss,
        )

    def teacher_free_terms(
        self, outputs: dict[str, torch.Tensor], labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The weighted terms that need no teacher or discriminator: ``base`` and, with both modalities,
        ``support_set`` (``w_ssl L_ssl`` on a, b) and ``label_agreement`` (:func:`label_agreement_loss`)."""
        terms = {"base": self.base(outputs, labels)}
        if self.label_agreement_weight and "image_label_logits" in outputs and "text_label_logits" in outputs:
            terms["label_agreement"] = self.label_agreement_weight * label_agreement_loss(
                outputs["image_label_logits"], outputs["text_label_logits"], self.label_loss
            )
        if self.support_set_weight and "image_converted" in outputs and "text_converted" in outputs:
            terms["support_set"] = self.support_set_weight * support_set_loss(
                outputs["image_converted"], outputs["text_converted"], labels, self.support_set_temperature
            )
        return terms

    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        labels: torch.Tensor,
        image_teacher: Optional[torch.Tensor] = None,
        text_teacher: Optional[torch.Tensor] = None,
        image_fake_logits: Optional[torch.Tensor] = None,
        text_fake_logits: Optional[torch.Tensor] = None,
    ) -> dict[str, torch.Tensor]:
        """Every weighted term of the student objective, in the order base, distillation, adversarial,
        contrastive, support_set (their sum is the loss).

        Args:
            outputs: the student's ``image_embeds``, ``text_embeds`` (u, v), ``*_label_logits`` (p, q) and
                ``*_converted`` (a, b), each (B, ·). labels: multi-hot (B, L).
            image_teacher, text_teacher: g = E_I2T(x), h = E_T2I(t) (B, converted_dim); needed when
                :attr:`needs_teacher_features`.
            image_fake_logits, text_fake_logits: D_img(G_T2I(b)), D_txt(G_I2T(a)) (B, 2); needed when
                ``adversarial_weight > 0``.

        Inside :func:`global_batch` every input is first gathered over the processes (:func:`gather_batch`),
        so every term is the global batch's, the same value on each process.
        """
        outputs = {name: gather_batch(value) for name, value in outputs.items()}
        labels, image_teacher, text_teacher, image_fake_logits, text_fake_logits = (
            gather_batch(x)
            for x in (labels, image_teacher, text_teacher, image_fake_logits, text_fake_logits)
        )
        a, b = outputs["image_converted"], outputs["text_converted"]
        free = self.teacher_free_terms(outputs, labels)
        terms = {"base": free.pop("base")}
        if self.distillation_weight:
            terms["distillation"] = self.distillation_weight * distillation_loss(
                a, image_teacher, b, text_teacher
            )
        if self.adversarial_weight:
            terms["adversarial"] = self.adversarial_weight * (
                adversarial_loss(image_fake_logits) + adversarial_loss(text_fake_logits)
            )
        if self.contrastive_weight:
            if self.contrastive_n_data is None:
                raise ValueError(
                    "config.contrastive_n_data is None: set it to the number of training batches per epoch "
                    "(the trainer does) or set contrastive_weight=0"
                )
            terms["contrastive"] = self.contrastive_weight * contrastive_loss(
                image_teacher,
                text_teacher,
                a,
                b,
                self.contrastive_n_data,
                self.contrastive_temperature,
                self.contrastive_eps,
            )
        terms.update(free)
        return terms


class CRCGSHashLoss(nn.Module):
    """The hash-head loss ``L_hash = alpha term1 + beta term2 + gamma term3`` (METHOD.md "Hash-head losses"),
    student frozen.

    With ``c_j = (u_j + v_j) / 2`` and H the hash head's tanh output::

        term1 = mean_j sum_k ( cosh(c_j, c_k) - cosh(H(c_j), H(c_k)) )^2     (:func:`hash_similarity_loss`)
        term2 = J(H(u), H(u)) + J(H(u), H(v)) + J(H(v), H(v))               (:func:`hash_label_loss`)
        term3 = mean_j || H(c_j) - sign(H(c_j)) ||^2                        (:func:`hash_quantization_loss`)

    Args:
        similarity_weight (`float`, defaults to 1.0): alpha. label_weight (`float`, 1.0): beta.
        quantization_weight (`float`, 0.0): gamma. similarity_scale (`float`, 0.5): s of the J terms of term2.

    Example:

    ```python
    >>> import torch
    >>> loss_fn = CRCGSHashLoss(similarity_weight=1.0, label_weight=0.0, quantization_weight=0.5)
    >>> u, v = torch.randn(4, 8), torch.randn(4, 8)
    >>> h = torch.tanh(torch.randn(4, 16))
    >>> sorted(loss_fn(h, (u + v) / 2, h, h, labels=None))
    ['hash_quantization', 'hash_similarity']

    ```
    """

    def __init__(
        self,
        similarity_weight: float = 1.0,
        label_weight: float = 1.0,
        quantization_weight: float = 0.0,
        similarity_scale: float = 0.5,
    ):
        super().__init__()
        self.similarity_weight = similarity_weight
        self.label_weight = label_weight
        self.quantization_weight = quantization_weight
        self.similarity_scale = similarity_scale

    @classmethod
    def from_config(cls, config: Any) -> CRCGSHashLoss:
        """The loss with the hash weights of a ``CRCGSConfig`` and its ``similarity_scale`` (shared with L_o)."""
        return cls(
            config.hash_similarity_weight,
            config.hash_label_weight,
            config.hash_quantization_weight,
            config.similarity_scale,
        )

    @property
    def needs_combined(self) -> bool:
        """Whether :meth:`forward` needs H(c) (term 1 or term 3 on)."""
        return bool(self.similarity_weight or self.quantization_weight)

    def forward(
        self,
        hash_combined: Optional[torch.Tensor],
        combined_embeds: torch.Tensor,
        hash_image: torch.Tensor,
        hash_text: torch.Tensor,
        labels: Optional[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The weighted terms ``{"hash_similarity", "hash_label", "hash_quantization"}`` with a weight > 0.

        Args:
            hash_combined: H(c) (B, K), may be None when alpha = gamma = 0. combined_embeds: c (B, d).
            hash_image: H(u) (B, K). hash_text: H(v) (B, K). labels: multi-hot (B, L), may be None when beta = 0.

        Inside :func:`global_batch` the inputs are gathered over the processes first (:func:`gather_batch`).
        """
        hash_combined, combined_embeds, hash_image, hash_text, labels = (
            gather_batch(x) for x in (hash_combined, combined_embeds, hash_image, hash_text, labels)
        )
        terms: dict[str, torch.Tensor] = {}
        if self.needs_combined and hash_combined is None:
            raise ValueError("hash_combined is required when the similarity or quantization weight is > 0")
        if self.similarity_weight:
            terms["hash_similarity"] = self.similarity_weight * hash_similarity_loss(
                hash_combined, combined_embeds
            )
        if self.label_weight:
            if labels is None:
                raise ValueError("labels are required for the hash label term (label weight > 0)")
            terms["hash_label"] = self.label_weight * hash_label_loss(
                hash_image, hash_text, labels, self.similarity_scale
            )
        if self.quantization_weight:
            terms["hash_quantization"] = self.quantization_weight * hash_quantization_loss(hash_combined)
        return terms
