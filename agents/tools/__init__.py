"""The tool-calling agent: model -> MCP tool calls (parallel, with approval) -> results -> model.

`agents.tools.session.ToolSession` runs it turn by turn with a SQLite transcript; `agents.tools.graph.build_graph`
is the LangGraph graph itself. Import-light: nothing heavy is loaded here.
"""
