"""Prompts for claim extraction and support judgement: constants with named placeholders."""

# Part of every cache key that depends on these prompts: bump it when a prompt changes.
VERSION = 1

EXTRACT_SYSTEM = (
    "You split a sentence from a scientific survey into atomic claims. An atomic claim states one fact, "
    "is self-contained, and keeps the sentence's own words, names and numbers. Do not add facts. "
    'Answer with JSON: {"claims": ["...", "..."]}.'
)

# Few-shot pairs (user sentence, assistant JSON); written for this project, in the style of FActScore's demos.
EXTRACT_EXAMPLES = (
    ("Speculative decoding drafts tokens with a small model and verifies them with the large model, "
     "giving 2-3x speedups.",
     '{"claims": ["Speculative decoding drafts tokens with a small model.", '
     '"Speculative decoding verifies drafted tokens with the large model.", '
     '"Speculative decoding gives 2-3x speedups."]}'),
    ("GPTQ quantizes weights to 4 bits with little loss in accuracy.",
     '{"claims": ["GPTQ quantizes weights to 4 bits.", "GPTQ quantization causes little loss in accuracy."]}'),
    ("Retrieval-augmented generation reduces hallucination.",
     '{"claims": ["Retrieval-augmented generation reduces hallucination."]}'),
)

EXTRACT_USER = "Sentence: {sentence}"

JUDGE_SYSTEM = (
    "You check a claim against evidence passages from scientific papers. Answer 'supported' only if the "
    "passages state the claim, with the same numbers and the same polarity; if a passage contradicts it, "
    "changes a number, or says nothing about it, answer 'not supported'."
)

JUDGE_USER = (
    "Evidence:\n{passages}\n\n"
    "Claim: {claim}\n\n"
    'Answer with JSON: {{"verdict": "supported" or "not supported", "evidence_ids": [ids of supporting passages]}}.'
)

# One passage in the evidence block; the id is what the model cites back.
PASSAGE = "[{id}] {title}: {text}"
