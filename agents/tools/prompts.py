"""Prompts of the tool agent: constants with named placeholders, short enough for a 135M model's context."""

SYSTEM = (
    "You are a helpful assistant with tools. When the question needs live data or an action, call the "
    "matching tool with arguments that follow its schema. When tool results arrive, answer the user's "
    "question from them in one or two sentences. If a tool failed or was not allowed, say so briefly and "
    "answer as well as you can without it."
)

# Said on the answer step (after the last tool round, or at the step limit), so it asks for the answer rather
# than talking about limits (a small model then writes about "the limit"). The question is repeated: asked
# only "from the tool results above", SmolLM2-135M echoed the <tool_response> block or apologised; with the
# question restated it wrote "The time is 2026-12-08T08:43:44+09:00." (docs/mcp.md).
STEP_LIMIT = "Using the tool results above, answer in one sentence without calling more tools: {question}"

DENIED = (
    "The user did not approve running {name}, so it was not run. Do not call it again for this question; "
    "answer without it or tell the user what you would need."
)

INVALID_CALLS = "{errors}\nCall a tool again with a valid name and arguments, or answer without tools."
