"""Lists the app resumes from, and FactScore in the app: a chat session recorded in the real transcript
database, empty lists that say what to do, and the FactScore screen scoring a saved survey over a real index."""
import json

from textual.widgets import DataTable

from agents.events import Answer, Approval, Question, ToolCall, ToolResult
from agents.tools.transcript import Transcript
from tests.tui.test_tui_app import wait_for_group
from tests.tui.test_tui_survey import small_index
from tui.app import CpmApp
from tui.screens.factscore import FactScoreScreen
from tui.screens.pick import PickScreen
from tui.services import Services
from tui.settings import TuiSettings
from tui.widgets.assistant import AssistantPane, ChatMessage, ToolCallBlock


def record_session(db, session_id: str) -> None:
    """A session as `ToolSession` records it: question, tool call, approval, result, answer."""
    db.parent.mkdir(parents=True, exist_ok=True)
    transcript = Transcript(db)
    transcript.create(session_id, "smollm2-135m", ["time"])
    for event in (Question(session=session_id, text="What time is it in UTC?"),
                  ToolCall(id="c1", name="time.get_current_time", args={"timezone": "UTC"}),
                  Approval(id="c1", name="time.get_current_time", approved=True),
                  ToolResult(id="c1", name="time.get_current_time", text='{"datetime": "x"}', is_error=False,
                             duration_s=0.01),
                  Answer(session=session_id, text="It is noon in UTC.", steps=2, stopped="answer", wall_s=1.0)):
        transcript.add(session_id, event)
    transcript.close()


async def test_sessions_list_resumes_a_recorded_session(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record_session(tmp_path / "out" / "chat-sessions.sqlite", "20261122-120000-abcdef")
    app = CpmApp(TuiSettings())
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f6")   # Assistant mode: the sessions list
        assert isinstance(app.screen, PickScreen)
        assert app.screen.rows[1][0] == "20261122-120000-abcdef"
        await pilot.press("down", "enter")
        await pilot.pause()
        pane = app.query_one(AssistantPane)
        texts = [m.role + ":" + m._markdown for m in app.query(ChatMessage)]
        assert texts == ["user:What time is it in UTC?", "assistant:It is noon in UTC."]
        block = app.query_one(ToolCallBlock)
        assert str(block.title).startswith("✓ time.get_current_time") and "datetime" in str(block.body.render())
        assert pane.session_id == "20261122-120000-abcdef"   # the host resumes it when it starts
        assert "20261122-120000-abcdef" in str(app.query_one("#session-id").render())
        await pilot.press("f6", "enter")   # first row: a new session
        await pilot.pause()
        assert not list(app.query(ChatMessage)) and pane.session_id is None


async def test_empty_lists_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = CpmApp(TuiSettings())
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f2", "f6")
        assert "no interrupted surveys" in str(app.screen.query_one("#pick-empty").render())
        await pilot.press("escape", "f7")
        assert "no saved surveys" in str(app.screen.query_one("#pick-empty").render())
        await pilot.press("escape")
        assert app.query_one("#modes").active == "survey"


def survey_citing(papers_jsonl) -> str:
    """Markdown citing two indexed papers: their abstracts' first sentences, and one invented sentence."""
    cited = [json.loads(line) for line in papers_jsonl.open()][:2]
    first = [" ".join(p["abstract"].split()).split(". ")[0] for p in cited]
    refs = "\n".join(f"[{i}] {p['title']}. {p['authors']}, 2024. arXiv:{p['id']}" for i, p in enumerate(cited, 1))
    return (f"# A small survey\n\n## Methods\n\n{first[0]} [1]. {first[1]} [2]. "
            f"The moon is made of green cheese and sings opera every night [1].\n\n## References\n\n{refs}\n")


async def test_factscore_screen_scores_a_saved_survey(corpus_path, minilm_path, tmp_path, monkeypatch):
    index = small_index(corpus_path, tmp_path, n=12)
    monkeypatch.chdir(tmp_path)
    surveys = tmp_path / "out" / "surveys"
    surveys.mkdir(parents=True)
    (surveys / "small.md").write_text(survey_citing(tmp_path / "papers.jsonl"))
    settings = TuiSettings(index_dir=str(index))
    app = CpmApp(settings, Services(settings))
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.press("f7")   # no survey in this session: pick a saved one
        assert isinstance(app.screen, PickScreen)
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, FactScoreScreen) and screen.survey.name == "small.md"
        screen.query_one("#judge").value = "lexical"       # no model: the test checks the screen, not the judge
        screen.query_one("#extract").value = "sentence"
        await pilot.click("#run-factscore")
        await wait_for_group(app, pilot, "factscore", timeout=300)
        table = screen.query_one("#factscore-table", DataTable)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        assert [r[0] for r in rows] == ["Methods", "overall"]
        assert rows[-1][1:3] == ["3", "2"], rows          # 3 claims, the 2 copied ones supported
        await pilot.press("escape")
    report = json.loads((surveys / "small.factscore.json").read_text())
    assert report["summary"]["claims"] == 3 and report["judge"].startswith("lexical")


async def test_factscore_screen_defaults_need_no_chat_model(corpus_path, minilm_path, tmp_path, monkeypatch):
    """The screen opens on what `cpm eval factscore` defaults to (judge auto = embedding, one claim per sentence),
    and that run never loads the chat model: here the settings name a model that does not exist, so loading it
    would fail the run."""
    index = small_index(corpus_path, tmp_path, n=12)
    monkeypatch.chdir(tmp_path)
    surveys = tmp_path / "out" / "surveys"
    surveys.mkdir(parents=True)
    (surveys / "small.md").write_text(survey_citing(tmp_path / "papers.jsonl"))
    settings = TuiSettings(index_dir=str(index), model="no-such-model")
    app = CpmApp(settings, Services(settings))
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.press("f7", "enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, FactScoreScreen)
        assert (screen.query_one("#judge").value, screen.query_one("#extract").value) == ("auto", "sentence")
        await pilot.click("#run-factscore")
        await wait_for_group(app, pilot, "factscore", timeout=300)
        assert not [n.message for n in app._notifications if n.severity == "error"]
        table = screen.query_one("#factscore-table", DataTable)
        assert table.get_row_at(table.row_count - 1)[:2] == ["overall", "3"]
        assert app.services._chat_model is None
    report = json.loads((surveys / "small.factscore.json").read_text())
    assert report["judge"].startswith("embedding") and report["summary"]["claims_by_model"] == 0
