"""The system prompt for free (prompting-style) generation, in the spirit of BFCL's default prompt.

BFCL's prompting mode puts the function docs (JSON) in the system prompt and asks for a Python call list
`[func(a=1, b='x')]` and nothing else; the reply is decoded with decode.decode_prompting. Our wording.
"""
from __future__ import annotations

import json

FREE_SYSTEM_PROMPT = """You are an expert at composing function calls. You are given a question and a set of \
possible functions. Based on the question, make one or more function calls to achieve the purpose.
If none of the functions can be used, say so in plain words. If the question lacks parameters that a \
function requires, say so as well.

If you decide to call functions, reply with nothing but a Python list of calls, in this form:
[func_name1(param1=value1, param2=value2), func_name2(param=value)]

Here is the list of functions you can call, in JSON:
{functions}
"""


def free_messages(question_turn: list[dict], functions: list[dict]) -> list[dict]:
    """Messages for one single-turn case: our system prompt first; a system message in the data follows it."""
    system = FREE_SYSTEM_PROMPT.format(functions=json.dumps(functions, indent=1, ensure_ascii=False))
    turn = [dict(m) for m in question_turn]
    if turn and turn[0].get("role") == "system":
        return [{"role": "system", "content": system + "\n\n" + turn[0]["content"]}, *turn[1:]]
    return [{"role": "system", "content": system}, *turn]
