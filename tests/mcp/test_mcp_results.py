"""Result conversion: non-text content becomes placeholders, structured-only results become JSON, long text
is cut with a note."""
import base64

from mcp.types import EmbeddedResource, ImageContent, ResourceLink, TextContent, TextResourceContents

from mcp_client.results import result_text, truncate


def test_blocks_become_readable_text():
    png = base64.b64encode(b"\x89PNG" + b"\0" * 2044).decode()
    content = [TextContent(type="text", text="hello"),
               ImageContent(type="image", data=png, mime_type="image/png"),
               EmbeddedResource(type="resource", resource=TextResourceContents(uri="file:///a.txt", text="inside")),
               ResourceLink(type="resource_link", uri="file:///b.txt", name="b")]
    text = result_text(content, None, False)
    assert text.splitlines() == ["hello", "[image: image/png, 2.0 KB; not shown to the model]", "inside",
                                 "[resource link: file:///b.txt (b)]"]


def test_structured_only_and_empty_results():
    assert '"temperature": 21' in result_text([], {"temperature": 21}, False)
    assert result_text([], None, False) == "(the tool returned nothing)"
    assert "without a message" in result_text([], None, True)


def test_truncation_keeps_head_and_says_so():
    text, cut = truncate("a" * 100, 10)
    assert cut and text.startswith("a" * 10) and "first 10 of 100 characters" in text
    assert truncate("short", 10) == ("short", False)
