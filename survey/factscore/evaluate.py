"""FactScore of a survey: parse -> sentences -> atomic claims -> evidence -> judgement -> scores.

`evaluate(markdown, llm=..., index=..., judge=...)` returns the JSON-ready report. The chat model, the
index and the judge come in as arguments (survey/ never builds them). Every extraction and judgement is
cached per claim, so a re-run with the same cache file resumes instead of starting over.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from survey.factscore import claims as claims_mod
from survey.factscore import prompts
from survey.factscore.cache import ClaimCache, cache_key
from survey.factscore.evidence import Passage, Retriever, gather, resolve_reference
from survey.factscore.judge import Judge, Judgement
from survey.factscore.markdown import ParsedSurvey, parse_survey
from survey.factscore.schemas import NOT_SUPPORTED, SUPPORTED
from survey.factscore.scores import GAMMA, per_section, summarize
from survey.factscore.sentences import Sentence, split_sentences

Progress = Callable[[int, int, str], None]  # (done, total, what) after each sentence


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
        ids = [p.id for p in passages]
        if not passages:
            return Judgement(NOT_SUPPORTED, [], {"reason": "no evidence"})
        key = cache_key("judge", claim, ids, self.config.model_name, self.judge.name, self.config.seed)
        cached = self.cache.get(key)
        if cached is None:
            cached = self.judge.judge(claim, passages).to_dict()
            self.cache.put(key, cached)
        return Judgement(**cached)

    def record(self, claim: claims_mod.Claim, docs: dict[int, Any]) -> dict:
        """Judge one claim: against its cited papers first, then with the index's hits added."""
        cited_docs = [docs[n] for n in claim.citations if n in docs]
        cited, retrieved = gather(claim.text, cited_docs, self.index, self.config.k, self.config.per_doc)
        by_citation = None
        if claim.citations:
            first = self.judged(claim.text, cited)
            by_citation = first.label == SUPPORTED
        if by_citation:
            final, evidence, source = first, cited, "cited"
        else:
            evidence = cited + retrieved
            final = self.judged(claim.text, evidence) if retrieved or not claim.citations else first
            source = "cited+retrieved" if final.label == SUPPORTED else None
        return {
            "section": claim.sentence.section, "sentence_index": claim.sentence.index,
            "sentence": claim.sentence.raw, "claim": claim.text, "method": claim.method,
            "citations": claim.citations,
            "cited_docs": [d.id for d in cited_docs],
            "verdict": final.label, "supported_by_citation": by_citation, "support_source": source,
            "evidence_ids": final.evidence_ids or ([p.id for p in evidence] if final.label == SUPPORTED else []),
            "evidence": [p.to_dict() for p in evidence], "judge_detail": final.detail,
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
    for done, sentence in enumerate(sentences, 1):
        records += [run.record(claim, docs) for claim in run.claims_of(sentence)]
        if progress:
            progress(done, len(sentences), sentence.section)
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
