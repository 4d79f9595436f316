"""The reference the sampler is held to: diffusers' own ``StableDiffusion3Pipeline.__call__``."""

import torch


def diffusers_ode_latents(pipe, embeds, noise, *, steps: int, guidance: float, resolution: int):
    """Final latents of ``pipe.__call__`` from ``noise`` with the precomputed prompt ``embeds``
    (the ODE: diffusers' Euler scheduler, CFG included)."""
    with torch.no_grad():
        return pipe(
            prompt_embeds=embeds.prompt_embeds,
            pooled_prompt_embeds=embeds.pooled_prompt_embeds,
            negative_prompt_embeds=embeds.negative_prompt_embeds,
            negative_pooled_prompt_embeds=embeds.negative_pooled_prompt_embeds,
            latents=noise.clone(),
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=resolution,
            width=resolution,
            output_type="latent",
        ).images
