"""BFCL-style function-calling evaluation: load the data, decode model outputs, check them with BFCL's AST
rules, compute BFCL and MiniCPM4-MCP metrics, and generate outputs through the chat-model layer.

Modules: `data` (questions + possible answers), `decode` (model output -> calls), `values` (per-parameter
type/value rules), `checker` (per-case verdict), `metrics` (accuracies), `score` (results file -> report),
`tools` (BFCL function docs -> OpenAI tool schemas), `generate` (run a chat model, resumable JSON lines).
The rules and their sources are written down in docs/bfcl.md.
"""
