"""Generates BFCL FC-mode results with whatever cpm-suite code is first on PYTHONPATH (this release or an
earlier one), for `cpm eval bfcl --compare-with`. Run as a script, it uses only APIs both releases have
(ChatEngine.from_model, bind_tools, agents.bfcl.data.load_cases, agents.bfcl.tools.to_openai_tools).

usage: python bfcl_compare_driver.py DATA OUT.jsonl MODE(auto|required) LIMIT MAX_TOKENS MODEL DEVICE CATEGORY...
"""
import sys

sys.path.pop(0)  # this script's folder: the release under test comes from PYTHONPATH only

import json  # noqa: E402
import time  # noqa: E402


def main(argv: list[str]) -> None:
    data, out, mode, limit, max_tokens, model, device, *categories = argv
    from agents.bfcl.data import load_cases
    from agents.bfcl.tools import to_openai_tools
    from agents.chat import ChatEngine

    chat = ChatEngine.from_model(model, device=device)
    cases = load_cases(data, categories, int(limit))
    with open(out, "w", encoding="utf-8") as f:
        for n, case in enumerate(cases, 1):
            choice = "auto" if mode == "auto" or "relevance" in case.category else "required"
            start = time.perf_counter()
            bound = chat.bind_tools(to_openai_tools(case.functions), tool_choice=choice)
            message = bound.invoke(case.question[0], max_tokens=int(max_tokens))
            result = [{c["name"]: json.dumps(c["args"], ensure_ascii=False)} for c in message.tool_calls]
            invalid = list(message.invalid_tool_calls or []) or \
                list((message.response_metadata or {}).get("invalid_tool_calls") or [])
            f.write(json.dumps({"id": case.id, "category": case.category, "tool_choice": choice, "result": result,
                                "args": [c["args"] for c in message.tool_calls],
                                "names": [c["name"] for c in message.tool_calls], "raw": message.content,
                                "invalid": len(invalid),
                                "finish_reason": (message.response_metadata or {}).get("finish_reason"),
                                "latency_s": round(time.perf_counter() - start, 2)}, ensure_ascii=False) + "\n")
            f.flush()
            print(f"[{n}/{len(cases)}] {case.id} {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
