"""Twenty tool schemas of the shapes agents meet: flat, nested objects, enums, arrays, optional parameters."""
from __future__ import annotations


def _tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required,
                       "additionalProperties": False}}}


_S = {"type": "string", "maxLength": 40}  # short strings keep the tiny test model's calls short
_I = {"type": "integer", "minimum": 0, "maximum": 1000}

TOOL_SCHEMAS: list[tuple[dict, str]] = [
    (_tool("get_weather", "Current weather for a city.", {"city": _S, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"]),
     "What is the weather in Paris?"),
    (_tool("search_web", "Search the web.", {"query": _S, "max_results": _I}, ["query"]),
     "Search the web for llama recipes."),
    (_tool("send_email", "Send an email.", {"to": _S, "subject": _S, "body": _S, "cc": {"type": "array", "items": _S, "maxItems": 3}}, ["to", "subject", "body"]),
     "Email bob@example.com saying the meeting moved to 3pm."),
    (_tool("create_event", "Create a calendar event.", {"title": _S, "start": {"type": "object", "properties": {"date": _S, "hour": {"type": "integer", "minimum": 0, "maximum": 23}}, "required": ["date", "hour"], "additionalProperties": False}, "attendees": {"type": "array", "items": _S, "maxItems": 3}}, ["title", "start"]),
     "Schedule a team lunch on 2025-06-01 at noon."),
    (_tool("convert_currency", "Convert money between currencies.", {"amount": {"type": "number"}, "from_currency": {"type": "string", "enum": ["USD", "EUR", "JPY", "GBP"]}, "to_currency": {"type": "string", "enum": ["USD", "EUR", "JPY", "GBP"]}}, ["amount", "from_currency", "to_currency"]),
     "How many euros is 100 dollars?"),
    (_tool("set_thermostat", "Set the thermostat.", {"temperature": {"type": "number", "minimum": 5, "maximum": 35}, "mode": {"type": "string", "enum": ["heat", "cool", "auto"]}}, ["temperature"]),
     "Make it 21 degrees in here."),
    (_tool("add_todo", "Add items to the to-do list.", {"items": {"type": "array", "items": _S, "minItems": 1, "maxItems": 4}, "priority": {"type": "string", "enum": ["low", "medium", "high"]}}, ["items"]),
     "Add milk and eggs to my list."),
    (_tool("book_flight", "Book a flight.", {"origin": _S, "destination": _S, "passengers": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {"name": _S, "age": _I}, "required": ["name"], "additionalProperties": False}}, "cabin": {"type": "string", "enum": ["economy", "business"]}}, ["origin", "destination", "passengers"]),
     "Book a flight from Boston to Denver for Ann."),
    (_tool("read_file", "Read a text file.", {"path": _S, "start_line": _I, "end_line": _I}, ["path"]),
     "Show me the first lines of /etc/hosts."),
    (_tool("run_sql", "Run a read-only SQL query.", {"query": {"type": "string", "maxLength": 80}, "limit": _I}, ["query"]),
     "Count the rows in the users table."),
    (_tool("translate", "Translate text.", {"text": _S, "target_language": {"type": "string", "enum": ["fr", "de", "es", "zh"]}}, ["text", "target_language"]),
     "Translate 'good morning' into German."),
    (_tool("resize_image", "Resize an image.", {"url": _S, "size": {"type": "object", "properties": {"width": _I, "height": _I}, "required": ["width", "height"], "additionalProperties": False}, "keep_aspect": {"type": "boolean"}}, ["url", "size"]),
     "Resize photo.png to 200 by 100."),
    (_tool("get_stock_price", "Latest stock price.", {"ticker": {"type": "string", "pattern": "^[A-Z]{1,5}$"}}, ["ticker"]),
     "What is Apple's stock price?"),
    (_tool("update_profile", "Update a user profile.", {"user_id": _I, "changes": {"type": "object", "properties": {"email": _S, "nickname": _S, "newsletter": {"type": "boolean"}}, "additionalProperties": False}}, ["user_id", "changes"]),
     "Turn off the newsletter for user 42."),
    (_tool("plot_chart", "Plot a chart.", {"kind": {"type": "string", "enum": ["line", "bar", "pie"]}, "values": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 5}, "title": _S}, ["kind", "values"]),
     "Draw a bar chart of 3, 5 and 8."),
    (_tool("find_restaurants", "Find restaurants.", {"location": _S, "cuisine": {"type": "string", "enum": ["italian", "thai", "mexican", "any"]}, "open_now": {"type": "boolean"}, "price": {"type": "integer", "enum": [1, 2, 3]}}, ["location"]),
     "Any cheap thai food near Soho?"),
    (_tool("create_issue", "Open an issue in a repository.", {"repo": _S, "title": _S, "labels": {"type": "array", "items": {"type": "string", "enum": ["bug", "docs", "feature"]}, "maxItems": 3}, "assignee": {"anyOf": [_S, {"type": "null"}]}}, ["repo", "title"]),
     "Open a bug in acme/app: login button broken."),
    (_tool("geocode", "Coordinates of an address.", {"address": {"type": "object", "properties": {"street": _S, "city": _S, "country": _S}, "required": ["city"], "additionalProperties": False}}, ["address"]),
     "Where is 10 Downing Street, London?"),
    (_tool("set_reminder", "Set a reminder.", {"message": _S, "minutes_from_now": {"type": "integer", "minimum": 1, "maximum": 1440}, "repeat": {"type": "string", "enum": ["never", "daily", "weekly"]}}, ["message", "minutes_from_now"]),
     "Remind me to stretch in 30 minutes."),
    (_tool("summarize_document", "Summarize a document.", {"doc_id": _S, "length": {"type": "string", "enum": ["short", "medium", "long"]}, "focus": {"type": "array", "items": _S, "maxItems": 2}, "options": {"type": "object", "properties": {"bullet_points": {"type": "boolean"}, "language": _S}, "additionalProperties": False}}, ["doc_id"]),
     "Give me a short summary of report-7."),
]
