"""GPU and model presets: every constant the emulator's physics uses, each with its source.

Source tags follow ``../shared/ANCHORS.md``: ``[measured-here]`` (the project's H100 SXM probe),
``[doc]`` (vendor documentation, model config files), ``[paper]`` / ``[2nd]`` (a paper, or a
second-hand review of one), ``[derived]`` (arithmetic on the others) and ``[calibrated]``
(chosen so that an anchor comes out; the calibration tests pin it, docs/emulator.md lists it).

KV capacity arithmetic (what vLLM does at start-up, ``docs/emulator.md`` walks through it)::

    kv_bytes_per_token = layers * kv_heads * head_dim * 2 (K and V) * kv_dtype_bytes
    kv_pool_bytes      = gpu_memory_bytes * gpu_memory_utilization - weight_bytes - reserve_bytes
    num_gpu_blocks     = kv_pool_bytes // (block_size * kv_bytes_per_token)
    kv_capacity_tokens = num_gpu_blocks * block_size
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kairosbench.errors import UsageError

__all__ = [
    "GpuPreset",
    "ModelPreset",
    "CacheLayout",
    "GPU_PRESETS",
    "MODEL_PRESETS",
    "gpu_preset",
    "model_preset",
    "cache_layout",
    "GIB",
]

GIB = 1024**3
MIB = 1024**2


def _clocks(lo_mhz: int, hi_mhz: int, step_mhz: int) -> tuple[int, ...]:
    return tuple(range(lo_mhz, hi_mhz + 1, step_mhz))


@dataclass(frozen=True, slots=True)
class GpuPreset:
    """One GPU model. Power terms are those of the model in ``kairosbench.emulator.power``."""

    name: str
    marketing_name: str
    supported_sm_clocks_mhz: tuple[int, ...]  # ascending, what nvmlDeviceGetSupportedGraphicsClocks lists
    mem_clock_mhz: int
    memory_bytes: int
    hbm_bw_bytes_s: float  # sustained HBM bandwidth (read + write), not the datasheet peak
    bf16_flops_at_fmax: float  # dense tensor-core peak at the max SM clock (FLOP/s)
    fp8_flops_at_fmax: float
    power_limit_w: float  # enforced board limit
    power_limit_min_w: float
    p_idle_parked_w: float  # idle, SM clock parked at the minimum
    p_idle_hot_w: float  # idle, SM clock held at the maximum (right after load)
    p_compute_w: float  # tensor/SM power at u_c = 1 and the reference clock, above idle
    p_stream_w: float  # SM + L2 + fabric power streaming HBM at u_m = 1 and the reference clock
    p_hbm_w: float  # HBM device power at u_m = 1 (clock independent)
    power_exponent: float  # gamma in (f / f_ref) ** gamma for the clock-scaled terms
    power_ref_clock_mhz: int  # the clock the two clock-scaled terms are quoted at (same die: same curve)
    voltage_floor_frac: float  # V_min / V(f_ref): below the clock where V(f) reaches it, power ~ f
    idle_hold_s: float  # default governor: how long clocks stay high after the last work
    temp_ambient_c: float
    temp_c_per_w: float
    temp_tau_s: float

    @property
    def f_max_mhz(self) -> int:
        return self.supported_sm_clocks_mhz[-1]

    @property
    def f_min_mhz(self) -> int:
        return self.supported_sm_clocks_mhz[0]

    @property
    def memory_mib(self) -> float:
        return self.memory_bytes / MIB


_H100_SXM = GpuPreset(
    name="h100-sxm",
    marketing_name="NVIDIA H100 80GB HBM3",  # [measured-here] nvmlDeviceGetName
    # [measured-here] nvmlDeviceGetSupportedGraphicsClocks(mem=2619): 110 values 345..1980 step 15.
    supported_sm_clocks_mhz=_clocks(345, 1980, 15),
    mem_clock_mhz=2619,  # [measured-here] max memory clock
    memory_bytes=81559 * MIB,  # [measured-here-class] nvidia-smi "81559 MiB" total on H100 80GB HBM3
    # [measured-here] device-to-device copy ~3.0 TB/s counting read + write (datasheet 3.35 TB/s).
    hbm_bw_bytes_s=3.0e12,
    # [doc] H100 SXM5 989.4 TFLOP/s dense BF16 at the 1830 MHz boost clock -> 1070 at 1980 MHz
    # [derived]; cross-check [measured-here]: 8192^3 bf16 GEMM ran 798 TFLOP/s while the
    # power cap held the clock at ~1425 MHz (1070 * 1425/1980 = 770).
    bf16_flops_at_fmax=989.4e12 * 1980 / 1830,
    fp8_flops_at_fmax=2 * 989.4e12 * 1980 / 1830,  # [doc] FP8 dense = 2x BF16 on Hopper
    power_limit_w=700.0,  # [measured-here] default/enforced/max limit
    power_limit_min_w=200.0,  # [measured-here] minimum settable limit
    p_idle_parked_w=76.0,  # [measured-here] 76 W at 345 MHz, no work
    p_idle_hot_w=128.0,  # [measured-here] 128.5 W just after a load, clocks at 1980 MHz
    # [calibrated] with gamma and p_stream_w: a compute-saturated step (u_c ~ 1) settles at the
    # 700 W cap near 1.4 GHz ([measured-here] median 1425 MHz under 8192^3 GEMM).
    p_compute_w=1300.0,
    # [calibrated] serving decode at f_max draws ~400-600 W at batch 8-64 for an 8B dense model
    # ([doc] ML.ENERGY v3) and a pure weight-streaming probe drew 500-590 W [measured-here].
    p_stream_w=280.0,
    # [derived] HBM ~3.9 pJ/bit (O'Connor et al., MICRO'17, HBM2) x 3.0 TB/s x 8 bit = 94 W.
    p_hbm_w=94.0,
    power_exponent=2.5,  # [proposal] ANCHORS 3.5: gamma 2.5-3 (GreenLLM, Festina assume cubic)
    power_ref_clock_mhz=1980,
    # [assumption] DVFS tables bottom out at a minimum voltage ~0.65-0.7x the boost voltage;
    # below the clock where V(f) hits it, dynamic power falls only linearly with f.
    voltage_floor_frac=0.68,
    # [proposal] clocks stayed high through 200 ms gaps [measured-here]; the decay time itself
    # was not measured. 2 s keeps short tool pauses "hot", as observed.
    idle_hold_s=2.0,
    temp_ambient_c=30.0,  # [proposal] cosmetic thermal model; temperature feeds nothing else
    temp_c_per_w=0.055,
    temp_tau_s=30.0,
)

# H100 NVL as the KAIROS paper ran it ([2nd] JouleServe card §3): 400 W, max clock 1680 MHz.
_H100_NVL = GpuPreset(
    name="h100-nvl",
    marketing_name="NVIDIA H100 NVL",
    # [2nd] KAIROS configured 1680 MHz as the maximum; the 15 MHz grid from 345 MHz is the
    # Hopper one [measured-here on SXM]. (The NVL datasheet boost is 1785 MHz [doc].)
    supported_sm_clocks_mhz=_clocks(345, 1680, 15),
    mem_clock_mhz=2619,
    # [doc] NVIDIA H100 NVL datasheet: 94 GB HBM3 per GPU (the review says "80 GB"; the part is 94).
    memory_bytes=95830 * MIB,
    # [doc] 3.9 TB/s datasheet x 0.9 sustained fraction [derived from the SXM 3.0/3.35 ratio].
    hbm_bw_bytes_s=3.9e12 * 3.0 / 3.35,
    # [doc] H100 NVL 835 TFLOP/s dense BF16 (1671 sparse / 2) at 1785 MHz boost -> scaled to 1680.
    bf16_flops_at_fmax=835e12 * 1680 / 1785,
    fp8_flops_at_fmax=2 * 835e12 * 1680 / 1785,
    power_limit_w=400.0,  # [2nd] KAIROS: 400 W TDP; [doc] NVL configurable 350-400 W
    power_limit_min_w=200.0,  # [doc] assumption: same floor as SXM
    p_idle_parked_w=50.0,  # [2nd] KAIROS: "an idle H100 draws about 50 W"
    # [paper] arXiv 2605.23918: a resident CUDA context / high clocks add +26-50 W over bare
    # idle on HBM parts; 50 + 35.
    p_idle_hot_w=85.0,
    # [derived] the same GH100 die as the SXM part (132 SMs): the same power-vs-clock curve,
    # quoted at 1980 MHz; this board runs it to 1680 MHz under a 400 W limit, so compute-bound
    # prefill throttles harder. KAIROS's system-level anchor (f_max -> 0.54 f_max: ~-30% power,
    # little throughput loss) is checked by tests/test_calibration_agentic.py.
    p_compute_w=1300.0,
    p_stream_w=280.0,
    p_hbm_w=94.0 * (3.9 / 3.0),  # [derived] same pJ/bit at 3.9 TB/s
    power_exponent=2.5,
    power_ref_clock_mhz=1980,
    voltage_floor_frac=0.68,
    idle_hold_s=2.0,
    temp_ambient_c=30.0,
    temp_c_per_w=0.1,
    temp_tau_s=30.0,
)

GPU_PRESETS: dict[str, GpuPreset] = {p.name: p for p in (_H100_SXM, _H100_NVL)}


@dataclass(frozen=True, slots=True)
class ModelPreset:
    """One served model: what the roofline needs (bytes read, FLOPs) and the KV geometry."""

    name: str
    hf_id: str
    layers: int
    hidden: int
    q_heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    total_params: float  # all parameters
    active_params: float  # parameters touched per token (MoE: shared + top-k experts)
    embed_params: float  # input embedding (a lookup, no FLOPs, read per token only)
    weight_bytes: float  # checkpoint size on the GPU
    weight_dtype: str  # "bf16" | "fp8": which tensor-core peak the GEMMs run at
    kv_dtype_bytes: int
    max_model_len: int
    reserve_bytes: float  # activations + CUDA context + graphs, outside the KV pool
    n_experts: int = 0  # 0 = dense
    top_k: int = 0
    expert_bytes: float = 0.0  # bytes of all routed-expert weights (MoE only)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * self.kv_heads * self.head_dim * 2 * self.kv_dtype_bytes

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0


_QWEN3_CODER_30B = ModelPreset(
    name="qwen3-coder-30b-a3b-fp8",
    hf_id="Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8",
    # [doc] Qwen3-Coder-30B-A3B-Instruct config.json: 48 layers, hidden 2048, 32 q heads,
    # 4 kv heads, head_dim 128, 128 experts, 8 per token, moe_intermediate 768, vocab 151936,
    # max_position_embeddings 262144, untied embeddings.
    layers=48,
    hidden=2048,
    q_heads=32,
    kv_heads=4,
    head_dim=128,
    vocab=151936,
    total_params=30.5e9,  # [doc] model card: 30.5B total
    active_params=3.3e9,  # [doc] model card: 3.3B activated
    embed_params=151936 * 2048,  # [derived] vocab x hidden
    # [derived] experts 48 x 128 x 3 x 2048 x 768 = 29.0B params at 1 B (FP8 block-quantised) +
    # 1.5B non-expert params (attention, router, norms, embeddings) kept largely in BF16
    # ~ 29.0 + 2 x 1.5 = 32 GB; the FP8 checkpoint is ~32 GB [doc].
    weight_bytes=32.0e9,
    weight_dtype="fp8",
    kv_dtype_bytes=2,  # [doc] vLLM kv_cache_dtype "auto" = BF16 activations for FP8 checkpoints
    # [doc] 262144 native; vLLM caps max_model_len by what the KV pool can hold (see cache_layout).
    max_model_len=262144,
    reserve_bytes=3.0 * GIB,  # [assumption] see docs/emulator.md "KV capacity"
    n_experts=128,
    top_k=8,
    expert_bytes=48 * 128 * 3 * 2048 * 768 * 1.0,  # [derived] FP8 = 1 byte/param
)

_QWEN3_14B = ModelPreset(
    name="qwen3-14b",
    hf_id="Qwen/Qwen3-14B",
    # [doc] Qwen3-14B config.json: 40 layers, hidden 5120, 40 q heads, 8 kv heads, head_dim 128,
    # intermediate 17408, vocab 151936, max_position_embeddings 40960; 14.8B params (model card).
    layers=40,
    hidden=5120,
    q_heads=40,
    kv_heads=8,
    head_dim=128,
    vocab=151936,
    total_params=14.8e9,
    active_params=14.8e9,
    embed_params=151936 * 5120,
    weight_bytes=14.8e9 * 2,  # [derived] BF16
    weight_dtype="bf16",
    kv_dtype_bytes=2,
    max_model_len=40960,
    reserve_bytes=3.0 * GIB,
)

_LLAMA_31_8B = ModelPreset(
    name="llama-3.1-8b",
    hf_id="meta-llama/Llama-3.1-8B-Instruct",
    # [doc] Llama-3.1-8B config.json: 32 layers, hidden 4096, 32 q heads, 8 kv heads,
    # head_dim 128, intermediate 14336, vocab 128256, 131072 context; 8.03B params.
    layers=32,
    hidden=4096,
    q_heads=32,
    kv_heads=8,
    head_dim=128,
    vocab=128256,
    total_params=8.03e9,
    active_params=8.03e9,
    embed_params=128256 * 4096,
    weight_bytes=8.03e9 * 2,  # [derived] BF16: 16.06 GB (vLLM logs "~14.99 GiB")
    weight_dtype="bf16",
    kv_dtype_bytes=2,
    max_model_len=131072,
    reserve_bytes=3.0 * GIB,
)

MODEL_PRESETS: dict[str, ModelPreset] = {p.name: p for p in (_QWEN3_CODER_30B, _QWEN3_14B, _LLAMA_31_8B)}


def gpu_preset(name: str) -> GpuPreset:
    try:
        return GPU_PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown GPU preset {name!r}; choose one of: {', '.join(sorted(GPU_PRESETS))}") from None


def model_preset(name: str) -> ModelPreset:
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown model preset {name!r}; choose one of: {', '.join(sorted(MODEL_PRESETS))}") from None


@dataclass(frozen=True, slots=True)
class CacheLayout:
    """The engine's KV pool as vLLM would size it at start-up."""

    block_size: int
    num_gpu_blocks: int
    kv_bytes_per_token: int
    kv_pool_bytes: float
    max_model_len: int
    gpu_memory_utilization: float

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size


def cache_layout(
    gpu: GpuPreset,
    model: ModelPreset,
    *,
    gpu_memory_utilization: float = 0.9,  # [doc] vLLM default
    block_size: int = 16,  # [doc] vLLM default block size on CUDA
    kv_capacity_tokens: int | None = None,
) -> CacheLayout:
    """Size the KV pool. ``kv_capacity_tokens`` overrides the arithmetic (e.g. to model a
    smaller ``--gpu-memory-utilization`` or a cache-starved setup in tests)."""
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise UsageError(f"--gpu-memory-utilization must be in (0, 1], got {gpu_memory_utilization}")
    kvb = model.kv_bytes_per_token
    if kv_capacity_tokens is not None:
        if kv_capacity_tokens < block_size:
            raise UsageError(f"--kv-capacity-tokens must be at least one block ({block_size}), got {kv_capacity_tokens}")
        blocks = kv_capacity_tokens // block_size
        pool = float(blocks * block_size * kvb)
    else:
        pool = gpu.memory_bytes * gpu_memory_utilization - model.weight_bytes - model.reserve_bytes
        if pool <= 0:
            raise UsageError(
                f"model {model.name} ({model.weight_bytes / GIB:.1f} GiB of weights) does not fit on "
                f"{gpu.name} at gpu_memory_utilization={gpu_memory_utilization}"
            )
        blocks = int(pool // (block_size * kvb))
    # vLLM refuses a max_model_len the pool cannot hold; the emulator clamps it instead.
    max_len = min(model.max_model_len, blocks * block_size)
    return CacheLayout(
        block_size=block_size,
        num_gpu_blocks=blocks,
        kv_bytes_per_token=kvb,
        kv_pool_bytes=pool,
        max_model_len=max_len,
        gpu_memory_utilization=gpu_memory_utilization,
    )


def with_overrides(preset: GpuPreset, **changes: object) -> GpuPreset:
    """A modified copy (tests and what-if studies); the registry stays untouched."""
    return replace(preset, **changes)  # type: ignore[arg-type]
