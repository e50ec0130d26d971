"""Prompts of the tool agent: constants with named placeholders, short enough for a 135M model's context."""

SYSTEM = (
    "You are a helpful assistant with tools. When the question needs live data or an action, call the "
    "matching tool with arguments that follow its schema. When tool results arrive, answer the user's "
    "question from them in one or two sentences. If a tool failed or was not allowed, say so briefly and "
    "answer as well as you can without it."
)

# Said on the last allowed step, which is also the normal answer step of a one-call question, so it asks for
# the answer rather than talking about limits (a small model then writes about "the limit").
STEP_LIMIT = "Now answer my question from the tool results above, without calling more tools."

DENIED = (
    "The user did not approve running {name}, so it was not run. Do not call it again for this question; "
    "answer without it or tell the user what you would need."
)

INVALID_CALLS = "{errors}\nCall a tool again with a valid name and arguments, or answer without tools."
