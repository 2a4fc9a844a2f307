"""Decoding: a no-cache reference, batching, streaming, constraints, sampling, memorisation."""

import logging

import numpy as np
import pytest
import torch
import transformers
from test_lm import random_frames, single_thread, tiny_config, tiny_model, tiny_token_list  # noqa: F401

from opuslm.model.delay import delay
from opuslm.model.generate import (
    GenerationConfig,
    SamplingConfig,
    _RowDecoder,
    generate,
    generate_stream,
    reorder_generated_rows,
    sample,
)
from opuslm.model.kv_cache import growing_cache
from opuslm.model.lm import MultiStreamLM, prefix_attention_mask
from opuslm.tasks import Example, build_sequence, generation_prompt, num_condition_frames
from opuslm.vocab import TokenList


def reference_greedy(model: MultiStreamLM, prompt: torch.Tensor, target: str, max_frames: int):
    """The decoding contract spelled out: full recompute per row, Python loop per stream."""
    token_list = model.token_list
    pad, eos, streams = token_list.pad_id, token_list.eos_id, token_list.num_streams
    target_range = token_list.ranges["text" if target == "text" else "semantic"]
    semantic = range(*token_list.ranges["semantic"])
    num_prompt = len(prompt)
    delayed = [[pad] * streams for _ in range(num_prompt + streams - 1)]
    for t in range(num_prompt):
        for s in range(streams):
            delayed[t + s][s] = int(prompt[t, s])
    rows = delayed[:num_prompt]
    tail = delayed[num_prompt:]  # teacher-forced streams of the prompt's last frames
    frames0: list[int] = []
    while True:
        k = len(rows) - num_prompt
        with torch.no_grad():
            mask = None
            if model.prefix_lm:  # the prompt's condition rows are bidirectional
                condition = num_condition_frames(prompt[:, 0].numpy(), token_list)
                mask = prefix_attention_mask(torch.tensor([condition]), len(rows))
            hidden, _ = model.hidden_states(torch.tensor([rows]), attention_mask=mask)
            logits0 = model.stream0_logits(hidden[0, -1])
            codebook_logits = model.codebook_logits(hidden[0, -1])
        row = [pad] * streams
        ended = eos in frames0
        if not ended:
            allowed = list(range(*target_range)) + [eos]
            token = allowed[int(logits0[allowed].argmax())] if k < max_frames else eos
            frames0.append(token)
            row[0] = token
        for s in range(1, streams):
            frame = k - s
            if frame < 0:
                row[s] = tail[k][s]
            elif frame < len(frames0) and frames0[frame] in semantic:
                start = token_list.stream_range(s)[0]
                row[s] = start + int(codebook_logits[s - 1].argmax())
        rows.append(row)
        # Done once the last frame before eos has all its streams (row eos + S - 2).
        if eos in frames0 and k >= frames0.index(eos) + streams - 2:
            break
    generated = rows[num_prompt:]
    num_frames = frames0.index(eos)
    return torch.tensor(
        [[generated[n + s][s] for s in range(streams)] for n in range(num_frames)]
    ).view(num_frames, streams)


def prompts_for(token_list, seed=0):
    rng = np.random.default_rng(seed)
    # Ends inside speech frames (continuation), and a longer one ending with a start token.
    return [
        random_frames(token_list, rng, "xtssss"),
        random_frames(token_list, rng, "xtttsssssssx"),
        random_frames(token_list, rng, "xs"),
    ]


@pytest.mark.parametrize("target", ["text", "speech"])
@pytest.mark.parametrize("prefix_lm", [False, True])
def test_greedy_matches_no_cache_reference(target, prefix_lm):
    model = tiny_model(seed=4)
    model.prefix_lm = prefix_lm
    for prompt in prompts_for(model.token_list):
        config = GenerationConfig(target=target, max_frames=6)
        expected = reference_greedy(model, prompt, target, max_frames=6)
        assert torch.equal(generate(model, [prompt], config)[0], expected)


@pytest.mark.parametrize("kind", ["llama", "gpt_neox"])
@pytest.mark.parametrize("target", ["text", "speech"])
@pytest.mark.parametrize("prefix_lm", [False, True])
def test_batched_equals_one_by_one(kind, target, prefix_lm):
    model = tiny_model(kind, seed=2)
    model.prefix_lm = prefix_lm  # left-padded prompts: the prefix mask must skip the padding
    prompts = prompts_for(model.token_list, seed=1)
    config = GenerationConfig(target=target, max_frames=8)
    batched = generate(model, prompts, config)
    for prompt, output in zip(prompts, batched):
        assert torch.equal(output, generate(model, [prompt], config)[0])


@pytest.mark.parametrize("target", ["text", "speech"])
def test_streaming_equals_batch_decoding(target):
    model = tiny_model(seed=5)
    config = GenerationConfig(target=target, max_frames=9)
    for prompt in prompts_for(model.token_list, seed=2):
        streamed = list(generate_stream(model, prompt, config))
        expected = generate(model, [prompt], config)[0]
        assert len(streamed) == len(expected)
        assert all(torch.equal(a, b) for a, b in zip(streamed, expected))


def test_stream_yields_each_frame_before_decoding_ends():
    model = tiny_model(seed=5)
    prompt = prompts_for(model.token_list)[0]
    stream = generate_stream(model, prompt, GenerationConfig(target="speech", max_frames=30))
    first = next(stream)
    assert first.shape == (model.token_list.num_streams,)
    assert torch.is_grad_enabled()  # decoding state must not leak out between frames


@pytest.mark.parametrize("target", ["text", "speech"])
def test_sampled_ids_stay_in_their_ranges(target):
    torch.manual_seed(0)
    token_list = tiny_token_list(num_codebooks=4, codebook_size=16)
    model = MultiStreamLM.from_base(tiny_config(), token_list).eval()
    free = SamplingConfig(temperature=1.0, greedy=False)
    config = GenerationConfig(
        target=target, text=free, semantic=free, acoustic=free, min_frames=250, max_frames=250
    )
    prompts = prompts_for(token_list, seed=3) + [prompts_for(token_list, seed=4)[1]]
    outputs = generate(model, prompts, config, seed=0)
    frames = torch.cat(outputs)
    assert frames.shape == (1000, token_list.num_streams)
    stream0_range = token_list.ranges["text" if target == "text" else "semantic"]
    assert ((frames[:, 0] >= stream0_range[0]) & (frames[:, 0] < stream0_range[1])).all()
    for s in range(1, token_list.num_streams):
        if target == "text":
            assert (frames[:, s] == token_list.pad_id).all()
        else:
            low, high = token_list.stream_range(s)
            assert ((frames[:, s] >= low) & (frames[:, s] < high)).all()
            assert len(frames[:, s].unique()) > 8  # really sampled, not a constant


def test_min_and_max_frames_control_eos():
    model = tiny_model()
    eos = model.token_list.eos_id
    plain_logits = model.head_logits
    prompts = prompts_for(model.token_list)

    def with_eos_logit(value: float):
        def logits(hidden, start=0, end=None):
            out = plain_logits(hidden, start, end)
            if start <= eos < (len(model.token_list) if end is None else end):
                out[..., eos - start] = value
            return out

        return logits

    model.head_logits = with_eos_logit(1e4)
    for min_frames in (0, 3):
        config = GenerationConfig(target="speech", min_frames=min_frames, max_frames=10)
        assert [len(o) for o in generate(model, prompts, config)] == [min_frames] * 3
    model.head_logits = with_eos_logit(-1e4)
    config = GenerationConfig(target="text", max_frames=4)
    assert [len(o) for o in generate(model, prompts, config)] == [4] * 3
    # max_len_ratio bounds each output by its own prompt's speech frames (4, 7 and 1 here).
    config = GenerationConfig(target="text", max_frames=5, max_len_ratio=0.5)
    assert [len(o) for o in generate(model, prompts, config)] == [2, 4, 1]
    config = GenerationConfig(target="text", max_frames=3, max_len_ratio=1.0)  # max_frames wins
    assert [len(o) for o in generate(model, prompts, config)] == [3, 3, 1]
    with pytest.raises(ValueError, match="max_len_ratio"):
        GenerationConfig(target="text", max_len_ratio=-1.0)


def test_the_model_context_bounds_the_output_and_refuses_a_longer_prompt(caplog):
    model = tiny_model(max_position_embeddings=24)
    eos = model.token_list.eos_id
    plain_logits = model.head_logits

    def never_eos(hidden, start=0, end=None):  # every output runs to its limit
        out = plain_logits(hidden, start, end)
        if start <= eos < (len(model.token_list) if end is None else end):
            out[..., eos - start] = -1e4
        return out

    model.head_logits = never_eos
    prompts = prompts_for(model.token_list)  # 6, 12 and 2 rows of 4 streams
    config = GenerationConfig(target="speech", max_frames=15)
    with caplog.at_level(logging.WARNING, logger="opuslm.model.generate"):
        lengths = [len(o) for o in generate(model, prompts, config)]
    assert lengths == [24 - 6 - 4, 24 - 12 - 4, 15]
    assert "2 outputs cut short by the model's context of 24 positions (prompt 0: at most " in (
        caplog.text
    )
    assert "14 frames instead of 15)" in caplog.text
    long = random_frames(model.token_list, np.random.default_rng(0), "xt" + "s" * 18 + "x")
    with pytest.raises(ValueError, match="prompt 1 has 21 rows: .* context of 24 positions"):
        generate(model, [prompts[0], long], config)


@pytest.mark.parametrize("target", ["text", "speech"])
def test_stop_ids_end_the_output_like_eos(target):
    model = tiny_model(seed=4)
    prompts = prompts_for(model.token_list)
    plain = generate(model, prompts, GenerationConfig(target=target, max_frames=8))
    stop = int(plain[1][2, 0])  # the third generated stream-0 token of the second prompt
    config = GenerationConfig(target=target, max_frames=8, stop_ids=(stop,))
    stopped = generate(model, prompts, config)
    for before, after in zip(plain, stopped):
        hits = (before[:, 0] == stop).nonzero()
        cut = int(hits[0, 0]) if len(hits) else len(before)
        assert len(after) == cut
        # Stream 0 is identical up to the stop. The delayed codec streams of the last frames
        # are decoded after the stop row is fed (as eos), so only frames complete before it match.
        assert torch.equal(after[:, 0], before[:cut, 0])
        complete = max(cut - (model.token_list.num_streams - 1), 0)
        assert torch.equal(after[:complete], before[:complete])
    assert len(stopped[1]) <= 2 < len(plain[1])  # the stop really cut the second output
    streamed = list(generate_stream(model, prompts[1], config))
    assert torch.equal(torch.stack(streamed), stopped[1])


def test_sampling_filters():
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0, float("-inf")]]).expand(2000, -1)
    gen = torch.Generator().manual_seed(0)
    assert (sample(logits, SamplingConfig(greedy=True), gen) == 1).all()
    top2 = sample(logits, SamplingConfig(greedy=False, top_k=2), gen)
    assert set(top2.tolist()) == {1, 2}
    # Softmax mass of ids 1, 2 is ~0.66 + ~0.24 < 0.95: the nucleus needs id 3 as well.
    nucleus = sample(logits, SamplingConfig(greedy=False, top_p=0.95), gen)
    assert set(nucleus.tolist()) == {1, 2, 3}
    assert (sample(logits, SamplingConfig(greedy=False, top_p=0.5), gen) == 1).all()
    cold = sample(logits, SamplingConfig(greedy=False, temperature=0.05), gen)
    assert (cold == 1).all()
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="target"):
        GenerationConfig(target="audio")


def test_bad_prompt_shape_raises():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"prompt 1 must be a non-empty \[T, 4\]"):
        generate(
            model,
            [prompts_for(model.token_list)[0], torch.zeros(3, 2, dtype=torch.long)],
            GenerationConfig(target="text"),
        )


def memorising_model(sequences, steps: int) -> MultiStreamLM:
    """A small model (seed 0) trained `steps` full-batch Adam steps on the task sequences."""
    torch.manual_seed(0)
    token_list = tiny_token_list()
    model = MultiStreamLM.from_base(tiny_config(hidden_size=64, intermediate_size=128), token_list)
    lengths = torch.tensor([len(s.frames) for s in sequences])
    frames = torch.full(
        (len(sequences), int(lengths.max()), token_list.num_streams), token_list.pad_id
    )
    loss_mask = torch.zeros(frames.shape[:2], dtype=torch.bool)
    for i, seq in enumerate(sequences):
        frames[i, : len(seq.frames)] = torch.from_numpy(seq.frames)
        loss_mask[i, : len(seq.frames)] = torch.from_numpy(seq.loss_mask)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(frames, loss_mask, lengths).loss.backward()
        optimizer.step()
    return model.eval()


def test_memorised_examples_are_reproduced():
    token_list = tiny_token_list()
    rng = np.random.default_rng(0)
    speech = np.concatenate([rng.integers(0, 12, (6, 1)), rng.integers(0, 8, (6, 3))], 1)
    asr = Example("asr_utt", text=np.array([5, 9, 2, 31]), speech=speech)
    tts = Example(
        "tts_utt", text=np.array([7, 3, 3]), speech=speech[::-1].copy(), prompt=speech[:2]
    )
    sequences = [build_sequence("asr", asr, token_list), build_sequence("tts", tts, token_list)]
    model = memorising_model(sequences, 300)

    text = generate(
        model,
        [torch.from_numpy(generation_prompt("asr", asr, token_list))],
        GenerationConfig(target="text", max_frames=20),
    )[0]
    assert text[:, 0].tolist() == token_list.encode_text(asr.text).tolist()
    assert (text[:, 1:] == token_list.pad_id).all()
    speech_out = generate(
        model,
        [torch.from_numpy(generation_prompt("tts", tts, token_list))],
        GenerationConfig(target="speech", max_frames=20),
    )[0]
    assert speech_out.tolist() == token_list.encode_frames(tts.speech).tolist()


def test_text_only_model_decodes_one_stream():
    token_list = TokenList.build([f"t{i}" for i in range(40)])
    model = MultiStreamLM.from_base(tiny_config(), token_list).eval()
    prompts = [torch.tensor([[1], [2]]), torch.tensor([[5]])]
    outputs = generate(model, prompts, GenerationConfig(target="text", max_frames=5))
    for prompt, output in zip(prompts, outputs):
        assert output.shape[1] == 1 and len(output) <= 5
        assert torch.equal(output, reference_greedy(model, prompt, "text", max_frames=5))


def test_one_forward_per_delayed_row():
    model = tiny_model()
    calls = []
    plain_step = model.forward_step

    def counted_step(rows, *args):
        calls.append(rows.shape[1])
        return plain_step(rows, *args)

    model.forward_step = counted_step
    prompt = prompts_for(model.token_list)[1]
    config = GenerationConfig(target="speech", min_frames=7, max_frames=7)
    assert len(generate(model, [prompt], config)[0]) == 7
    streams = model.token_list.num_streams
    # The prompt in one forward, then rows 0 .. N + S - 3 one by one (row N + S - 2 is the last).
    assert calls == [len(prompt)] + [1] * (7 + streams - 2)


def test_decode_config_takes_max_len_ratio_and_ctc_settings():
    from opuslm.packing import PackError, check_decoding_model, generation_config

    assert generation_config("asr", {"max_len_ratio": 0.8}, "decode.yaml").max_len_ratio == 0.8
    with pytest.raises(PackError, match="decode.yaml.*max_len_ratio"):
        generation_config("asr", {"max_len_ratio": -2}, "decode.yaml")
    settings = {"ctc_weight": 0.3, "ctc_pre_beam": 8, "beam_size": 4}
    joint = generation_config("asr", settings, "decode.yaml")
    assert (joint.ctc_weight, joint.ctc_pre_beam, joint.beam_size) == (0.3, 8, 4)
    with pytest.raises(PackError, match="decode.yaml.*beam_size > 1 needs target 'text'"):
        generation_config("tts", {"beam_size": 2}, "decode.yaml")
    with pytest.raises(PackError, match="decode.yaml.*ctc_weight"):
        generation_config("asr", {"ctc_weight": 2}, "decode.yaml")
    with pytest.raises(PackError, match="decode.yaml.*ctc_weight needs target 'text'"):
        generation_config("tts", {"ctc_weight": 0.3}, "decode.yaml")
    check_decoding_model(joint, ctc_model(), "decode.yaml")
    with pytest.raises(PackError, match="decode.yaml: ctc_weight 0.3 needs a model with a CTC"):
        check_decoding_model(joint, tiny_model(), "decode.yaml")


def test_prefix_lm_prefill_equals_the_full_forward_of_each_prompt():
    """Left-padded batched prefill with the prefix mask == each prompt alone, bidirectional over
    its condition rows (through its last special token) and causal after them."""
    import transformers

    from opuslm.model.generate import _RowDecoder

    model = tiny_model(seed=4)
    model.prefix_lm = True
    # Whole-prompt conditions, and one that continues two frames past its last start token.
    prompts = prompts_for(model.token_list) + [
        random_frames(model.token_list, np.random.default_rng(5), "xttxss")
    ]
    decoder = _RowDecoder(model, prompts, GenerationConfig(target="text", max_frames=2), None)
    cache = transformers.DynamicCache(config=model.body.config)
    prefill = decoder._feed(decoder.delayed_prompt[:, : decoder.width], 0, cache).hidden
    for i, prompt in enumerate(prompts):
        rows = delay(prompt[None], model.token_list.pad_id)[:, : len(prompt)]
        with torch.no_grad():
            condition = num_condition_frames(prompt[:, 0].numpy(), model.token_list)
            bidirectional = prefix_attention_mask(torch.tensor([condition]), len(prompt))
            expected = model.hidden_states(rows, attention_mask=bidirectional)[0][0, -1]
            causal = model.hidden_states(rows)[0][0, -1]
        assert torch.allclose(prefill[i], expected, atol=1e-5)
        if condition > 1:  # the mask is in effect (one condition row is causal anyway)
            assert not torch.allclose(prefill[i], causal, atol=1e-5)
        whole = prefix_attention_mask(torch.tensor([len(prompt)]), len(prompt))
        if condition < len(prompt):  # the continuation rows are not bidirectional
            with torch.no_grad():
                wrong = model.hidden_states(rows, attention_mask=whole)[0][0, -1]
            assert not torch.allclose(prefill[i], wrong, atol=1e-5)


# ------------------------------------------------------------------ joint CTC / LM decoding
def ctc_model(seed: int = 0) -> MultiStreamLM:
    torch.manual_seed(seed)
    return MultiStreamLM.from_base(tiny_config(), tiny_token_list(), ctc_weight=1.0).eval()


def peaked_posteriors(alignments: list[list[int]], num_classes: int) -> torch.Tensor:
    """Log-posteriors [B, N, C + 1] peaking on each frame's class of the given alignments."""
    longest = max(map(len, alignments))
    logits = torch.zeros(len(alignments), longest, num_classes)
    for i, alignment in enumerate(alignments):
        logits[i, torch.arange(len(alignment)), torch.tensor(alignment)] = 10.0
    return logits.log_softmax(-1)


def test_pure_ctc_decoding_follows_the_ctc_posteriors():
    """ctc_weight 1: greedy joint decoding emits exactly the CTC-supported ids, then eos."""
    model = ctc_model()
    token_list = model.token_list
    blank = token_list.size("text")
    prompts = prompts_for(token_list, seed=1)  # 4, 7 and 1 speech frames
    alignments = [[3, blank, 3, blank], [5, 9, blank, 9, 2, 2, blank], [7]]
    expected = [[3, 3], [5, 9, 9, 2], [7]]
    speech_lengths = torch.tensor([4, 7, 1])

    def patched(frames, lengths):
        assert torch.equal(lengths, torch.tensor([len(p) for p in prompts]))
        return peaked_posteriors(alignments, blank + 1), speech_lengths

    model.ctc_log_probs = patched
    config = GenerationConfig(target="text", max_frames=10, ctc_weight=1.0)
    outputs = generate(model, prompts, config)
    assert [o[:, 0].tolist() for o in outputs] == expected  # ended by eos, before max_frames
    plain = generate(model, prompts, GenerationConfig(target="text", max_frames=10))
    assert [len(o) for o in plain] != [len(e) for e in expected]  # the LM alone says otherwise


def test_joint_first_step_is_the_weighted_sum_of_lm_and_ctc_scores():
    from opuslm.model.ctc_prefix import CTCPrefixScorer

    model = ctc_model(seed=3)
    token_list = model.token_list
    prompt = prompts_for(token_list, seed=1)[1]
    with torch.no_grad():
        log_probs, lengths = model.ctc_log_probs(prompt[None], torch.tensor([len(prompt)]))
        hidden, _ = model.hidden_states(delay(prompt[None], token_list.pad_id)[:, : len(prompt)])
        allowed = list(range(token_list.size("text"))) + [token_list.eos_id]
        lm = model.stream0_logits(hidden[0, -1])[allowed].log_softmax(-1)
    scorer = CTCPrefixScorer(log_probs, lengths)
    psi, whole = scorer.score(torch.arange(token_list.size("text"))[None])
    ctc = torch.cat([psi[0], whole])  # g empty: psi(g) = 1
    for weight in (0.3, 0.8):
        joint = (1 - weight) * lm + weight * ctc
        config = GenerationConfig(target="text", max_frames=1, ctc_weight=weight, ctc_pre_beam=0)
        output = generate(model, [prompt], config)[0]
        first = allowed[int(joint.argmax())]
        assert output[:, 0].tolist() == ([] if first == token_list.eos_id else [first])


def test_a_one_id_pre_beam_keeps_the_lm_choices():
    """With one CTC-scored candidate per step, the CTC can only stop early, never reorder."""
    model = ctc_model(seed=2)
    prompts = prompts_for(model.token_list, seed=1)
    plain = generate(model, prompts, GenerationConfig(target="text", max_frames=8))
    config = GenerationConfig(target="text", max_frames=8, ctc_weight=0.5, ctc_pre_beam=1)
    for joint, lm_only in zip(generate(model, prompts, config), plain):
        assert torch.equal(joint, lm_only[: len(joint)])


def test_joint_decoding_batched_equals_one_by_one_and_weight_0_is_plain():
    model = ctc_model(seed=1)
    model.prefix_lm = True  # the CTC posteriors must skip the left padding too
    prompts = prompts_for(model.token_list, seed=1)
    config = GenerationConfig(target="text", max_frames=8, ctc_weight=0.5, ctc_pre_beam=5)
    batched = generate(model, prompts, config)
    for prompt, output in zip(prompts, batched):
        assert torch.equal(output, generate(model, [prompt], config)[0])
    plain = GenerationConfig(target="text", max_frames=8)
    off = GenerationConfig(target="text", max_frames=8, ctc_weight=0.0)
    for prompt in prompts:
        expected = reference_greedy(model, prompt, "text", max_frames=8)
        assert torch.equal(generate(model, [prompt], off)[0], expected)
        assert torch.equal(generate(model, [prompt], plain)[0], expected)


def test_joint_decoding_settings_are_checked():
    for weight in (-0.1, 1.5):
        with pytest.raises(ValueError, match="ctc_weight must be in"):
            GenerationConfig(target="text", ctc_weight=weight)
    with pytest.raises(ValueError, match="ctc_pre_beam"):
        GenerationConfig(target="text", ctc_weight=0.5, ctc_pre_beam=-1)
    with pytest.raises(ValueError, match="ctc_weight needs target 'text'"):
        GenerationConfig(target="speech", ctc_weight=0.5)
    prompts = prompts_for(tiny_model().token_list)
    config = GenerationConfig(target="text", max_frames=2, ctc_weight=0.5)
    with pytest.raises(ValueError, match="needs a model with a CTC head"):
        generate(tiny_model(), prompts, config)
    no_speech = torch.tensor(
        [[ctc_model().token_list.sos_id] + [ctc_model().token_list.pad_id] * 3]
    )
    with pytest.raises(ValueError, match="prompt 1 has no speech frames"):
        generate(ctc_model(), [prompts[0], no_speech], config)


# ------------------------------------------------------------------ beam search
def beam_search(model: MultiStreamLM, prompts: list[torch.Tensor], config, beam: int, only=None):
    """The beam path itself (generate only takes it for beam_size > 1); `only`: the stream-0
    ids allowed besides eos (default: every text id)."""
    decoder = _RowDecoder(model, prompts, config, seed=None)
    if only is not None:
        lo = decoder.window[0]
        keep = torch.tensor([i - lo for i in [*only, model.token_list.eos_id]])
        for bias in (decoder.bias_with_eos, decoder.bias_without_eos):
            allowed = bias.clone()
            bias.fill_(float("-inf"))
            bias[keep] = allowed[keep]
    return decoder.beam_search(beam)  # (best frames per prompt, their scores)


@pytest.mark.parametrize("ctc_weight", [0.0, 0.5])
def test_a_beam_of_one_is_greedy_decoding(ctc_weight):
    model = ctc_model(seed=4)
    model.prefix_lm = True
    prompts = prompts_for(model.token_list, seed=2)
    config = GenerationConfig(target="text", max_frames=8, ctc_weight=ctc_weight, ctc_pre_beam=5)
    greedy = generate(model, prompts, config)
    beam, _ = beam_search(model, prompts, config, beam=1)
    assert [b.tolist() for b in beam] == [g.tolist() for g in greedy]


def sequence_score(model: MultiStreamLM, prompt: torch.Tensor, tokens: list[int], limit: int, only):
    """Summed stream-0 log-probs (over the ids `only`, and eos unless it is banned: before
    `limit` here) of `tokens` then eos after the prompt, recomputed without a cache; eos at
    `limit` frames is forced (scores 0)."""
    token_list = model.token_list
    pad, eos, streams = token_list.pad_id, token_list.eos_id, token_list.num_streams
    allowed = list(only)
    delayed = delay(prompt[None], pad)[0].tolist()  # [P + S - 1, S]
    rows, tail = delayed[: len(prompt)], delayed[len(prompt) :]
    total = 0.0
    for k, token in enumerate([*tokens, eos]):
        if k == limit:
            break
        with torch.no_grad():
            hidden, _ = model.hidden_states(torch.tensor([rows]))
            log_probs = model.stream0_logits(hidden[0, -1])[allowed].log_softmax(-1)
        total += float(log_probs[allowed.index(token)])
        rows.append([token] + [tail[k][s] if k < s else pad for s in range(1, streams)])
    return total


def test_a_wide_beam_finds_the_best_transcript_of_an_exhaustive_search():
    """Three text ids and exactly 4 frames (eos banned before, forced at 4): 81 transcripts, all
    kept by a beam of 81, so the search returns the best (its cache and hypothesis scores
    reordered right at every step); a beam of 1 (greedy) does not find it here."""
    model = tiny_model(seed=6)
    prompt = prompts_for(model.token_list, seed=3)[1]
    limit, only = 4, [2, 7, 11]
    candidates = [[a, b, c, d] for a in only for b in only for c in only for d in only]
    scores = [sequence_score(model, prompt, c, limit, only) for c in candidates]
    best = candidates[int(np.argmax(scores))]
    config = GenerationConfig(target="text", min_frames=limit, max_frames=limit)
    wide, score = beam_search(model, [prompt], config, beam=len(candidates), only=only)
    assert wide[0][:, 0].tolist() == best
    assert float(score[0]) == pytest.approx(max(scores), abs=1e-4)
    narrow = beam_search(model, [prompt], config, beam=1, only=only)[0][0][:, 0].tolist()
    assert narrow != best


@pytest.mark.parametrize("growing", [False, True])
def test_reordering_the_generated_rows_equals_reordering_the_whole_cache(growing):
    """Two prompts x 3 hypotheses: the 5 prefill rows are shared within a prompt, the 4 generated
    rows are not; each parent is a hypothesis of the same prompt. The same on transformers'
    cache and on decoding's (`growing_cache`, whose rows are views of a larger buffer)."""
    torch.manual_seed(0)
    model = tiny_model()
    prefill = torch.randn(2, 4, 5, 8).repeat_interleave(3, dim=0)  # [H, heads, rows, dim]

    def cache_of(generated):
        cache = (
            growing_cache(model.body.config, capacity=20)
            if growing
            else transformers.DynamicCache(config=model.body.config)
        )
        for layer in range(model.body.config.num_hidden_layers):
            rows = torch.cat([prefill, generated + layer], dim=2)
            cache.update(rows, -rows, layer)
        return cache

    generated = torch.randn(6, 4, 4, 8)
    parent = torch.tensor([2, 2, 0, 4, 3, 3])
    expected, ours = cache_of(generated), cache_of(generated)
    expected.reorder_cache(parent)
    reorder_generated_rows(ours, parent, start=5)
    for want, got in zip(expected.layers, ours.layers):
        assert torch.equal(got.keys, want.keys) and torch.equal(got.values, want.values)
    # The shared rows are what makes moving only the later ones right.
    assert not torch.equal(ours.layers[0].keys[:, :, 5:], generated)


def test_beam_search_batched_equals_one_by_one_and_settings_are_checked():
    model = ctc_model(seed=6)
    prompts = prompts_for(model.token_list, seed=4)
    config = GenerationConfig(target="text", max_frames=6, ctc_weight=0.5, beam_size=3)
    batched = generate(model, prompts, config)
    for prompt, output in zip(prompts, batched):
        assert torch.equal(output, generate(model, [prompt], config)[0])
        assert output.shape[1] == model.token_list.num_streams
        assert bool((output[:, 1:] == model.token_list.pad_id).all())
    # A beam wider than the CTC pre-beam: the first step has only pre-beam + eos live
    # candidates, and the -inf ones that fill the beam must not reach the CTC scorer.
    wide = GenerationConfig(**{**vars(config), "beam_size": 8, "ctc_pre_beam": 2})
    outputs, scores = beam_search(model, prompts, wide, beam=8)  # raised before the fix
    assert bool(torch.isfinite(scores).all())
    for prompt, output in zip(prompts, outputs):
        assert torch.equal(output, beam_search(model, [prompt], wide, beam=8)[0][0])
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        GenerationConfig(target="text", beam_size=0)
    with pytest.raises(ValueError, match="beam_size > 1 needs target 'text'"):
        GenerationConfig(target="speech", beam_size=2)
    with pytest.raises(ValueError, match="generate_stream"):
        next(generate_stream(model, prompts[0], config))


# ------------------------------------------------------------------ interleaved transcripts
def tts_prompts(token_list: TokenList, seed: int) -> list[torch.Tensor]:
    """Two prompts shaped like TTS ones: transcript rows, speaker speech, a start token last."""
    rng = np.random.default_rng(seed)
    return [random_frames(token_list, rng, kinds) for kinds in ("xtsssx", "xtttsssssssx")]


def text_ids_of(prompt: torch.Tensor, token_list: TokenList) -> list[int]:
    low, high = token_list.ranges["text"]
    stream0 = prompt[:, 0]
    return stream0[(stream0 >= low) & (stream0 < high)].tolist()


def test_interleaved_speech_says_the_whole_transcript_in_order():
    torch.manual_seed(0)
    token_list = tiny_token_list()
    model = MultiStreamLM.from_base(tiny_config(), token_list).eval()
    free = SamplingConfig(greedy=False)
    config = GenerationConfig(
        target="speech",
        semantic=free,
        acoustic=free,
        min_frames=10,
        max_frames=200,
        interleave_text=True,
    )
    prompts = tts_prompts(token_list, seed=3)
    outputs = generate(model, prompts, config, seed=0)
    text_lo, text_hi = token_list.ranges["text"]
    sem_lo, sem_hi = token_list.ranges["semantic"]
    for prompt, output in zip(prompts, outputs):
        stream0 = output[:, 0]
        is_text = (stream0 >= text_lo) & (stream0 < text_hi)
        # Every transcript token once, in order, then eos (not cut at max_frames), and
        # nothing but semantic units between them; the text rows carry no codes.
        assert stream0[is_text].tolist() == text_ids_of(prompt, token_list)
        assert len(output) < 200
        assert ((stream0[~is_text] >= sem_lo) & (stream0[~is_text] < sem_hi)).all()
        assert (output[is_text, 1:] == token_list.pad_id).all()
        assert (output[~is_text, 1:] != token_list.pad_id).all()
        assert len(output) >= 10  # no eos before min_frames


def test_interleaved_eos_waits_and_any_text_id_means_advance():
    model = tiny_model(seed=3)
    eos = model.token_list.eos_id
    plain_logits = model.head_logits
    prompt = prompts_for(model.token_list)[1]
    transcript = text_ids_of(prompt, model.token_list)
    other = min(set(range(model.token_list.ranges["text"][1])) - set(transcript))

    def eos_first(hidden, start=0, end=None):  # wants to stop, else to say one wrong text id
        out = plain_logits(hidden, start, end)
        if start <= eos < (len(model.token_list) if end is None else end):
            out[..., eos - start] = 1e4
            out[..., other - start] = 1e3
        return out

    model.head_logits = eos_first
    config = GenerationConfig(target="speech", max_frames=50, interleave_text=True)
    output = generate(model, [prompt], config)[0]
    # eos is refused until every token is said, and the mass on a text id the transcript does
    # not have next still means "the next token starts here".
    assert output[:, 0].tolist() == transcript
    plain = generate(model, [prompt], GenerationConfig(target="speech", max_frames=50))[0]
    assert len(plain) == 0


@pytest.mark.parametrize("prefix_lm", [False, True])
def test_interleaved_batched_equals_one_by_one(prefix_lm):
    model = tiny_model(seed=2)
    model.prefix_lm = prefix_lm
    prompts = tts_prompts(model.token_list, seed=1)
    config = GenerationConfig(target="speech", max_frames=12, interleave_text=True)
    batched = generate(model, prompts, config)
    for prompt, output in zip(prompts, batched):
        assert torch.equal(output, generate(model, [prompt], config)[0])


def test_interleave_text_settings_are_checked():
    with pytest.raises(ValueError, match="interleave_text needs target 'speech'"):
        GenerationConfig(target="text", interleave_text=True)
    with pytest.raises(ValueError, match="advance_penalty needs interleave_text"):
        GenerationConfig(target="speech", advance_penalty=0.5)
    with pytest.raises(ValueError, match="advance_penalty must be finite"):
        GenerationConfig(target="speech", interleave_text=True, advance_penalty=float("inf"))
    model = tiny_model()
    config = GenerationConfig(target="speech", interleave_text=True)
    with pytest.raises(ValueError, match="prompt 0 holds no transcript"):
        generate(model, [prompts_for(model.token_list)[2]], config)
    # An own-prefix prompt continues speech that has no alignment: refused.
    with pytest.raises(ValueError, match="prompt 0 ends in speech after its start token"):
        generate(model, [prompts_for(model.token_list)[0]], config)


def test_memorised_aligned_example_is_reproduced():
    token_list = tiny_token_list()
    rng = np.random.default_rng(0)
    speech = np.concatenate([rng.integers(0, 12, (6, 1)), rng.integers(0, 8, (6, 3))], 1)
    tts = Example(
        "tts_utt",
        text=np.array([7, 3, 3]),
        speech=speech,
        prompt=speech[:2],
        align=np.array([0, 2, 5]),
    )
    sequence = build_sequence("tts", tts, token_list)
    model = memorising_model([sequence], 200)
    prompt = torch.from_numpy(generation_prompt("tts", tts, token_list))
    config = GenerationConfig(target="speech", max_frames=20, interleave_text=True)
    output = generate(model, [prompt], config)[0]
    assert output.tolist() == sequence.frames[len(prompt) : -1].tolist()


@pytest.mark.parametrize(
    "sampling, penalty, units_per_token",
    [
        (dict(temperature=0.3), 0.0, 1.0),
        (dict(temperature=3.0), 0.0, 1.0),
        (dict(top_k=1), 0.0, 1.0),
        # The advance's odds halved (penalty ln 2): two units per token; doubled: half a unit.
        (dict(temperature=0.3), float(np.log(2)), 2.0),
        (dict(), -float(np.log(2)), 0.5),
    ],
)
def test_only_the_advance_penalty_changes_how_long_a_token_is_spoken(
    sampling, penalty, units_per_token
):
    model = tiny_model(seed=3)
    token_list = model.token_list
    eos, (sem_lo, sem_hi) = token_list.eos_id, token_list.ranges["semantic"]
    plain_logits = model.head_logits

    def half_advance(hidden, start=0, end=None):
        # Units all equal, one text id with as much mass as all units: P(advance) = 1/2.
        out = plain_logits(hidden, start, end)
        if start <= eos < (len(token_list) if end is None else end):
            out[...] = float("-inf")
            out[..., sem_lo - start : sem_hi - start] = 0.0
            out[..., 5 - start] = float(np.log(sem_hi - sem_lo))
            out[..., eos - start] = 1e4
        return out

    model.head_logits = half_advance
    prompt = prompts_for(token_list)[1]
    tokens = len(text_ids_of(prompt, token_list))
    config = GenerationConfig(
        target="speech",
        semantic=SamplingConfig(greedy=False, **sampling),
        max_frames=200,
        interleave_text=True,
        advance_penalty=penalty,
    )
    outputs = generate(model, [prompt] * 200, config, seed=0)
    assert all(len(o) < config.max_frames for o in outputs)  # none cut short
    stream0 = torch.cat([o[:, 0] for o in outputs])
    units = int(((stream0 >= sem_lo) & (stream0 < sem_hi)).sum())
    # Geometric: on average odds-of-staying units per token before each advance (1 at even
    # odds), whatever the sampling settings; the penalty scales those odds by exp(penalty).
    assert abs(units / (200 * tokens) / units_per_token - 1.0) < 0.15


def test_interleaved_output_ends_where_the_model_expects_one_more_token():
    model = tiny_model(seed=3)
    eos = model.token_list.eos_id
    plain_logits = model.head_logits

    def never_eos(hidden, start=0, end=None):  # always a text id next, never eos itself
        out = plain_logits(hidden, start, end)
        if start <= eos < (len(model.token_list) if end is None else end):
            out[..., eos - start] = -1e4
            out[..., 5 - start] = 1e3
        return out

    model.head_logits = never_eos
    prompt = prompts_for(model.token_list)[1]
    config = GenerationConfig(target="speech", max_frames=50, interleave_text=True)
    output = generate(model, [prompt], config)[0]
    assert output[:, 0].tolist() == text_ids_of(prompt, model.token_list)  # then eos at once
