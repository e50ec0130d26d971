"""FactScore of a survey: parse -> sentences -> atomic claims -> evidence -> judgement -> scores.

`evaluate(markdown, llm=..., index=..., judge=...)` returns the JSON-ready report. The chat model, the
index and the judge come in as arguments (survey/ never builds them). Every extraction and judgement is
cached per claim, so a re-run with the same cache file resumes instead of starting over.

Claims are judged in batches of sentences: a judge with `judge_many(list of (claim, passages))` (the
embedding judge) gets a whole batch in one call, so a batch is the unit to fan out over an engine that
schedules many sequences at once; other judges are called claim by claim. Progress is reported per batch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from survey.factscore import claims as claims_mod
from survey.factscore import prompts
from survey.factscore.cache import ClaimCache, cache_key
from survey.factscore.evidence import Passage, Retriever, cited_passages, resolve_reference, retrieved_passages
from survey.factscore.judge import Judge, Judgement
from survey.factscore.markdown import ParsedSurvey, parse_survey
from survey.factscore.schemas import NOT_SUPPORTED, SUPPORTED
from survey.factscore.scores import GAMMA, per_section, summarize
from survey.factscore.sentences import Sentence, split_sentences

Progress = Callable[[int, int, str], None]  # (sentences done, total, section) after each batch of sentences
BATCH_SENTENCES = 8  # sentences whose claims are judged together by a judge with `judge_many`


@dataclass
class FactScoreConfig:
    seed: int = 0
    k: int = 3                 # index hits per claim, besides the cited documents
    per_doc: int = 2           # passages per cited document
    gamma: int = GAMMA         # length-penalty threshold
    extract_with_model: bool = True  # False: every sentence is one claim (deterministic, no model call)
    model_name: str = ""       # recorded in the cache key and the report


def _resolve(parsed: ParsedSurvey, index: Retriever | None) -> tuple[dict[int, Any], list[str]]:
    docs, problems = {}, []
    for number, ref in sorted(parsed.references.items()):
        doc = resolve_reference(index, ref) if index is not None else None
        if doc is None:
            problems.append(f"reference [{number}] ({ref.raw[:80]}) matches no index document "
                            "(by arXiv id or title)")
        else:
            docs[number] = doc
    return docs, problems


def _sentences(parsed: ParsedSurvey) -> list[Sentence]:
    out: list[Sentence] = []
    for section in parsed.sections:
        out += split_sentences(section.title, section.body, start_index=len(out))
    return out


def _out_of_range(sentences: list[Sentence], parsed: ParsedSurvey) -> list[str]:
    missing = sorted({n for s in sentences for n in s.citations if n not in parsed.references})
    if not missing or not parsed.references:
        return [f"citations {missing} appear but there is no references list"] if missing else []
    return [f"citation [{n}] is not in the references list (entries: {min(parsed.references)}-"
            f"{max(parsed.references)})" for n in missing]


class _Run:
    """One evaluation's state: the model, index, judge, cache and config."""

    def __init__(self, llm: Any, index: Retriever | None, judge: Judge, config: FactScoreConfig,
                 cache: ClaimCache):
        self.llm, self.index, self.judge, self.config, self.cache = llm, index, judge, config, cache

    def claims_of(self, sentence: Sentence) -> list[claims_mod.Claim]:
        if not self.config.extract_with_model or self.llm is None:
            return claims_mod.claims_from_model(sentence, None)
        key = cache_key("extract", sentence.text, [], self.config.model_name, f"v{prompts.VERSION}",
                        self.config.seed)
        cached = self.cache.get(key)
        if cached is None:
            _, raw = claims_mod.extract(self.llm, sentence)
            cached = {"raw": raw}
            self.cache.put(key, cached)
        return claims_mod.claims_from_model(sentence, cached["raw"])

    def judged(self, claim: str, passages: list[Passage]) -> Judgement:
        return self.judged_many([(claim, passages)])[0]

    def judged_many(self, items: list[tuple[str, list[Passage]]]) -> list[Judgement]:
        """Judgements of (claim, passages) pairs: cached ones read back, the rest judged in one batch."""
        out: list[Judgement | None] = [None] * len(items)
        todo: list[tuple[int, str]] = []
        for i, (claim, passages) in enumerate(items):
            if not passages:
                out[i] = Judgement(NOT_SUPPORTED, [], {"reason": "no evidence"})
                continue
            key = cache_key("judge", claim, [p.id for p in passages], self.config.model_name, self.judge.name,
                            self.config.seed)
            cached = self.cache.get(key)
            if cached is None:
                todo.append((i, key))
            else:
                out[i] = Judgement(**cached)
        many = getattr(self.judge, "judge_many", None)
        pending = [items[i] for i, _ in todo]
        fresh = many(pending) if many else [self.judge.judge(c, p) for c, p in pending]
        for (i, key), judgement in zip(todo, fresh):
            self.cache.put(key, judgement.to_dict())
            out[i] = judgement
        return out

    def records(self, claims: list[claims_mod.Claim], docs: dict[int, Any]) -> list[dict]:
        """Judge claims: against their cited papers first (one batch), then, for those the citations do not
        support, with the index's hits added (a second batch; the index is searched only for these)."""
        cited_docs = [[docs[n] for n in c.citations if n in docs] for c in claims]
        cited = [cited_passages(c.text, d, self.config.per_doc) for c, d in zip(claims, cited_docs)]
        with_cites = [i for i, c in enumerate(claims) if c.citations]
        first = dict(zip(with_cites, self.judged_many([(claims[i].text, cited[i]) for i in with_cites])))
        retrieved: dict[int, list[Passage]] = {}
        for i, claim in enumerate(claims):
            if not (i in first and first[i].label == SUPPORTED):
                retrieved[i] = retrieved_passages(claim.text, self.index, self.config.k,
                                                  {d.id for d in cited_docs[i]})
        second_ids = [i for i in retrieved if retrieved[i] or not claims[i].citations]
        second = dict(zip(second_ids, self.judged_many([(claims[i].text, cited[i] + retrieved[i])
                                                        for i in second_ids])))
        return [self._record(c, cited_docs[i], (cited[i], retrieved.get(i, [])), first.get(i), second.get(i))
                for i, c in enumerate(claims)]

    def record(self, claim: claims_mod.Claim, docs: dict[int, Any]) -> dict:
        """Judge one claim (see `records`)."""
        return self.records([claim], docs)[0]

    @staticmethod
    def _record(claim: claims_mod.Claim, cited_docs: list, evidence: tuple[list[Passage], list[Passage]],
                first: Judgement | None, second: Judgement | None) -> dict:
        cited, retrieved = evidence
        by_citation = None if first is None else first.label == SUPPORTED
        if by_citation:
            final, passages, source = first, cited, "cited"
        else:
            passages = cited + retrieved
            final = second if second is not None else first
            source = "cited+retrieved" if final.label == SUPPORTED else None
        return {
            "section": claim.sentence.section, "sentence_index": claim.sentence.index,
            "sentence": claim.sentence.raw, "claim": claim.text, "method": claim.method,
            "citations": claim.citations,
            "cited_docs": [d.id for d in cited_docs],
            "verdict": final.label, "supported_by_citation": by_citation, "support_source": source,
            "evidence_ids": final.evidence_ids or ([p.id for p in passages] if final.label == SUPPORTED else []),
            "evidence": [p.to_dict() for p in passages], "judge_detail": final.detail,
        }


def evaluate(markdown: str, *, llm: Any | None, index: Retriever | None, judge: Judge,
             config: FactScoreConfig | None = None, cache: ClaimCache | None = None,
             progress: Progress | None = None) -> dict:
    """The FactScore report of one Markdown survey (see docs/factscore.md for every field)."""
    config = config or FactScoreConfig()
    cache = cache or ClaimCache()
    parsed = parse_survey(markdown)
    docs, problems = _resolve(parsed, index)
    sentences = _sentences(parsed)
    problems = parsed.problems + _out_of_range(sentences, parsed) + problems
    if not sentences:
        problems.append("no prose sentences found: nothing to score")
    run = _Run(llm, index, judge, config, cache)
    records: list[dict] = []
    batch = BATCH_SENTENCES if hasattr(judge, "judge_many") else 1
    for start in range(0, len(sentences), batch):
        chunk = sentences[start:start + batch]
        records += run.records([claim for sentence in chunk for claim in run.claims_of(sentence)], docs)
        if progress:
            progress(start + len(chunk), len(sentences), chunk[-1].section)
    overall = summarize(records, config.gamma)
    return {
        "title": parsed.title,
        "factscore": overall["factscore"],
        "factscore_length_penalized": overall["factscore_length_penalized"],
        "citation_precision": overall["citation_precision"],
        "citation_recall": overall["citation_recall"],
        "summary": overall,
        "per_section": per_section(records, config.gamma),
        "claims": records,
        "problems": problems,
        "references": {str(n): {"raw": r.raw, "doc_id": docs[n].id if n in docs else None}
                       for n, r in sorted(parsed.references.items())},
        "judge": judge.name,
        "config": asdict(config),
        "cache_hits": cache.hits,
    }
