"""How long one engine step takes, from bytes moved and FLOPs done (a roofline on the SM clock).

    t_step(f) = t_overhead + max(t_mem, t_cmp * f_max / f)

* ``t_mem`` = (weight bytes read + KV bytes read and written) / sustained HBM bandwidth. The
  SM clock does not change it: HBM runs on its own clock (ANCHORS §3.3: decode is nearly flat
  in f until a knee).
* For a mixture-of-experts model a step reads every expert that *any* token in the batch is
  routed to, not the active parameters: with E experts and top-k routing, B tokens touch
  E·(1 − (1 − k/E)^B) distinct experts per layer on average (ANCHORS §3.5). So a 30B-A3B MoE
  reads most of its weights once a batch holds a few dozen tokens.
* ``t_cmp`` = FLOPs / (tensor-core peak x efficiency) at f_max, scaled by f_max/f: linear
  layers 2·(active − embedding params) per token, logits 2·hidden·vocab per sampled token,
  attention 4·layers·q_heads·head_dim per (query, key) pair.
* **Decode attention runs on mostly empty tensor-core tiles.** A decoding sequence brings one
  query row per query head; with grouped-query attention the kernel stacks the ``q_heads /
  kv_heads`` heads that share a KV head into the M dimension of a 64-row MMA tile (Hopper
  ``wgmma`` M = 64; FlashAttention's decode path), so only group/64 of the tile does work.
  Its arithmetic intensity is just 2·group FLOP per KV byte, and at long contexts this is what
  turns decode compute-bound as the clock drops (ANCHORS §3.3: "the knee moves up with batch
  size and context").
* The knee is not a constant: it sits where t_cmp·f_max/f overtakes t_mem, which moves with
  batch size, chunk size and context length.

Pure functions of a ``StepWork`` summary; ``power.py`` turns the result into watts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kairosbench.emulator.presets import GpuPreset, ModelPreset

__all__ = ["StepWork", "StepCost", "DecodeRunCost", "Roofline", "RooflineParams"]


@dataclass(frozen=True, slots=True)
class RooflineParams:
    """Efficiency and overhead constants. Defaults are [assumption]s listed in docs/emulator.md."""

    # Large prefill GEMMs: [measured-here] an 8192^3 bf16 GEMM reached the tensor peak at its
    # (throttled) clock; LLM-shaped GEMMs (skinny, fused MoE) get less. [assumption] 0.75.
    gemm_efficiency: float = 0.85
    # FlashAttention-2/3 on Hopper reaches ~50-75% of peak [doc: FA3 paper]; [assumption] 0.55.
    attn_efficiency: float = 0.55
    # Rows of the tensor-core tile a decode step's grouped query heads are padded into:
    # [doc] Hopper wgmma instructions have M = 64.
    mma_tile_rows: int = 64
    # Per-step time in which the GPU does little: host-side scheduling/sampling and the floor of
    # many small per-layer kernels (norms, rotary, router, top-k, permutes) that CUDA graphs
    # cannot shorten. [assumption] 0.4 ms + 20 us per dense layer (40 us per MoE layer) +
    # 10 us per scheduled sequence: an 8B dense model then decodes a lone stream at ~6.4 ms
    # per token on H100 SXM (~155 tok/s).
    overhead_s: float = 0.4e-3
    overhead_per_layer_s: float = 20e-6
    overhead_per_moe_layer_s: float = 40e-6
    overhead_per_seq_s: float = 10e-6


@dataclass(slots=True)
class StepWork:
    """What one step computes, summed over its scheduled requests.

    ``tokens``: new tokens (prefill chunk tokens + one per decoding request);
    ``seqs``: scheduled requests; ``sampled``: requests that sample a token this step;
    ``kv_tokens``: sum over requests of the context attended (already computed + new);
    ``attn_pairs``: sum over prefill requests (n > 1) of n·(c + (n+1)/2), the causal
    (query, key) pairs; ``decode_attn_pairs``: sum over decoding requests (n = 1) of c + 1.
    """

    tokens: int = 0
    seqs: int = 0
    sampled: int = 0
    prefill_tokens: int = 0
    kv_tokens: int = 0
    attn_pairs: float = 0.0
    decode_attn_pairs: float = 0.0


@dataclass(frozen=True, slots=True)
class StepCost:
    """A step's time components at f_max (seconds).

    ``t_active_fmax_s`` is the compute time weighted by how full the tensor-core tiles are: it
    equals ``t_cmp_fmax_s`` except for decode attention, whose padded tile rows take time but
    draw no tensor power. ``power.py`` charges compute power on it.
    """

    t_overhead_s: float
    t_mem_s: float
    t_cmp_fmax_s: float
    t_active_fmax_s: float = -1.0  # < 0: same as t_cmp_fmax_s

    @property
    def t_active_s(self) -> float:
        return self.t_cmp_fmax_s if self.t_active_fmax_s < 0 else self.t_active_fmax_s

    def duration_at(self, f_over_fmax: float) -> float:
        tc = self.t_cmp_fmax_s / f_over_fmax
        return self.t_overhead_s + (self.t_mem_s if self.t_mem_s > tc else tc)


@dataclass(frozen=True, slots=True)
class DecodeRunCost:
    """``StepCost`` for a run of pure-decode steps: one overhead, per-step arrays."""

    t_overhead_s: float
    t_mem_s: np.ndarray
    t_cmp_fmax_s: np.ndarray
    t_active_fmax_s: np.ndarray

    def step(self, j: int) -> StepCost:
        return StepCost(self.t_overhead_s, float(self.t_mem_s[j]), float(self.t_cmp_fmax_s[j]), float(self.t_active_fmax_s[j]))

    def __len__(self) -> int:
        return len(self.t_mem_s)


class Roofline:
    """Step cost for one (GPU, model) pair; constants folded once for the hot path."""

    __slots__ = (
        "gpu",
        "model",
        "params",
        "_bw",
        "_dense_bytes",
        "_expert_bytes",
        "_keep",
        "_n_exp",
        "_kv_bytes",
        "_lin_flops_per_tok",
        "_logit_flops",
        "_attn_flops_per_pair",
        "_gemm_rate",
        "_attn_rate",
        "_decode_attn_rate",
        "_overhead_s",
    )

    def __init__(self, gpu: GpuPreset, model: ModelPreset, params: RooflineParams = RooflineParams()) -> None:
        self.gpu, self.model, self.params = gpu, model, params
        self._bw = gpu.hbm_bw_bytes_s
        self._dense_bytes = model.weight_bytes - model.expert_bytes
        self._expert_bytes = model.expert_bytes
        self._n_exp = model.n_experts
        self._keep = 1.0 - model.top_k / model.n_experts if model.is_moe else 0.0
        self._kv_bytes = model.kv_bytes_per_token
        self._lin_flops_per_tok = 2.0 * (model.active_params - model.embed_params)
        self._logit_flops = 2.0 * model.hidden * model.vocab
        self._attn_flops_per_pair = 4.0 * model.layers * model.q_heads * model.head_dim
        peak = gpu.fp8_flops_at_fmax if model.weight_dtype == "fp8" else gpu.bf16_flops_at_fmax
        self._gemm_rate = peak * params.gemm_efficiency
        self._attn_rate = gpu.bf16_flops_at_fmax * params.attn_efficiency  # KV cache is BF16
        group = max(1, model.q_heads // model.kv_heads)
        self._decode_attn_rate = self._attn_rate * min(1.0, group / params.mma_tile_rows)
        per_layer = params.overhead_per_moe_layer_s if model.is_moe else params.overhead_per_layer_s
        self._overhead_s = params.overhead_s + model.layers * per_layer

    def expert_fraction(self, tokens: int) -> float:
        """Expected fraction of routed experts a step of ``tokens`` tokens reads."""
        if not self._n_exp or tokens <= 0:
            return 0.0
        return 1.0 - self._keep**tokens

    def decode_run(self, w: StepWork, k: int) -> DecodeRunCost:
        """Costs of ``k`` consecutive pure-decode steps starting with ``w``: every sequence adds
        one token of context per step (the simulator's fast path), as arrays."""
        first = self.cost(w)
        j = np.arange(k, dtype=np.float64)
        d_mem = self._kv_bytes * w.seqs / self._bw
        d_cmp = self._attn_flops_per_pair * w.seqs / self._decode_attn_rate
        d_act = self._attn_flops_per_pair * w.seqs / self._attn_rate
        return DecodeRunCost(first.t_overhead_s, first.t_mem_s + j * d_mem, first.t_cmp_fmax_s + j * d_cmp, first.t_active_s + j * d_act)

    def cost(self, w: StepWork) -> StepCost:
        weight_bytes = self._dense_bytes
        if self._n_exp:
            weight_bytes += self._expert_bytes * (1.0 - self._keep**w.tokens)
        kv_bytes = self._kv_bytes * (w.kv_tokens + w.tokens)  # read context + write new entries
        t_mem = (weight_bytes + kv_bytes) / self._bw
        lin = self._lin_flops_per_tok * w.tokens + self._logit_flops * w.sampled
        af = self._attn_flops_per_pair
        t_base = lin / self._gemm_rate + af * w.attn_pairs / self._attn_rate
        t_cmp = t_base + af * w.decode_attn_pairs / self._decode_attn_rate
        t_act = t_base + af * w.decode_attn_pairs / self._attn_rate
        return StepCost(self._overhead_s + self.params.overhead_per_seq_s * w.seqs, t_mem, t_cmp, t_act)
