"""Survey mode end to end: the real default model over a real index of shared-corpus papers, driven from the
topic input to a saved Markdown + BibTeX survey, with the outline and the references panel filled live."""
import json
import re

from textual.widgets import ListView, Tree

from tests.tui.test_tui_app import wait_for_group
from tui.app import CpmApp
from tui.services import Services
from tui.settings import TuiSettings

TOPIC_WORDS = re.compile(r"quantiz|speculative decoding|kv cache", re.I)


def small_index(corpus_path, directory, n: int = 60):
    """n on-topic papers (60: about half a minute on 2 cores), embedded for real."""
    from retrieval import IndexConfig, build_index, read_documents

    subset = directory / "papers.jsonl"
    with corpus_path.open() as f:
        lines = [line for line in f if TOPIC_WORDS.search(json.loads(line)["title"])][:n]
    subset.write_text("".join(lines))
    build_index(read_documents([subset]), directory / "index", IndexConfig(progress=False, max_seq_length=128))
    return directory / "index"


async def test_survey_mode_writes_and_saves(corpus_path, smollm2_path, tmp_path, monkeypatch):
    index = small_index(corpus_path, tmp_path)
    monkeypatch.chdir(tmp_path)   # checkpoints and saved surveys go under out/
    settings = TuiSettings(index_dir=str(index))
    app = CpmApp(settings, Services(settings))
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("f2")
        app.query_one("#topic").value = "efficient LLM inference with quantization"
        app.query_one("#sections").value = "2"
        await pilot.click("#write")
        await wait_for_group(app, pilot, "survey", timeout=1200)
        labels = [str(node.label) for node in app.query_one("#outline", Tree).root.children]
        assert len(labels) == 2 and all("done" in label for label in labels), labels
        assert len(app.query_one("#reference-list", ListView).children) >= 2
        assert "## References" in app.query_one("#section-text")._markdown
        await pilot.click("#save")
        await pilot.pause()
    saved = list((tmp_path / "out" / "surveys").glob("*.md"))
    assert saved and "## References" in saved[0].read_text()
    assert saved[0].with_suffix(".bib").read_text().count("@") >= 2
