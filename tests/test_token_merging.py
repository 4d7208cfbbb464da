"""Token merging (ToMe for SD): the merge itself, where it is installed, and what it does to the images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddcore.api import load_sd_pipeline
from ddcore.errors import ConfigError
from ddcore.models.token_merging import TokenMergingProcessor, apply_token_merging, bipartite_merge, layer_factor

PROMPTS = ["a photo of a cat", "a photo of a dog"]


def images(pipe, seeds, prompts):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(prompt=prompts, num_inference_steps=2, guidance_scale=2.0, height=32, width=32,
                generator=generators, output_type="np").images


def grid_positions(h, w):
    dst = [i * w + j for i in range(0, h - h % 2, 2) for j in range(0, w - w % 2, 2)]
    return dst, [p for p in range(h * w) if p not in dst]


def test_merge_and_unmerge_keep_the_untouched_tokens_and_merge_the_most_similar_first():
    torch.manual_seed(0)
    h, w, C = 5, 6, 16  # odd height: the last row's tokens are all sources
    x = torch.randn(2, h * w, C)
    dst, src = grid_positions(h, w)
    r = 7
    merge, unmerge = bipartite_merge(x, h, w, r)
    merged = merge(x)
    assert merged.shape == (2, h * w - r, C) and merged.dtype == x.dtype
    back = unmerge(merged)
    assert back.shape == x.shape
    for b in range(2):
        # a position comes back exactly iff nothing was averaged into it or it stayed unmerged
        exact = {p for p in range(h * w) if torch.equal(back[b, p], x[b, p])}
        assert len(exact & set(src)) == len(src) - r
        copies = [p for p in src if p not in exact]
        assert all(any(torch.equal(back[b, p], back[b, d]) for d in dst) for p in copies)
        untouched_dst = [d for d in dst if torch.equal(back[b, d], x[b, d])]
        assert len(untouched_dst) >= len(dst) - r
        assert torch.equal(merged[b, -len(dst):][[dst.index(d) for d in untouched_dst]], x[b, untouched_dst])

    # a source identical to a destination is merged first, and then nothing is lost
    twin = x.clone()
    twin[1, src[9]] = twin[1, dst[4]]
    merge, unmerge = bipartite_merge(twin, h, w, 1)
    merged = merge(twin)
    assert merged.shape == (2, h * w - 1, C)
    assert torch.equal(unmerge(merged)[1], twin[1])
    assert not any(torch.equal(row, twin[1, src[9]]) for row in merged[1, : len(src) - 1])

    # each sample is merged on its own
    merge, unmerge = bipartite_merge(x, h, w, r)
    for b in range(2):
        alone_merge, alone_unmerge = bipartite_merge(x[b : b + 1], h, w, r)
        torch.testing.assert_close(merge(x)[b : b + 1], alone_merge(x[b : b + 1]))
        torch.testing.assert_close(unmerge(merge(x))[b : b + 1], alone_unmerge(alone_merge(x[b : b + 1])))

    # r beyond the sources is capped; r = 0 is the identity
    merge, _ = bipartite_merge(x, h, w, 1000)
    assert merge(x).shape == (2, len(dst), C)
    merge, unmerge = bipartite_merge(x, h, w, 0)
    assert torch.equal(unmerge(merge(x)), x)


def test_it_wraps_the_finest_self_attention_and_the_restore_puts_everything_back():
    # SD 2.1's U-Net: 4 down and 4 up blocks
    assert [layer_factor(n, 4, 4) for n in ("down_blocks.0.x", "down_blocks.2.x", "mid_block.x", "up_blocks.3.x",
                                            "up_blocks.1.x", "conv_in")] == [1, 4, 8, 1, 4, None]
    pipe = load_sd_pipeline("tiny")
    before = images(pipe, [1, 2], PROMPTS)
    originals = dict(pipe.unet.attn_processors)
    restore = apply_token_merging(pipe.unet, 0.5, levels=1)
    now = pipe.unet.attn_processors
    wrapped = sorted(n for n, p in now.items() if isinstance(p, TokenMergingProcessor))
    # the tiny U-Net's first down block has no attention: every attn1 is at factor 2
    assert wrapped == sorted(n for n in originals if n.endswith("attn1.processor")) and len(wrapped) == 4
    assert all(now[n] is p for n, p in originals.items() if n.endswith("attn2.processor"))
    assert all(now[n].inner is originals[n] and now[n].factor == 2 for n in wrapped)

    seen = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, attn, hidden_states, *args, **kwargs):
            seen.append(hidden_states.shape[1])
            return self.inner(attn, hidden_states, *args, **kwargs)

    for n in wrapped:
        now[n].inner = Spy(now[n].inner)
    images(pipe, [1], PROMPTS[:1])
    assert seen and set(seen) == {32}  # 8x8 tokens at factor 2, half of them merged
    for n in wrapped:
        now[n].inner = now[n].inner.inner

    restore()
    assert all(p is originals[n] for n, p in pipe.unet.attn_processors.items())
    restore()  # twice is harmless
    assert np.array_equal(images(pipe, [1, 2], PROMPTS), before)
    assert apply_token_merging(pipe.unet, 0.0) is not None
    assert all(p is originals[n] for n, p in pipe.unet.attn_processors.items())


def test_levels_choose_the_finest_resolutions():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16,
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=32, norm_num_groups=8, attention_head_dim=(2, 4)).eval()
    sample, text = torch.randn(1, 4, 16, 16), torch.randn(1, 5, 32)
    with torch.no_grad():
        plain = unet(sample, 10, encoder_hidden_states=text).sample

    def wrapped():
        return sorted(n.split(".attentions")[0] for n, p in unet.attn_processors.items()
                      if isinstance(p, TokenMergingProcessor))

    restore = apply_token_merging(unet, 0.5, levels=1)
    assert wrapped() == ["down_blocks.0", "up_blocks.1", "up_blocks.1"]
    with torch.no_grad():
        merged = unet(sample=sample, timestep=10, encoder_hidden_states=text).sample  # sample by keyword
    assert merged.shape == plain.shape and not torch.equal(merged, plain)
    restore()
    restore = apply_token_merging(unet, 0.5, levels=2)
    assert wrapped() == ["down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0", "up_blocks.0",
                         "up_blocks.1", "up_blocks.1"]
    restore()
    with torch.no_grad():
        assert torch.equal(unet(sample, 10, encoder_hidden_states=text).sample, plain)


def test_merged_images_differ_a_little_are_deterministic_and_batch_independent():
    pipe = load_sd_pipeline("tiny")
    default = images(pipe, [1, 2], PROMPTS)
    apply_token_merging(pipe.unet, 0.5)
    merged = images(pipe, [1, 2], PROMPTS)
    difference = np.abs(merged - default).mean()
    assert not np.array_equal(merged, default)
    assert 1e-4 < difference < 0.02  # measured 0.0015 on the tiny model
    assert np.array_equal(images(pipe, [1, 2], PROMPTS), merged)
    for k in range(2):
        alone = images(pipe, [k + 1], PROMPTS[k : k + 1])[0]
        assert np.abs(alone - merged[k]).mean() < 1 / 255


def test_it_works_with_a_lora_on_the_projections():
    from peft import LoraConfig

    pipe = load_sd_pipeline("tiny")
    pipe.unet.add_adapter(LoraConfig(r=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                     init_lora_weights=False))
    lora = images(pipe, [1, 2], PROMPTS)
    restore = apply_token_merging(pipe.unet, 0.5)
    merged = images(pipe, [1, 2], PROMPTS)
    assert merged.shape == lora.shape and np.isfinite(merged).all()
    assert not np.array_equal(merged, lora) and np.abs(merged - lora).mean() < 0.02
    restore()
    assert np.array_equal(images(pipe, [1, 2], PROMPTS), lora)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_a_ratio_out_of_range_is_a_config_error(ratio):
    pipe = load_sd_pipeline("tiny")
    with pytest.raises(ConfigError, match="ratio"):
        apply_token_merging(pipe.unet, ratio)
    assert not any(isinstance(p, TokenMergingProcessor) for p in pipe.unet.attn_processors.values())
