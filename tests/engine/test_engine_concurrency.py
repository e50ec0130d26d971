"""The serving core on the real default model, exact fp32 mode on CPU: requests run concurrently through the
scheduler give the same tokens as each run alone (mixed lengths, stops, grammars); preemption with a tiny pool
keeps every output; cancellation returns the pool to full; a request larger than the pool is refused."""
from __future__ import annotations

import json
import threading

import pytest
import torch

PROMPTS = [
    "The capital of France is",
    "Write a Python function that returns the n-th Fibonacci number.\n\ndef fib(n):",
    "List three colours:",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who " * 6,
    "Q: What is 12 times 12?\nA:",
    "Translate to French: I like apples.",
]


@pytest.fixture(scope="module")
def eng(smollm2_path):
    from engine import Engine

    torch.set_num_threads(2)
    # block_size 16: prompts here span several blocks, so block tables and chunk boundaries are exercised
    return Engine.load(str(smollm2_path), device="cpu", dtype=torch.float32, max_seq_len=512, block_size=16,
                       kv_blocks=96, max_running=8)


def _params(i: int):
    from engine import SamplingParams

    stops = [[], ["."], ["\n\n"], [], [" "], []]
    return SamplingParams(max_tokens=[24, 40, 12, 32, 16, 20][i], stop=stops[i])


def _alone(eng, prompts, params):
    out = []
    for p, sp in zip(prompts, params):
        out.append(eng.generate(p, sp))
        assert eng.stats().running == 0
    return out


def test_concurrent_threads_equal_alone(eng):
    params = [_params(i) for i in range(len(PROMPTS))]
    alone = _alone(eng, PROMPTS, params)
    results: dict[int, object] = {}

    def client(i: int):
        results[i] = eng.generate(PROMPTS[i], params[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, a in enumerate(alone):
        assert results[i].token_ids == a.token_ids and results[i].text == a.text, PROMPTS[i]
        assert results[i].finish_reason == a.finish_reason
    stats = eng.stats()
    assert stats.running == stats.waiting == 0 and stats.kv_blocks_used == 0


def test_generate_batch_equals_alone_with_grammars(eng, smollm2_path):
    from agents.chat.grammar import GrammarFactory
    from engine import SamplingParams

    factory = GrammarFactory(eng.tokenizer, vocab_size=eng.config.vocab_size, stop_token_ids=sorted(eng.eos_ids))
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "year": {"type": "integer"}},
              "required": ["city", "year"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}

    def params(i: int):
        if i % 2:  # every other request constrained by its own grammar matcher
            return SamplingParams(max_tokens=40, logits_processors=[factory.for_response_format(fmt)])
        return _params(i)

    prompts = [p if i % 2 == 0 else "Give a city and a year as JSON: " + p for i, p in enumerate(PROMPTS)]
    alone = _alone(eng, prompts, [params(i) for i in range(len(prompts))])
    reqs = [eng.submit(p, params(i)) for i, p in enumerate(prompts)]  # all queued before the first step
    batch = [r.result() for r in reqs]
    for i, (a, b) in enumerate(zip(alone, batch)):
        assert a.token_ids == b.token_ids, prompts[i]
        if i % 2 and a.finish_reason == "stop":
            assert set(json.loads(b.text)) >= {"city", "year"}


def test_generate_batch_api_and_overrides(eng):
    alone = [eng.generate(p, max_tokens=10, repetition_penalty=1.3) for p in PROMPTS[:3]]
    batch = eng.generate_batch(PROMPTS[:3], max_tokens=10, repetition_penalty=1.3)
    assert [a.token_ids for a in alone] == [b.token_ids for b in batch]


def test_preemption_with_a_tiny_pool(smollm2_path, eng):
    from engine import Engine, SamplingParams
    from engine.errors import EngineError

    # 8 blocks of 16 tokens: four requests cannot all hold their blocks at once, so sequences are preempted
    # and recomputed; every output must still be what it is alone
    tiny = Engine.load(str(smollm2_path), device="cpu", dtype=torch.float32, max_seq_len=512, block_size=16,
                       kv_blocks=8, max_running=4, prefix_cache=False)
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[4], PROMPTS[5]]
    params = SamplingParams(max_tokens=40)
    alone = [eng.generate(p, params) for p in prompts]
    got = tiny.generate_batch(prompts, params)
    assert [g.token_ids for g in got] == [a.token_ids for a in alone]
    stats = tiny.stats()
    assert stats.preemptions > 0 and stats.kv_blocks_used == 0
    with pytest.raises(EngineError, match="KV pool holds 128"):  # more than the whole pool: refused at once
        tiny.generate(PROMPTS[3], max_tokens=100)
    assert tiny.generate(PROMPTS[0], max_tokens=3).decode_tokens == 3  # and the engine goes on serving
    tiny.close()


def test_cancel_frees_the_pool(eng):
    from engine import SamplingParams

    req = eng.submit(PROMPTS[3], SamplingParams(max_tokens=200))
    other = eng.submit(PROMPTS[0], SamplingParams(max_tokens=8))
    it = iter(req)
    next(it)  # the request is running and holds blocks
    assert eng.stats().kv_blocks_used > 0
    req.cancel()
    chunks = list(it)
    assert chunks[-1].result.finish_reason == "cancelled"
    assert other.result().decode_tokens == 8  # the other request went on
    stats = eng.stats()
    assert stats.kv_blocks_used == 0 and stats.running == 0 and stats.waiting == 0


def test_closing_a_stream_cancels_it(eng):
    gen = eng.stream(PROMPTS[3], max_tokens=200)
    next(gen)
    gen.close()
    eng.generate(PROMPTS[0], max_tokens=2)  # one more step: the loop has dropped the cancelled sequence
    assert eng.stats().kv_blocks_used == 0


def test_chat_runner_turns_run_concurrently(eng):
    """EngineRunner (ChatEngine, `cpm serve`) holds no lock: turns from several threads overlap in the scheduler
    and each gets the reply it gets alone, tool-call grammar included."""
    from agents.chat.engine_runner import ChatRequest, EngineRunner

    runner = EngineRunner(eng)
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                             "parameters": {"type": "object", "properties": {
                                                 "city": {"type": "string"}}, "required": ["city"]}}}
    reqs = [ChatRequest(messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=[tool],
                        tool_choice="required", max_tokens=40),
            ChatRequest(messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=24),
            ChatRequest(messages=[{"role": "user", "content": "Count to five."}], max_tokens=30)]
    alone = [runner.complete(r) for r in reqs]
    peak, out = [0], {}

    def turn(i: int):
        out[i] = runner.complete(reqs[i])

    threads = [threading.Thread(target=turn, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak[0] = max(peak[0], eng.stats().running)
        threads[0].join(0.005)
    for t in threads:
        t.join()
    assert peak[0] >= 2  # the turns overlapped
    def key(reply):  # tool-call ids are fresh uuids per parse
        return reply.parsed.content, [(c["name"], c["args"]) for c in reply.parsed.tool_calls], reply.finish_reason

    for i, a in enumerate(alone):
        assert key(out[i]) == key(a)
    assert alone[0].parsed.tool_calls and alone[0].parsed.tool_calls[0]["name"] == "get_weather"


def test_no_repeat_ngram_and_repetition_penalty_keywords(eng):
    from agents.chat.engine_runner import ChatRequest, EngineRunner
    from engine.sampling import banned_ngram_ids

    assert banned_ngram_ids([1, 2, 3, 1, 2], 3) == [3] and banned_ngram_ids([1, 2, 3], 3) == []
    prompt = "Repeat after me forever: red, green, blue, red, green, blue, red, green, blue,"
    loops = eng.generate(prompt, max_tokens=40)

    def trigrams(ids):
        return [tuple(ids[i:i + 3]) for i in range(len(ids) - 2)]

    assert len(set(trigrams(loops.token_ids))) < len(trigrams(loops.token_ids))  # plain greedy repeats itself
    free = eng.generate(prompt, max_tokens=40, no_repeat_ngram_size=3)
    assert len(set(trigrams(free.token_ids))) == len(trigrams(free.token_ids))
    assert eng.generate(prompt, max_tokens=40, repetition_penalty=1.5).token_ids != loops.token_ids
    reply = EngineRunner(eng).complete(ChatRequest(messages=[{"role": "user", "content": prompt}], max_tokens=40,
                                                   no_repeat_ngram_size=3))
    ids = eng.tokenizer.encode(reply.parsed.content, add_special_tokens=False)
    assert reply.completion_tokens > 3 and len(ids) > 3
    from engine.errors import EngineError

    with pytest.raises(EngineError, match="unknown sampling parameter"):
        eng.generate(prompt, max_token=3)


def test_greedy_runs_of_several_steps_equal_single_steps(smollm2_path):
    """The loop's back-to-back greedy runs (Runner.decode_paged_greedy, what CUDA does with its decode graphs),
    forced on here to run eagerly: exact fp32, the same tokens as one step at a time, with stops and budgets that
    end rows mid-run and a newcomer that arrives while a run is going."""
    from engine import Engine, SamplingParams

    eng = Engine.load(str(smollm2_path), device="cpu", dtype=torch.float32, max_seq_len=512)
    prompts = ["The capital of France is", "Count: one, two, three,", "def add(a, b):", "Once upon a time"]
    params = [SamplingParams(max_tokens=n) for n in (13, 7, 20, 11)]
    alone = [eng.generate(p, q).token_ids for p, q in zip(prompts, params)]
    eng.runner.paged_greedy_steps = 4
    reqs = [eng.submit(p, q) for p, q in zip(prompts[:3], params[:3])]
    late = eng.submit(prompts[3], params[3])
    assert [r.result().token_ids for r in reqs + [late]] == alone
    assert eng.runner.paged_graphs  # the runs went through PagedDecodeGraph.run_greedy (eagerly on CPU)
    assert eng.stats().kv_blocks_used == 0
