"""A toy multi-objective text-to-image stand-in: prompts, a Gaussian policy, four rewards.

Built to show both failure modes of a fixed weighted sum (method.md section 1) on a CPU:

- an action ``x`` in R^6 stands for an image; a prompt is a context ``z`` in R^3;
- the policy is ``x ~ N(W [1, z], std^2 I)`` with ``W`` learned (a linear "LoRA");
- four rewards on the raw scales of the real scorers:

  ``ocr``        sigmoid(steepness * (x0 - difficulty(z))) in [0, 1]: near-binary, wide
                 within-group spread, highly responsive; an easy prompt gives an all-1 group
                 and a hard one an all-0 group.
  ``pickscore``  0.835 + 0.005 * quality(x; +shift): PickScore/26 scale, moves by ~0.01.
  ``deqa``       0.81 + 0.005 * quality(x; -shift): DeQA/5 scale. The two share direction x1
                 (both want x1 -> target(z)) and conflict on x2 (pickscore wants +1.5, deqa
                 -1.5); both dislike x0 (rendering text costs perceptual quality). Small
                 reward-model noise on top.
  ``aesthetic``  5.4 + 1.2 * tanh(0.35 * (x1 + x3) - 0.1): LAION 1-10 scale, saturates, so its
                 within-group spread vanishes as it improves.

Everything is numpy and deterministic given the random generators passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OBJECTIVES: tuple[str, ...] = ("ocr", "pickscore", "deqa", "aesthetic")
ACTION_DIM = 6
CONTEXT_DIM = 3


@dataclass(frozen=True)
class EnvConfig:
    """Geometry of the rewards; fixed for the benchmark (do not tune it per balancer)."""

    policy_std: float = 1.0
    ocr_steepness: float = 4.0
    ocr_difficulty: float = 1.0  # mean x0 needed for a 50 % OCR success
    ocr_difficulty_spread: float = 1.0  # prompt-to-prompt spread of that threshold
    quality_scale: float = 0.005  # raw units per unit of quality (PickScore/26 moves ~0.01)
    quality_target: float = 2.0  # x1 that both perceptual rewards want (plus a prompt term)
    conflict_shift: float = 1.5  # x2 that pickscore wants; deqa wants the opposite
    text_cost: float = 0.15  # quality lost per x0^2
    perceptual_noise: float = 0.003  # reward-model noise of pickscore and deqa (raw units)
    aesthetic_amplitude: float = 1.2
    aesthetic_slope: float = 0.35


def contexts(rng: np.random.Generator, num: int) -> np.ndarray:
    """``num`` prompt contexts ``z ~ N(0, I)`` in R^3."""
    return rng.standard_normal((num, CONTEXT_DIM))


def features(z: np.ndarray) -> np.ndarray:
    """Policy input ``[1, z]`` for each context: ``[num, 1 + CONTEXT_DIM]``."""
    return np.concatenate([np.ones((z.shape[0], 1)), z], axis=1)


def rewards(cfg: EnvConfig, x: np.ndarray, z: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Raw rewards ``[4, N]`` of actions ``x [N, 6]`` for contexts ``z [N, 3]``.

    ``noise [2, N]`` is standard normal reward-model noise for pickscore and deqa (pass fixed
    draws for common random numbers).
    """
    difficulty = cfg.ocr_difficulty + cfg.ocr_difficulty_spread * z[:, 0]
    ocr = 1.0 / (1.0 + np.exp(-cfg.ocr_steepness * (x[:, 0] - difficulty)))
    target = cfg.quality_target + 0.5 * z[:, 1]
    shared = -0.5 * (x[:, 1] - target) ** 2 - cfg.text_cost * x[:, 0] ** 2
    quality_p = shared - 0.5 * (x[:, 2] - cfg.conflict_shift) ** 2
    quality_d = shared - 0.5 * (x[:, 2] + cfg.conflict_shift) ** 2
    pick = 0.835 + cfg.quality_scale * quality_p + cfg.perceptual_noise * noise[0]
    deqa = 0.81 + cfg.quality_scale * quality_d + cfg.perceptual_noise * noise[1]
    aes_arg = cfg.aesthetic_slope * (x[:, 1] + x[:, 3]) - 0.1
    aesthetic = 5.4 + cfg.aesthetic_amplitude * np.tanh(aes_arg)
    return np.stack([ocr, pick, deqa, aesthetic])


class GaussianPolicy:
    """``x ~ N(W phi(z), std^2 I)`` trained by Adam ascent on a REINFORCE estimate."""

    def __init__(self, std: float, lr: float, betas=(0.9, 0.999), adam_eps: float = 1e-8):
        self.std = std
        self.lr = lr
        self.betas = betas
        self.adam_eps = adam_eps
        self.weight = np.zeros((ACTION_DIM, 1 + CONTEXT_DIM))
        self._m = np.zeros_like(self.weight)
        self._v = np.zeros_like(self.weight)
        self._t = 0

    def mean(self, z: np.ndarray) -> np.ndarray:
        """Policy mean ``[N, 6]`` for contexts ``z [N, 3]``."""
        return features(z) @ self.weight.T

    def sample(self, z: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """Actions for contexts ``z`` from standard normal draws ``eps [N, 6]``."""
        return self.mean(z) + self.std * eps

    def update(self, z: np.ndarray, x: np.ndarray, advantages: np.ndarray) -> float:
        """One Adam ascent step on ``mean_i A_i grad log p(x_i)``; returns the gradient norm."""
        score = (x - self.mean(z)) / self.std**2  # d log p / d mean
        grad = (advantages[:, None] * score).T @ features(z) / x.shape[0]
        b1, b2 = self.betas
        self._t += 1
        self._m = b1 * self._m + (1 - b1) * grad
        self._v = b2 * self._v + (1 - b2) * grad**2
        m_hat = self._m / (1 - b1**self._t)
        v_hat = self._v / (1 - b2**self._t)
        self.weight = self.weight + self.lr * m_hat / (np.sqrt(v_hat) + self.adam_eps)
        return float(np.linalg.norm(grad))


@dataclass
class EvalSet:
    """Fixed Monte-Carlo sample (common random numbers): prompts, action and reward noise."""

    z: np.ndarray  # [N, 3], each prompt repeated per sample
    eps: np.ndarray  # [N, 6]
    noise: np.ndarray  # [2, N]

    @classmethod
    def build(cls, rng: np.random.Generator, prompts: int, samples: int) -> EvalSet:
        """``prompts`` held-out contexts x ``samples`` draws each."""
        z = np.repeat(contexts(rng, prompts), samples, axis=0)
        n = z.shape[0]
        return cls(z, rng.standard_normal((n, ACTION_DIM)), rng.standard_normal((2, n)))

    def evaluate(self, cfg: EnvConfig, policy: GaussianPolicy) -> tuple[np.ndarray, np.ndarray]:
        """Expected reward ``[4]`` and between-sample std ``[4]`` of the policy."""
        r = rewards(cfg, policy.sample(self.z, self.eps), self.z, self.noise)
        return r.mean(axis=1), r.std(axis=1)
