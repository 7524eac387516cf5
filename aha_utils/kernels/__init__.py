"""The GPU wing: a decode step and a token draw as Pallas (Triton) kernels, for the sampler.

The course's decode step is `model.Gemma.hidden` with a cache, in plain XLA, on every device.
On GPUs the sampler can instead run this wing (`SampleConfig.kernels`, resolved by
`sampler.sample_tokens`): the same numbers in fewer, fuller kernels (tests hold each kernel to
the XLA path, run in Pallas's interpreter on a CPU). The sampler enters it in one place, through
`decoder(...)`; nothing else in `aha_utils` imports it. What each kernel does and why:
- `decode_attention`: a layer's qk-norm, rotary embedding, cache write and attention over only
  each row's filled slots, in one kernel;
- `decode_residual`: projections as split-K partials, and the residual joins (sum, norm, add,
  norm) as one kernel each;
- `decode_sampling`: the vocabulary projection and the token draw, never writing the logits;
- `early_launch`, `l2_prefetch`: Hopper's launch and prefetch tricks between those kernels;
- `decode_weights`, `decode_step`: the wing's own copy of the weights, and the step itself.
Measured speed-ups and the tuning history: docs/SAMPLER_TUNING.md.
"""

from __future__ import annotations

import jax

from aha_utils.kernels import decode_sampling, decode_step
from aha_utils.kernels.decode_attention import MIN_HEAD_DIM
from aha_utils.kernels.decode_weights import DecodeWeights
from aha_utils.sharding import DATA

__all__ = ["DecodeWeights", "decoder", "unsupported"]


def unsupported(cfg, mesh) -> str | None:
    """Why the wing cannot decode a model of config `cfg` whose parameters lie on `mesh` (None:
    one device), as a sentence that says what to do; None when it can. Compiled on GPUs; on a
    CPU in Pallas's interpreter (slow: for tests)."""
    backend = jax.default_backend()
    if backend not in ("gpu", "cpu"):
        return (f"the decode kernels are Triton kernels for GPUs and this backend is {backend!r}; "
                "pass kernels=False (or 'auto')")
    if mesh is not None and any(size > 1 for name, size in mesh.shape.items() if name != DATA):
        return (f"the model is split over mesh axes other than {DATA!r} ({dict(mesh.shape)}); the "
                "kernels take rows split over data only: pass kernels=False")
    if mesh is None and jax.device_count() > 1:
        return ("several devices and a model on no mesh: shard it (sharding.shard_model(model, "
                "sharding.make_mesh())) or pass kernels=False")
    if backend == "gpu" and cfg.head_dim < MIN_HEAD_DIM:
        return (f"heads of {cfg.head_dim} are too small for the attention kernel (at least "
                f"{MIN_HEAD_DIM}); pass kernels=False")
    return None


def decoder(model, xla_draw, *, greedy: bool, plain: bool):
    """`(step, draw)` for the sampler's loop, traced inside its program with `model` its decode
    copy: `step(tokens [N], positions [N], cache) -> (h [N, D], cache)` through the kernels, and
    `draw(h, rng, temperature, top_p) -> (tokens [N], logprobs [N])` through the draw kernel
    for greedy or `plain` sampling (no top-k / top-p) at up to `decode_sampling.MAX_ROWS` rows
    a device, where it wins; else `xla_draw` (the sampler's own, same arguments)."""
    interpret = jax.default_backend() != "gpu"
    weights = DecodeWeights.build(model)
    cfg = model.config

    def step(tokens, positions, cache):
        return decode_step.hidden(model, weights, tokens, positions, cache, interpret=interpret)

    def draw(h, rng, temperature, top_p):
        if plain and decode_sampling.fits(cfg.d_model, cfg.vocab_size, h.shape[0]):
            return decode_sampling.draw(h, model.embedding[...], rng, temperature, greedy=greedy,
                                        softcap=cfg.final_softcap, interpret=interpret)
        return xla_draw(h, rng, temperature, top_p)

    return step, draw
